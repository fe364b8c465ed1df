# The managed challenge round trip (docs/esper-contract.md, "Managed challenge"): challenged,
# solved at Esper, back with a proof, verified, pass cookie, and passes
# without another runtime call; everything a client could try to get around it.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use EsperTest;

my $t = EsperTest->new;
my $mock = $t->start_mock('--api-key', 'k');
my (undef, $cert, $key) = $t->make_certificates;
my $tls = EsperTest::free_port();
my $app = EsperTest::free_port();
my $conf = <<'EOF';
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    esper_timeout 300ms;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    log_format esper '$request_uri|$status|$esper_result|$esper_hybrid_key';
    access_log %%DIR%%/logs/esper.log esper;
    server {
        listen 127.0.0.1:%%PORT%%;
        listen 127.0.0.1:%%TLS%% ssl;
        ssl_certificate %%CERT%%;
        ssl_certificate_key %%KEY%%;
        location / {
            esper on;
            esper_return_url http://127.0.0.1:%%PORT%%$request_uri;
            proxy_pass http://127.0.0.1:%%APP%%;
        }
        location /hybrid/ {
            esper on;
            esper_hybrid_key hk-$remote_addr;
            esper_forward_decision_id on;
            proxy_pass http://127.0.0.1:%%APP%%;
        }
        location /short/ {
            esper on;
            esper_pass_ttl 2s;
            esper_pass_cookie other_pass;
            proxy_pass http://127.0.0.1:%%APP%%;
        }
    }
    server {
        listen 127.0.0.1:%%APP%%;
        access_log off;
        # $http_x_esper_api_key ends the line: the key never reaches the application.
        location / {
            return 200 "uri=$request_uri args=$args hybrid=$http_x_esper_hybrid_key decision=$http_x_esper_decision_id a=$http_x_a b=$http_x_b$http_x_esper_api_key\n";
        }
        location /hybrid/many {
            return 200 "$http_x_h1,$http_x_h19,$http_x_h20,$http_x_h21,$http_x_h22,$http_x_h40,$http_x_h45|$http_x_esper_hybrid_key|$http_x_esper_decision_id|$http_user_agent\n";
        }
    }
EOF
$conf =~ s/%%TLS%%/$tls/g;
$conf =~ s/%%APP%%/$app/g;
$conf =~ s/%%CERT%%/$cert/g;
$conf =~ s/%%KEY%%/$key/g;
my $port = $t->start_nginx($conf);

