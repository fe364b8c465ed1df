# HTTP/3 (QUIC) clients, with a real HTTP/3 client (t/tools/h3client.py, on
# aioquic): the three actions, the payload the same as over HTTP/1.0, 1.1 and
# 2, a request body without Content-Length proxied whole, 50 concurrent
# streams on one connection, streams cancelled while their decision is
# pending, the pass cookie round trip and Esper-owned request headers.
# Skipped when the nginx under test is built without HTTP/3.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use EsperTest;

EsperTest::require_nginx_flag('--with-http_v3_module');

my $CLIENT = "$EsperTest::ROOT/t/tools/h3client.py";

my $t = EsperTest->new;
my $mock = $t->start_mock('--api-key', 'k');
my ($ca, $cert, $key) = $t->make_certificates;
# One port number: TLS (HTTP/1.x and HTTP/2) on TCP, HTTP/3 on UDP.
my $tls = EsperTest::free_port();
my $app = EsperTest::free_port();
my $conf = <<'EOF';
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    esper_timeout 3s;
    esper_enforcement_zone zone=h3bots:1m;
    log_format esper '$server_protocol|$request_method|$request_uri|$status|$esper_result|$esper_action|$request_time';
    access_log %%DIR%%/logs/esper.log esper;
    server {
        listen 127.0.0.1:%%PORT%%;
        listen 127.0.0.1:%%TLS%% ssl;
        listen 127.0.0.1:%%TLS%% quic reuseport;
        http2 on;
        http3 on;
        ssl_certificate %%CERT%%;
        ssl_certificate_key %%KEY%%;
        location / {
            esper on;
            proxy_pass http://127.0.0.1:%%APP%%;
        }
        # The body goes to the application as it arrives (chunked), not buffered first.
        location /stream/ {
            esper on;
            proxy_request_buffering off;
            proxy_http_version 1.1;
            proxy_pass http://127.0.0.1:%%APP%%;
        }
        location /hybrid/ {
            esper on;
            esper_hybrid_key hk-$remote_addr;
            esper_forward_decision_id on;
            proxy_pass http://127.0.0.1:%%APP%%;
        }
        location /fields/ {
            esper on;
            esper_field host $host;
            esper_field server_name $server_name;
            esper_field scheme $scheme;
            esper_send_cookies on;
            proxy_pass http://127.0.0.1:%%APP%%;
        }
        location /zone/ {
            esper on;
            esper_enforcement h3bots;
            proxy_pass http://127.0.0.1:%%APP%%;
        }
        location = /metrics { esper_metrics; }
    }
    # The application: echoes what reached it.
    server {
        listen 127.0.0.1:%%APP%%;
        access_log off;
        large_client_header_buffers 4 64k;
        client_body_buffer_size 1m;
        client_body_in_single_buffer on;
        location / {
            return 200 "uri=$request_uri hybrid=$http_x_esper_hybrid_key decision=$http_x_esper_decision_id a=$http_x_a\n";
        }
        # /up/ and /stream/ read the whole body, then hand it on in a header to /sink.
        proxy_set_header X-Body $request_body;
        proxy_set_header X-Length $content_length;
        proxy_set_header X-Chunked $http_transfer_encoding;
        location /up/ { proxy_pass http://127.0.0.1:%%APP%%/sink/; }
        location /stream/ { proxy_pass http://127.0.0.1:%%APP%%/sink/; }
        location /sink/ {
            return 200 "length=$http_x_length chunked=$http_x_chunked body=$http_x_body\n";
        }
    }
EOF
$conf =~ s/%%TLS%%/$tls/g;
$conf =~ s/%%APP%%/$app/g;
$conf =~ s/%%CERT%%/$cert/g;
$conf =~ s/%%KEY%%/$key/g;
my $port = $t->start_nginx($conf);

# Starts the HTTP/3 client on one connection with these requests; returns a
# handle for h3_results. Bounded: the client exits by itself after $timeout.
sub h3_start {
    my ($requests, %opt) = @_;
    my @cmd = ('python3', $CLIENT, '--port', $tls, '--ca', $ca, '--timeout', $opt{timeout} || 15,
        encode_json($requests));
    my $pid = open(my $fh, '-|') // die "cannot fork: $!";
    if (!$pid) {
        open(STDERR, '>', $t->dir . '/logs/h3client.err') or die;
        exec(@cmd) or exit 127;
    }
    return $fh;
}

sub h3_results {
    my ($fh) = @_;
    local $/;
    my $out = <$fh> // '';
    close $fh;
    my $results = eval { decode_json($out) };
    die "h3client: $out\n" . $t->read_file('logs/h3client.err') unless ref $results eq 'ARRAY';
    return @$results;
}

# Every request on one HTTP/3 connection, concurrently; one result each.
sub h3 { h3_results(h3_start(\@_)) }

# A GET over HTTP/1.0, 1.1 or 2 with curl, on the TLS port, as
# https://$authority (the test certificate is for 127.0.0.1 only, hence -k);
# returns { status, headers (lower-case names), body }.
sub curl_get {
    my ($version, $authority, $path, @headers) = @_;
    my ($name) = $authority =~ /^([^:]+)/;
    my (undef, $out) = EsperTest::capture('curl', '-sk', '-i', '--max-time', '10', "--http$version",
        '--resolve', "$name:$tls:127.0.0.1", map({ ('-H', $_) } @headers), "https://$authority$path");
    my ($head, $body) = split /\r\n\r\n/, $out, 2;
    my ($status_line, @lines) = split /\r\n/, $head // '';
    my %headers;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $k = lc $k;
        $headers{$k} = exists $headers{$k} ? "$headers{$k}, $v" : $v;
    }
    my ($status) = ($status_line // '') =~ m{^HTTP/[\d.]+ (\d{3})};
    return { status => $status // 0, headers => \%headers, body => $body // '' };
}

# The same GET over HTTP/1.0, 1.1, 2 (curl) and 3 (h3client), one after the
# other; returns (version => { status, headers, body, payload }), the payload
# being the decision call the mock received for it (undef when none). Headers
# are [name, value] pairs; over HTTP/3 a Cookie header goes as one field per
# cookie, as HTTP/3 clients may send it (RFC 9114, 4.2.1).
# Whatever must behave the same over every protocol plugs in here (next: the
# JSON answers and the enforcement zone, once they exist).
sub each_protocol {
    my ($authority, $path, @headers) = @_;
    my %r;
    for my $version (qw(1.0 1.1 2 3)) {
        $t->mock_reset;
        if ($version eq '3') {
            my @fields = map { lc $_->[0] eq 'cookie' ? (map { ['cookie', $_] } split /; /, $_->[1]) : [lc $_->[0], $_->[1]] } @headers;
            ($r{$version}) = h3({ path => $path, authority => $authority, headers => \@fields });
        } else {
            $r{$version} = curl_get($version, $authority, $path, map { "$_->[0]: $_->[1]" } @headers);
        }
        my $call = $t->last_call;
        $r{$version}{payload} = $call && $call->{body};
    }
    return %r;
}

sub counts { my $c = $t->mock_call('GET', '/__mock/count'); return ($c->{runtime}, $c->{verify}) }

sub scrape {
    my %m = map { /^(\S+) (\S+)$/ ? ($1, $2) : () } grep { !/^#/ } split /\n/, $t->get('/metrics')->{body};
    return \%m;
}

# 1. The three actions.
my ($allow, $challenge, $block) = h3(
    { path => '/a?mock_action=allow' },
    { path => '/a?mock_action=challenge' },
    { path => '/a?mock_action=block' },
);
is($allow->{status}, 200, 'allow over HTTP/3');
is($allow->{body}, "uri=/a?mock_action=allow hybrid= decision= a=\n", 'allow reaches the application');
is($challenge->{status}, 302, 'challenge over HTTP/3');
like($challenge->{headers}{location}, qr{^http://127\.0\.0\.1:$mock/challenge\?return_url=https%3A%2F%2Flocalhost%2Fa%3Fmock_action%3Dchallenge&session=\d+$},
    "challenge: Location is Esper's page, with the return URL");
is($challenge->{headers}{'cache-control'}, 'no-store', 'challenge: not cacheable');
is($block->{status}, 403, 'block over HTTP/3');
unlike($block->{body}, qr/uri=/, 'block does not reach the application');
ok($t->wait_for_log('logs/esper.log', qr{^HTTP/3\.0\|GET\|/a\?mock_action=block\|403\|decided\|block\|}m),
    'logged as HTTP/3.0 with $esper_result and $esper_action');
my ($worker) = $t->worker_pids;

# 2. The payload is the same over each protocol for the same URL: everything
# but idempotency_key and observed_at, which are new for every request. That
# covers return_url, fields (from $host, $server_name, $scheme),
# request.headers.host and every other header, method, path, query_params,
# client_ip, user_agent and cookies.
my $authority = "shop.example.com:$tls";
my $path = '/fields/item?x=1&y=%C3%A9';
my %over = each_protocol($authority, $path,
    ['User-Agent', 'esper-test/1.0'], ['Accept', '*/*'], ['X-A', '1'], ['Cookie', 'theme=dark; session=abc']);
for my $version (sort keys %over) {
    is($over{$version}{status}, 200, "HTTP/$version: allowed");
    ok($t->wait_for_log('logs/esper.log', qr{^HTTP/\Q$version\E(\.0)?\|GET\|/fields/item\?x=1}m), "HTTP/$version: so nginx says");
}
my %payload = map { $_ => $over{$_}{payload} } keys %over;
delete @{$_}{qw(idempotency_key observed_at)} for values %payload;
is($payload{3}{return_url}, "https://shop.example.com$path", 'HTTP/3: return_url from :authority, without its port');
is_deeply($payload{3}{fields}, { host => 'shop.example.com', server_name => '', scheme => 'https' },
    'HTTP/3: fields from :authority');
is_deeply($payload{3}{request}{cookies}, { theme => 'dark', session => 'abc' }, 'HTTP/3: split cookie fields all parsed');
for my $version (qw(1.0 1.1 2)) {
    is_deeply($payload{$version}{fields}, $payload{3}{fields}, "fields: HTTP/3 as HTTP/$version");
    is($payload{$version}{return_url}, $payload{3}{return_url}, "return_url: HTTP/3 as HTTP/$version");
    is($payload{$version}{request}{headers}{host}, $authority, "HTTP/$version: request.headers.host is the authority");
    is_deeply($payload{3}, $payload{$version}, "the whole payload, request.headers.host too: HTTP/3 as HTTP/$version")
        or diag explain { 3 => $payload{3}, $version => $payload{$version} };
}

# 3. A POST body without Content-Length, in parts, reaches the application
# whole after allow: buffered by nginx first, or streamed to it.
my @parts = map { "part$_-" . ('x' x 1000) } 1 .. 8;
my $whole = join '', @parts;
$t->mock_reset;
my ($buffered, $streamed) = h3(
    { method => 'POST', path => '/up/echo?mock_delay_ms=200', body => \@parts, chunk_delay_ms => 30 },
    { method => 'POST', path => '/stream/echo?mock_delay_ms=200', body => \@parts, chunk_delay_ms => 30 },
);
is($buffered->{status}, 200, 'POST without Content-Length allowed');
sub echoed { my ($body) = @_; $body =~ s/body=\Q$whole\E\n$/body=<the whole body>/; $body }
is(echoed($buffered->{body}), 'length=' . length($whole) . ' chunked= body=<the whole body>',
    'the whole body reached the application, with a Content-Length (buffered)');
is($streamed->{status}, 200, 'POST without Content-Length, proxy_request_buffering off: allowed');
is(echoed($streamed->{body}), 'length=' . length($whole) . ' chunked=chunked body=<the whole body>',
    'the whole body reached the application, chunked (streamed)');
is($t->mock_count, 2, 'each decided once');
is($t->mock_requests->[0]{body}{request}{method}, 'POST', 'the payload says POST');

# 4. 50 concurrent streams on one connection, each decided by its own call.
$t->mock_reset;
my @actions = qw(allow challenge block);
my @many = map { { path => "/many?n=$_&mock_delay_ms=300&mock_action=" . $actions[$_ % 3] } } 0 .. 49;
my $started = time;
my @answers = h3(@many);
my $took = time - $started;
is(scalar @answers, 50, '50 answers');
my %want = (allow => 200, challenge => 302, block => 403);
my @wrong = grep { ($answers[$_]{status} // 0) != $want{$actions[$_ % 3]} } 0 .. 49;
is(scalar @wrong, 0, 'each stream got its own decision') or diag explain [@answers[@wrong]];
is(scalar(grep { $answers[$_]{body} eq "uri=/many?n=$_&mock_delay_ms=300&mock_action=allow hybrid= decision= a=\n" } grep { $_ % 3 == 0 } 0 .. 49),
    17, 'each allowed stream got its own answer');
is($t->mock_count, 50, '50 calls');
cmp_ok($took, '<', 5, sprintf('decided concurrently (%.1fs for 50 decisions of 300 ms each)', $took));

# 5. Streams cancelled by the client while their decision is pending. A GET
# whose request had ended (STOP_SENDING and RESET_STREAM) and a POST still
# sending its body (RESET_STREAM cuts it); the other streams of the
# connection complete, one of them opened after the cancels.
$t->mock_reset;
my $cancel = h3_start([
    { path => '/c?n=get&mock_delay_ms=1200', cancel_after_ms => 300 },
    { method => 'POST', path => '/c?n=post&mock_delay_ms=1200', body => ['early'], keep_open => 1, cancel_after_ms => 300 },
    { path => '/c?n=slow&mock_delay_ms=800' },
    { path => '/c?n=block&mock_delay_ms=800&mock_action=block' },
    { path => '/c?n=later', start_after_ms => 500 },
    { path => '/c?n=long&mock_delay_ms=2000' },
]);
my $deadline = time + 5;
sleep 0.02 while $t->mock_count < 5 && time < $deadline;
is(scrape()->{esper_pending}, 5, 'five decisions pending');
my @c = h3_results($cancel);
ok($c[0]{cancelled} && $c[1]{cancelled}, 'the client cancelled the GET and the POST');
is($c[2]{status}, 200, 'another stream of the connection completes');
is($c[3]{status}, 403, 'and another is blocked');
is($c[4]{status}, 200, 'a stream opened after the cancels completes');
$deadline = time + 5;
sleep 0.05 while scrape()->{esper_pending} && time < $deadline;
is(scrape()->{esper_pending}, 0, 'nothing pending once the decisions are due');
# Each cancelled request as logged: (status, $esper_result, $request_time).
sub logged {
    my ($n) = @_;
    $t->wait_for_log('logs/esper.log', qr{^HTTP/3\.0\|\w+\|/c\?n=$n&}m);
    return $t->read_file('logs/esper.log') =~ m{^HTTP/3\.0\|\w+\|/c\?n=$n&[^|]*\|(\d+)\|([^|]*)\|[^|]*\|([\d.]+)$}m;
}
my @post = logged('post');
is($post[0], 499, 'the cancelled POST is logged with 499');
is($post[1], '', 'not decided');
cmp_ok($post[2], '<', 1, "finished at the cancel ($post[2]s), not when its decision came (1.2s)");
my @get = logged('get');
ok(@get, 'the cancelled GET is finished too');
is($get[0], 499, 'the cancelled GET (STOP_SENDING) is logged with 499');
cmp_ok($get[2], '<', 1, "finished at the cancel ($get[2]s), not when its decision came (1.2s)");
is($t->mock_count, 6, 'one call per stream, none repeated');
is(join(',', $t->worker_pids), $worker, 'the same worker process serves');
is((h3({ path => '/after-cancel' }))[0]{status}, 200, 'and decides over HTTP/3 afterwards');

# 6. The pass cookie round trip over HTTP/3.
$t->mock_reset;
my ($r) = h3({ path => '/shop/item?x=1&mock_action=challenge' });
is($r->{status}, 302, 'challenged');
(my $solve = $r->{headers}{location}) =~ s{^http://127\.0\.0\.1:\d+/challenge\?}{/challenge/solve?};
my $back = $t->request("GET $solve HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n", port => $mock)->{headers}{location};
like($back, qr{^https://localhost/shop/item\?x=1&mock_action=challenge&esper_challenge_proof=proof-\d+$}, 'solved at the mock, sent back with a proof');
(my $back_path = $back) =~ s{^https://[^/]+}{};
my ($runtime) = counts();
($r) = h3({ path => $back_path });
is($r->{status}, 302, 'proof verified');
like($r->{headers}{location}, qr{^https://localhost(:$tls)?/shop/item\?x=1&mock_action=challenge$}, 'back to the URL without the proof');
like($r->{headers}{'set-cookie'} // '', qr/^__Secure-esper_challenge=v2\.\d+\.\d+\.[A-Za-z0-9_-]+; Path=\/; Max-Age=900; HttpOnly; SameSite=Lax; Secure$/,
    'pass cookie, Secure over QUIC');
my ($pass) = ($r->{headers}{'set-cookie'} // '') =~ /^([^;]+)/;
is_deeply([counts()], [$runtime, 1], 'one verify call, no runtime call');
my @follow = h3(map { { path => "/shop/item?x=1&mock_action=block&f=$_", headers => [['cookie', 'a=b'], ['cookie', $pass]] } } 1 .. 3);
is(scalar(grep { $_->{status} == 200 } @follow), 3, 'follow-ups with the cookie pass');
is((counts())[0], $runtime, 'without a runtime call');
ok($t->wait_for_log('logs/esper.log', qr{^HTTP/3\.0\|GET\|/shop/item\?x=1&mock_action=block&f=1\|200\|pass\|}m), '$esper_result is pass');
($r) = h3({ path => '/shop/item?mock_action=block', headers => [['cookie', "${pass}x"]] });
is($r->{status}, 403, 'a tampered cookie is decided normally');

# 7. Esper-owned request headers sent by the client never reach the application.
my ($hybrid, $plain) = h3(
    { path => '/hybrid/x', headers => [['x-esper-hybrid-key', 'evil'], ['x-a', '1'], ['x-esper-decision-id', 'evil'], ['x-esper-hybrid-key', 'evil2']] },
    { path => '/plain/x', headers => [['x-esper-hybrid-key', 'evil'], ['x-esper-decision-id', 'evil']] },
);
like($hybrid->{body}, qr/hybrid=hk-127\.0\.0\.1 decision=dec-\d+ a=1$/, 'the module sets them; client copies removed, other headers kept');
like($plain->{body}, qr/hybrid= decision= /, 'client copies removed where nothing replaces them');

# 8. JSON responses and the enforcement zone over HTTP/3.
my @api = (['sec-fetch-mode', 'cors'], ['accept', 'application/json']);
my ($json_block, $json_challenge, $page) = h3(
    { path => '/j?mock_action=block&mock_decision_id=j-1', headers => \@api },
    { path => '/j?mock_action=challenge&mock_decision_id=j-2', headers => \@api },
    { path => '/j?mock_action=block', headers => [['sec-fetch-mode', 'navigate'], ['accept', 'text/html']] },
);
is($json_block->{status}, 403, 'JSON block over HTTP/3');
is($json_block->{body}, '{"action":"block","decision_id":"j-1"}', 'its body');
is($json_block->{headers}{'content-type'}, 'application/json', 'its content type');
is($json_block->{headers}{vary}, 'Accept, Sec-Fetch-Mode, X-Requested-With', 'and Vary');
is($json_challenge->{status}, 403, 'JSON challenge over HTTP/3');
like($json_challenge->{body}, qr{^\{"action":"challenge","redirect_url":"http://127\.0\.0\.1:$mock/challenge\?[^"]+","decision_id":"j-2"\}$}, 'its body');
like($page->{headers}{'content-type'} // '', qr{^text/html}, 'a navigation gets the block page');
$t->mock_reset;
my ($first) = h3({ path => '/zone/a?mock_action=block&mock_decision_id=z-3', headers => [['user-agent', 'h3-bot']] });
is($first->{status}, 403, 'blocked over HTTP/3 and remembered');
my @again = h3(map { { path => "/zone/b?mock_action=allow&n=$_", headers => [['user-agent', 'h3-bot'], @api] } } 1 .. 5);
is(scalar(grep { $_->{status} == 403 && $_->{body} eq '{"action":"block","decision_id":"z-3"}' } @again), 5,
    'five streams enforced from the zone, in JSON');
is($t->mock_count, 1, 'without another call');
ok($t->wait_for_log('logs/esper.log', qr{^HTTP/3\.0\|GET\|/zone/b\?mock_action=allow&n=1\|403\|enforced\|block\|}m), '$esper_result enforced');

my @above_info = grep { /\[(warn|error|crit|alert|emerg)\]/ } split /\n/, $t->error_log;
is(scalar @above_info, 0, 'nothing in the error log beyond info') or diag join "\n", @above_info;
is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
