# Where a pass cookie holds: only on the server block and host it was
# earned on, only under the Esper project (API URL and key) that verified
# it, never longer than the checking location's esper_pass_ttl; and how
# esper_pass_cookie names and marks it (secure behind a TLS proxy,
# samesite, partitioned, the __Secure- name over TLS).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep);
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
my $tls = EsperTest::free_port();
my (undef, $cert, $key) = $t->make_certificates;
my $conf = <<"EOF2";
    esper_api_url http://%%MOCK%%;
    esper_api_key project-a;
    esper_pass_secret_file %%DIR%%/pass.key;
    server {
        listen 127.0.0.1:%%PORT%%;
        listen 127.0.0.1:$tls ssl;
        ssl_certificate $cert;
        ssl_certificate_key $key;
        server_name a.example;
        root %%DIR%%/html;
        esper on;
        location /other-project/ { esper_api_key project-b; }
        location /other-url/ { esper_api_url http://localhost:%%MOCKPORT%%; }
        location /short/ { esper_pass_ttl 2s; }
        location /behind-tls/ { esper_pass_cookie esper_challenge secure; }
        location /embedded/ { esper_pass_cookie esper_challenge samesite=none partitioned; }
        location /strict/ { esper_pass_cookie pass samesite=strict; }
    }
    server {
        listen 127.0.0.1:%%PORT%%;
        server_name b.example;
        root %%DIR%%/html;
        esper on;
    }
EOF2
$conf =~ s/%%MOCKPORT%%/$t->mock_port/ge;
$t->write_file('pass.key', ('k3y' x 16) . "\n");
$t->write_file("html/$_", "ok\n") for qw(p other-project/p other-url/p short/p behind-tls/p embedded/p strict/p);
$t->start_nginx($conf, workers => 2);

sub get {
    my ($uri, $host, $cookie) = @_;
    $t->get($uri, host => $host, headers => [['User-Agent', 'visitor'], ($cookie ? ['Cookie', $cookie] : ())]);
}
sub set_cookie_of { $_[0]{headers}{'set-cookie'} // '' }
sub pair_of { (set_cookie_of($_[0]) =~ /^([^;]+)/)[0] // '' }
sub passes { get(@_)->{status} == 200 }

# 1. Earned on a.example.
my $r = get('/p?esper_challenge_proof=valid-a', 'a.example');
is($r->{status}, 302, 'a proof verified on a.example');
my $pass = pair_of($r);
like($pass, qr/^esper_challenge=v2\./, 'a pass cookie');
ok(passes('/p?mock_action=block', 'a.example', $pass), 'it passes where it was earned');
ok(!passes('/p?mock_action=block', 'b.example', $pass), 'not on b.example (another server block of the same nginx)');
ok(!passes('/other-project/p?mock_action=block', 'a.example', $pass), 'not where another esper_api_key is asked (another project)');
ok(!passes('/other-url/p?mock_action=block', 'a.example', $pass), 'not where another esper_api_url is asked');
ok(passes('/p?mock_action=block', 'A.EXAMPLE:80', $pass), 'the host is compared as $host (lower case, no port)');

# 2. Never older than the checking location's esper_pass_ttl.
ok(passes('/short/p?mock_action=block', 'a.example', $pass), 'a 15-minute pass, in a 2 s location: passes at first');
sleep 2.5;
ok(!passes('/short/p?mock_action=block', 'a.example', $pass), 'refused once older than that location\'s 2 s');
ok(passes('/p?mock_action=block', 'a.example', $pass), 'still good where the ttl is 15 minutes');

# 3. How the cookie is set.
like(set_cookie_of(get('/p?esper_challenge_proof=valid-1', 'a.example')),
    qr/^esper_challenge=[^;]+; Path=\/; Max-Age=900; HttpOnly; SameSite=Lax$/, 'plain http: no Secure, the plain name');
$r = get('/behind-tls/p?esper_challenge_proof=valid-2', 'a.example');
like(set_cookie_of($r), qr/^__Secure-esper_challenge=[^;]+; Path=\/; Max-Age=900; HttpOnly; SameSite=Lax; Secure$/,
    'secure: Secure over plain http (TLS ends in front of nginx), under the __Secure- name');
ok(passes('/behind-tls/p?mock_action=block', 'a.example', pair_of($r)), 'and the __Secure- cookie passes');
like(set_cookie_of(get('/embedded/p?esper_challenge_proof=valid-3', 'a.example')),
    qr/^__Secure-esper_challenge=[^;]+; Path=\/; Max-Age=900; HttpOnly; SameSite=None; Secure; Partitioned$/,
    'samesite=none partitioned: for a page embedded in another site');
like(set_cookie_of(get('/strict/p?esper_challenge_proof=valid-4', 'a.example')),
    qr/^pass=[^;]+; Path=\/; Max-Age=900; HttpOnly; SameSite=Strict$/, 'samesite=strict, another name');
my $https = `curl -sk -o /dev/null -D - -H 'Host: a.example' -A visitor 'https://127.0.0.1:$tls/p?esper_challenge_proof=valid-5'`;
my ($secure_pass) = $https =~ /^Set-Cookie: (__Secure-esper_challenge=[^;]+);[^\r\n]*; SameSite=Lax; Secure\r?$/mi;
ok($secure_pass, 'over https: the __Secure- name, which a plain-http answer can never overwrite');
my $both = `curl -sk -o /dev/null -w '%{http_code}' -H 'Host: a.example' -A visitor -H 'Cookie: esper_challenge=stale; $secure_pass' 'https://127.0.0.1:$tls/p?mock_action=block'`;
is($both, '200', 'over https the __Secure- pass is found beside a plain cookie of the same name');
ok(passes('/p?mock_action=block', 'a.example', $pass), 'and the plain-http pass still passes over http');

is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;

# 4. Configuration errors.
for my $case (
    ['esper_pass_cookie p Secure;', 'invalid parameter "Secure"'],
    ['esper_pass_cookie p samesite=always;', 'invalid parameter "samesite=always"'],
    ['esper_pass_cookie p secure secure;', 'duplicate parameter "secure"'],
    ['esper_pass_cookie __Secure-p;', 'no "__Secure-" or "__Host-" prefix, the module adds "__Secure-" itself'],
    ['esper_pass_cookie __Host-p;', 'invalid cookie name "__Host-p"'],
) {
    my ($line, $message) = @$case;
    my ($status, $output) = $t->test_config(<<"EOF2");
    server { listen 127.0.0.1:%%PORT%%; location / { esper on; esper_api_key k; $line } }
EOF2
    isnt($status, 0, "nginx -t refuses '$line'");
    like($output, qr/\Q$message\E.* in \S+nginx-t\.conf:\d+/, "with the reason, file and line");
}

done_testing;
