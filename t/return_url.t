# The return URL sent to Esper (where a challenged visitor comes back to)
# without esper_return_url: the URL the visitor asked for, port included;
# for a challenge answered in JSON, the page that made the call (its
# same-origin Referer), never another origin; esper_return_url wins.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock('--api-key', 'k');
my (undef, $cert, $key) = $t->make_certificates;
my $tls = EsperTest::free_port();
my $conf = <<'EOF';
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    server {
        listen 127.0.0.1:%%PORT%%;
        listen 127.0.0.1:%%TLS%% ssl;
        server_name named.example;
        ssl_certificate %%CERT%%;
        ssl_certificate_key %%KEY%%;
        root %%DIR%%/html;
        esper on;
        location /api/ { }
        location /on/ { esper_json_response on; }
        location /set/ { esper_return_url https://fixed.example/back; }
    }
EOF
$conf =~ s/%%TLS%%/$tls/g;
$conf =~ s/%%CERT%%/$cert/g;
$conf =~ s/%%KEY%%/$key/g;
my $port = $t->start_nginx($conf);
$t->write_file("html/$_", "ok\n") for qw(api/x on/x set/x);

sub return_url_of { $t->last_call->{body}{return_url} }

# The URL asked for, port included (a default port left out).
for my $case (
    ['app.test:8080',  'http://app.test:8080/api/x?a=1', 'a non-default port'],
    ['App.Test:8080',  'http://app.test:8080/api/x?a=1', 'the host as $host has it'],
    ['app.test',       'http://app.test/api/x?a=1',      'no port'],
    ['app.test:80',    'http://app.test/api/x?a=1',      'the default port'],
    ['[::1]:8080',     'http://[::1]:8080/api/x?a=1',    'an IPv6 literal'],
    ['app.test:80x',   'http://app.test/api/x?a=1',      'a port that is not one'],
) {
    my ($host, $url, $what) = @$case;
    my $r = $t->get('/api/x?a=1', host => $host);
    is($r->{status}, 200, "$what: allowed");
    is(return_url_of(), $url, "$what: return_url");
}
my $r = $t->request("GET /api/x HTTP/1.0\r\n\r\n");
is(return_url_of(), 'http://named.example/api/x', 'HTTP/1.0 without Host: the server name');
my $https = `curl -sk -o /dev/null -w '%{http_code}' --resolve app.test:$tls:127.0.0.1 'https://app.test:$tls/api/x'`;
is($https, '200', 'https: allowed');
is(return_url_of(), "https://app.test:$tls/api/x", 'https: scheme and port');
`curl -sk -o /dev/null -H 'Host: app.test:443' 'https://127.0.0.1:$tls/api/x'`;
is(return_url_of(), 'https://app.test/api/x', 'https: the default port left out');

# The challenge redirect carries it to Esper's page.
$r = $t->get('/api/x?mock_action=challenge', host => 'app.test:8080');
like($r->{headers}{location}, qr{return_url=http%3A%2F%2Fapp\.test%3A8080%2Fapi%2Fx%3Fmock_action%3Dchallenge&}, 'challenge: Location has the port');

# JSON forms: back to the calling page when it is of the same origin.
my @json = (['Accept', 'application/json']);
for my $case (
    ['http://app.test:8080/shop/cart?step=2', 'http://app.test:8080/shop/cart?step=2', 'a same-origin page'],
    ['http://APP.test:8080/shop',             'http://APP.test:8080/shop',             'a same-origin page, host in another case'],
    ['http://app.test:8081/shop',             'http://app.test:8080/api/x',            'another port: the API URL'],
    ['https://app.test:8080/shop',            'http://app.test:8080/api/x',            'another scheme: the API URL'],
    ['http://evil.test:8080/shop',            'http://app.test:8080/api/x',            'another host: the API URL'],
    ['http://app.test:8080@evil.test/',       'http://app.test:8080/api/x',            'user information: the API URL'],
    ['http://app.test:8080/p?esper_challenge_proof=proof-1', 'http://app.test:8080/api/x', 'a page with a proof: the API URL'],
) {
    my ($referer, $url, $what) = @$case;
    $t->get('/api/x', host => 'app.test:8080', headers => [@json, ['Referer', $referer]]);
    is(return_url_of(), $url, "JSON, $what");
}
$t->get('/api/x', host => 'app.test:8080', headers => \@json);
is(return_url_of(), 'http://app.test:8080/api/x', 'JSON without Referer: the API URL');
$t->get('/api/x', host => 'app.test:8080', headers => [['Accept', 'text/html'], ['Referer', 'http://app.test:8080/shop']]);
is(return_url_of(), 'http://app.test:8080/api/x', 'a navigation returns to the URL asked for, whatever its Referer');
$t->get('/on/x', host => 'app.test:8080', headers => [['Accept', 'text/html'], ['Referer', 'http://app.test:8080/shop']]);
is(return_url_of(), 'http://app.test:8080/shop', 'esper_json_response on: the page');
`curl -sk -o /dev/null --resolve app.test:$tls:127.0.0.1 -H 'Sec-Fetch-Mode: cors' -H 'Accept: application/json' -H 'Referer: https://app.test:$tls/shop' 'https://app.test:$tls/api/x'`;
is(return_url_of(), "https://app.test:$tls/shop", 'https, fetch metadata: the page');

# The JSON challenge's redirect_url carries the page.
$r = $t->get('/api/x?mock_action=challenge', host => 'app.test:8080', headers => [@json, ['Referer', 'http://app.test:8080/shop']]);
is($r->{status}, 403, 'JSON challenge');
like($r->{body}, qr{"redirect_url":"http://127\.0\.0\.1:\d+/challenge\?return_url=http%3A%2F%2Fapp\.test%3A8080%2Fshop&session=\d+"}, 'its redirect_url returns to the page');

# esper_return_url wins, for every form.
$t->get('/set/x', host => 'app.test:8080');
is(return_url_of(), 'https://fixed.example/back', 'esper_return_url');
$t->get('/set/x', host => 'app.test:8080', headers => [@json, ['Referer', 'http://app.test:8080/shop']]);
is(return_url_of(), 'https://fixed.example/back', 'esper_return_url, JSON form');

is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;
done_testing;