sub counts { my $c = $t->mock_call('GET', '/__mock/count'); return ($c->{runtime}, $c->{verify}) }
sub cookie_of { my ($r) = @_; ($r->{headers}{'set-cookie'} // '') =~ /^([^;]+)/ ? $1 : undef }

# 1. Challenged.
my $r = $t->get('/shop/item?x=1&mock_action=challenge');
is($r->{status}, 302, 'first request is challenged');
my $challenge = $r->{headers}{location};
like($challenge, qr{^http://127\.0\.0\.1:$mock/challenge\?return_url=}, 'to the challenge page');

# 2. Solved at the mock, which sends the visitor back with a proof.
(my $solve = $challenge) =~ s{/challenge\?}{/challenge/solve?};
$solve =~ s{^http://127\.0\.0\.1:\d+}{};
my $back = $t->request("GET $solve HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n", port => $mock)->{headers}{location};
like($back, qr{^http://127\.0\.0\.1:$port/shop/item\?x=1&mock_action=challenge&esper_challenge_proof=proof-\d+$}, 'the mock returns the visitor with a proof');

# 3. Back with the proof: verified, pass cookie, redirect to the clean URL.
(my $back_path = $back) =~ s{^http://[^/]+}{};
my ($runtime_before) = counts();
$r = $t->get($back_path);
is($r->{status}, 302, 'verified proof redirects');
like($r->{headers}{location}, qr{^http://localhost(:\d+)?/shop/item\?x=1&mock_action=challenge$}, 'to the same URL without the proof');
is($r->{headers}{'cache-control'}, 'no-store', 'not cacheable');
my $set_cookie = $r->{headers}{'set-cookie'} // '';
like($set_cookie, qr/^esper_challenge=v2\.\d+\.\d+\.[A-Za-z0-9_-]+; Path=\/; Max-Age=900; HttpOnly; SameSite=Lax$/, 'pass cookie with its attributes');
my $pass = cookie_of($r);
my ($runtime_after, $verified) = counts();
is($runtime_after, $runtime_before, 'no runtime call for a verified proof');
is($verified, 1, 'one verify call');
my $verify_call = $t->last_call;
is($verify_call->{path}, '/api/v1/challenge/proof/verify', 'verify endpoint');
is($verify_call->{headers}{'x-esper-api-key'}, 'k', 'verify is authenticated');
like($verify_call->{body}{proof}, qr/^proof-\d+$/, 'the token is sent as proof');

# 4. Follow-ups with the cookie pass without a runtime call.
for (1 .. 3) {
    $r = $t->get('/shop/item?x=1&mock_action=block', headers => [['Cookie', "a=b; $pass"]]);
    is($r->{status}, 200, "follow-up $_ passes");
}
is((counts())[0], $runtime_before, 'follow-ups made no runtime call');
ok($t->wait_for_log('logs/esper.log', qr{^/shop/item\?x=1&mock_action=block\|200\|pass\|}m), '$esper_result is pass');

# Cookies that must not pass: each one gets the normal decision (block here).
my ($v, $issued, $expiry, $tag) = split /\./, ($pass =~ /=(.*)/)[0];
my %refused = (
    forged      => "esper_challenge=v2.$issued.9999999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    extended    => "esper_challenge=$v.$issued." . ($expiry + 3600) . ".$tag",
    renewed     => "esper_challenge=$v." . ($issued + 5) . ".$expiry.$tag",
    tampered    => "esper_challenge=$v.$issued.$expiry." . reverse($tag),
    garbage     => "esper_challenge=%%%",
    other_name  => "esper_challengex=$v.$issued.$expiry.$tag",
);
for my $case (sort keys %refused) {
    $r = $t->get('/shop/item?mock_action=block', headers => [['Cookie', $refused{$case}]]);
    is($r->{status}, 403, "$case cookie is refused and decided normally");
}
$r = $t->get('/shop/item?mock_action=block', headers => [['Cookie', $pass], ['X-Real-IP', '198.51.100.9']]);
is($r->{status}, 403, 'a cookie from another client IP is refused');
$r = $t->get('/shop/item?mock_action=block', headers => [['Cookie', $pass], ['User-Agent', 'other-agent']]);
is($r->{status}, 403, 'a cookie from another user agent is refused');

# A cookie is bound to the entity it was issued for (realip applies).
$r = $t->get('/p?esper_challenge_proof=valid-ip', headers => [['X-Real-IP', '198.51.100.7']]);
my $ip_pass = cookie_of($r);
is($t->get('/p?mock_action=block', headers => [['Cookie', $ip_pass], ['X-Real-IP', '198.51.100.7']])->{status}, 200, 'same client IP passes');
is($t->get('/p?mock_action=block', headers => [['Cookie', $ip_pass], ['X-Real-IP', '198.51.100.8']])->{status}, 403, 'next IP does not');

# Expiry: the shorter of esper_pass_ttl and Esper's lifetime wins.
$r = $t->get('/p?esper_challenge_proof=ttl60-b');
like($r->{headers}{'set-cookie'}, qr/Max-Age=60;/, 'a shorter ttl_seconds from Esper wins');
$r = $t->get('/p?esper_challenge_proof=exp120-c');
like($r->{headers}{'set-cookie'}, qr/Max-Age=1[12]\d;/, 'expires_at from Esper is honoured');
# The expiry has a resolution of one second: a 2 s cookie is good for at
# least 1 s, whenever in the second it was issued.
$r = $t->get('/short/x?esper_challenge_proof=ttl600-a');
like($r->{headers}{'set-cookie'}, qr/^other_pass=.*Max-Age=2;/, 'esper_pass_ttl caps the lifetime; esper_pass_cookie names it');
my $short = cookie_of($r);
is($t->get('/short/x?mock_action=block', headers => [['Cookie', $short]])->{status}, 200, 'fresh cookie passes');
sleep 3.1;
is($t->get('/short/x?mock_action=block', headers => [['Cookie', $short]])->{status}, 403, 'expired cookie is refused');

# Secure on https.
my $https = `curl -sk -o /dev/null -D - 'https://127.0.0.1:$tls/p?esper_challenge_proof=valid-tls'`;
like($https, qr/^Set-Cookie: __Secure-esper_challenge=[^\r\n]*; SameSite=Lax; Secure\r?$/mi, 'Secure on https, under the __Secure- prefix');

# Where the proof sits in the query string.
my @positions = (
    ['esper_challenge_proof=valid-1&a=1&b=%20' => '/q?a=1&b=%20',  'valid-1', 'first'],
    ['a=1&b=2&esper_challenge_proof=valid-2'   => '/q?a=1&b=2',    'valid-2', 'last'],
    ['esper_challenge_proof=valid-3'           => '/q',            'valid-3', 'alone'],
    ['esper_challenge_proof=valid-4&x=%zz&esper_challenge_proof=other' => '/q?x=%zz', 'valid-4', 'repeated'],
    ['k=v&esper_challenge_proof=valid%2D5%2B'  => '/q?k=v',        'valid-5+', 'percent-encoded'],
);
for my $case (@positions) {
    my ($query, $clean, $token, $what) = @$case;
    $r = $t->get("/q?$query");
    is($r->{status}, 302, "$what: verified");
    like($r->{headers}{location}, qr{^http://localhost(:\d+)?\Q$clean\E$}, "$what: clean URL, other parameters as sent");
    is($t->last_call->{body}{proof}, $token, "$what: token sent to verify");
}

# A failing or slow verification falls back to the runtime decision.
for my $case (['fail-1', 'unexpected status 500'], ['junk-1', 'invalid answer body'], ['slow-1', 'timed out']) {
    my ($token, $reason) = @$case;
    my ($before) = counts();
    my $started = time;
    $r = $t->get("/v?mock_action=challenge&esper_challenge_proof=$token");
    is($r->{status}, 302, "$token: decided at runtime");
    like($r->{headers}{location}, qr{/challenge\?return_url=}, "$token: challenged again, not passed");
    ok(!defined $r->{headers}{'set-cookie'}, "$token: no pass cookie");
    is((counts())[0], $before + 1, "$token: one runtime call");
    cmp_ok(time - $started, '<', 0.45, "$token: within the verify deadline plus the decision");
    like($t->error_log, qr/esper challenge proof verification failed: \Q$reason\E.*; judged as without a proof/, "$token: logged");
}
unlike($t->last_call->{body}{return_url}, qr/esper_challenge_proof/, 'the proof is not in return_url sent to Esper');
ok(!exists $t->last_call->{body}{request}{query_params}{esper_challenge_proof}, 'nor in query_params');

# A refused proof never reaches the application.
$r = $t->get('/app/x?a=1&esper_challenge_proof=wrong&b=2');
is($r->{status}, 200, 'refused proof: the runtime decision allows');
like($r->{body}, qr{^uri=/app/x\?a=1&b=2 args=a=1&b=2 }, 'the application sees neither the proof in the URI nor in $args');
like($t->error_log, qr/\[info\].*esper challenge proof refused/, 'a refused proof is logged at info');

# Esper-owned headers.
$r = $t->request("GET /hybrid/x HTTP/1.1\r\nX-Esper-Hybrid-Key: evil\r\nHost: localhost\r\nX-A: 1\r\n"
    . "X-Esper-Decision-ID: evil\r\nX-B: 2\r\nx-esper-hybrid-key: evil2\r\nConnection: close\r\n\r\n");
like($r->{body}, qr/hybrid=hk-127\.0\.0\.1 decision=dec-\d+ a=1 b=2$/, 'hybrid key and decision id reach the upstream; client copies removed, other headers kept');
$r = $t->get('/plain/x', headers => [['X-Esper-Hybrid-Key', 'evil'], ['X-Esper-Decision-ID', 'evil']]);
like($r->{body}, qr/hybrid= decision= /, 'client copies are removed where nothing replaces them');
$r = $t->get('/hybrid/y?esper_challenge_proof=valid-h');
my $hpass = cookie_of($r);
$r = $t->get('/hybrid/y', headers => [['Cookie', $hpass], ['X-Esper-Hybrid-Key', 'evil']]);
like($r->{body}, qr/hybrid=hk-127\.0\.0\.1 decision= /, 'a pass carries the hybrid key too');
ok($t->wait_for_log('logs/esper.log', qr{^/hybrid/y\|200\|pass\|hk-127\.0\.0\.1$}m), '$esper_hybrid_key');

# Many headers over several list parts, forged copies at the edges of parts.
my %forged_at = map { $_ => 1 } (0, 19, 20, 21, 40, 46);
my @lines;
for my $i (0 .. 46) {
    push @lines, $forged_at{$i} ? ($i % 2 ? "X-Esper-Decision-ID: evil$i" : "X-Esper-Hybrid-Key: evil$i") : "X-H$i: v$i";
}
splice @lines, 10, 0, 'User-Agent: ua-kept';
$r = $t->request("GET /hybrid/many HTTP/1.1\r\n" . join("\r\n", @lines) . "\r\nHost: localhost\r\nConnection: close\r\n\r\n");
is($r->{body}, "v1,,,,v22,,v45|hk-127.0.0.1|dec-" . $t->mock_count . "|ua-kept\n",
    'forged copies removed across list parts; every other header and the user agent kept');

is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;
done_testing;
