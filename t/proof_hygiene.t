# The challenge proof after it is taken out of the request: the redirect to
# the clean URL stays on the site whatever nginx's redirect settings say, and
# no variable that read the URI before the access phase still holds the
# proof (Esper's return_url, what is proxied, the access log).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock('--api-key', 'k');
my $app = EsperTest::free_port();
my $conf = <<'EOF';
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    log_format hygiene '$request|$request_uri|$args|$esper_result';
    access_log %%DIR%%/logs/hygiene.log hygiene;
    access_log %%DIR%%/logs/combined.log combined;
    # Read before the access phase, so nginx caches what can be cached.
    map $request_uri $early_uri { default $request_uri; }
    server {
        listen 127.0.0.1:%%PORT%%;
        server_name site.example;
        absolute_redirect off;
        if ($early_uri = "") { return 500; }
        set $early "$request_uri|$args|$arg_esper_challenge_proof|$arg_a|$is_args|$query_string|$request";
        location / {
            esper on;
            proxy_set_header X-Now "$request_uri|$args|$arg_esper_challenge_proof|$arg_a|$is_args|$query_string|$request";
            proxy_pass http://127.0.0.1:%%APP%%;
        }
    }
    server {
        listen 127.0.0.1:%%PORT%%;
        server_name absolute.example;
        location / {
            esper on;
            proxy_pass http://127.0.0.1:%%APP%%;
        }
    }
    server {
        listen 127.0.0.1:%%PORT%%;
        server_name named.example;
        server_name_in_redirect on;
        port_in_redirect off;
        location / {
            esper on;
            proxy_pass http://127.0.0.1:%%APP%%;
        }
    }
    server {
        listen 127.0.0.1:%%APP%%;
        access_log off;
        location / {
            return 200 "uri=$request_uri\nnow=$http_x_now\n";
        }
    }
EOF
$conf =~ s/%%APP%%/$app/g;
my $port = $t->start_nginx($conf);

# 1. The clean-URL redirect after a verified proof never leaves the site.
my @hostile = (
    ['//evil.example/x?esper_challenge_proof=valid-1',        '/evil.example/x'],
    ['/\\evil.example/x?esper_challenge_proof=valid-2',       '/evil.example/x'],
    ['/\\/\\evil.example/x?a=1&esper_challenge_proof=valid-3', '/evil.example/x?a=1'],
    ['///evil.example?esper_challenge_proof=valid-4',         '/evil.example'],
);
for my $host ('site.example', 'absolute.example', 'named.example') {
    for my $case (@hostile) {
        my ($uri, $path) = @$case;
        my $r = $t->get($uri, host => "$host:$port");
        is($r->{status}, 302, "$host $uri: verified");
        my $location = $r->{headers}{location} // '';
        if ($host eq 'site.example') {
            is($location, $path, "$host $uri: relative, one leading slash (absolute_redirect off)");
        } elsif ($host eq 'absolute.example') {
            is($location, "http://absolute.example:$port$path", "$host $uri: absolute, on the host asked");
        } else {
            is($location, "http://named.example$path", "$host $uri: server_name_in_redirect, same site");
        }
    }
}
my $r = $t->get('/plain/p?esper_challenge_proof=valid-5&b=2', host => "site.example:$port");
is($r->{headers}{location}, '/plain/p?b=2', 'an ordinary path is kept as sent');

# 2. Cached variables lose the proof with the URI.
$t->mock_reset;
$r = $t->get('/ru/allow/p?a=1&esper_challenge_proof=BAD', host => "site.example:$port");
is($r->{status}, 200, 'a refused proof: decided and allowed');
my $call = $t->last_call;
is($call->{body}{return_url}, "http://site.example:$port/ru/allow/p?a=1", "Esper's return_url has no proof though \$request_uri was cached");
like($r->{body}, qr{^uri=/ru/allow/p\?a=1$}m, 'the proxied URI has no proof');
my ($now) = $r->{body} =~ /^now=(.*)$/m;
is($now, '/ru/allow/p?a=1|a=1||1|?|a=1|GET /ru/allow/p?a=1 HTTP/1.1',
    '$request_uri, $args, $arg_*, $is_args, $query_string and $request read after the access phase');
ok($t->wait_for_log('logs/hygiene.log', qr{^GET /ru/allow/p\?a=1 HTTP/1\.1\|/ru/allow/p\?a=1\|a=1\|}m),
    'the access log shows neither in $request nor in $request_uri nor in $args');

$r = $t->get('/solo?esper_challenge_proof=BAD', host => "site.example:$port");
($now) = $r->{body} =~ /^now=(.*)$/m;
is($now, '/solo||||||GET /solo HTTP/1.1', 'nothing left of a query that held only the proof');

# The default combined format never shows a proof, verified or not.
$t->stop_nginx;
my $combined = $t->read_file('logs/combined.log');
like($combined, qr{"GET /ru/allow/p\?a=1 HTTP/1\.1"}, 'combined log line written');
unlike($combined, qr/esper_challenge_proof/, 'no proof anywhere in the combined access log');
unlike($t->read_file('logs/hygiene.log'), qr/esper_challenge_proof/, 'nor in $request, $request_uri or $args');

is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;
done_testing;
