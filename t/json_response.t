# esper_json_response: API and script clients get a challenge or block they
# can act on, in JSON; browsers keep the redirect and the block page. The
# choice in `auto` follows Sec-Fetch-Mode / X-Requested-With and a properly
# parsed Accept (without fetch metadata, whether Accept prefers JSON to
# HTML), and every response made in `auto` says so in Vary.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use JSON::PP;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock('--api-key', 'k');
$t->start_nginx(<<'EOF2');
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    esper_enforcement_zone zone=bots:1m;
    server {
        listen 127.0.0.1:%%PORT%%;
        http2 on;
        root %%DIR%%/html;
        esper on;
        add_header Access-Control-Allow-Origin https://app.example always;
        add_header Access-Control-Allow-Credentials true always;
        location /auto/ { }
        location /on/ { esper_json_response on; }
        location /off/ { esper_json_response off; }
        location /page/ { error_page 403 /blocked.html; }
        location = /blocked.html { esper off; }
        location /monitor/ { esper_mode monitor; esper_json_response on; }
        location /failing/ { esper_api_url http://127.0.0.1:1; esper_failure_action block; esper_json_response on; }
        location /zone/ { esper_enforcement bots; }
    }
EOF2
$t->write_file("html/$_", "ok\n") for qw(auto/p on/p off/p page/p monitor/p failing/p zone/p);
$t->write_file('html/blocked.html', "<h1>blocked page</h1>\n");

my $cors = ['Sec-Fetch-Mode', 'cors'];
my $vary = 'Accept, Sec-Fetch-Mode, X-Requested-With';
sub json_of { my $b = eval { decode_json($_[0]{body}) }; $b }
sub is_json {
    my ($r, $what) = @_;
    is($r->{headers}{'content-type'}, 'application/json', "$what: Content-Type application/json");
    is($r->{headers}{'cache-control'}, 'no-store', "$what: Cache-Control no-store");
    return json_of($r);
}

# auto: Accept edge cases.
my @cases = (
    ['fetch() asking for JSON',    [$cors, ['Accept', 'application/json']], 1],
    ['XMLHttpRequest',             [['X-Requested-With', 'XMLHttpRequest'], ['Accept', 'application/json, text/plain, */*']], 1],
    ['browser navigation',         [['Sec-Fetch-Mode', 'navigate'], ['Accept', 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8']], 0],
    # Browsers send no Sec-Fetch-* to plain-http origins: without them,
    # an Accept that prefers JSON to HTML is a script client.
    ['no fetch metadata, JSON',    [['Accept', 'application/json']], 1],
    ['no fetch metadata, axios',   [['Accept', 'application/json, text/plain, */*']], 1],
    ['no fetch metadata, HTML lower', [['Accept', 'text/html;q=0.5, application/json']], 1],
    ['no fetch metadata, tie',     [['Accept', 'text/html, application/json']], 0],
    ['no fetch metadata, wildcard above', [['Accept', 'application/json;q=0.5, */*']], 0],
    ['no fetch metadata, navigation', [['Accept', 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8']], 0],
    ['no fetch metadata, q=0',     [['Accept', 'application/json;q=0']], 0],
    ['no fetch metadata, image',   [['Accept', 'image/avif,image/webp,image/*,*/*;q=0.8']], 0],
    ['no fetch metadata, none',    [], 0],
    ['q=0',                        [$cors, ['Accept', 'application/json;q=0, text/html']], 0],
    ['q=0.000 with spaces',        [$cors, ['Accept', ' text/html ,application/json ; q = 0.000 ']], 0],
    ['wildcard only',              [$cors, ['Accept', '*/*']], 0],
    ['application/* only',         [$cors, ['Accept', 'application/*']], 0],
    ['parameters',                 [$cors, ['Accept', 'application/json; charset=utf-8;q=0.5']], 1],
    ['a +json type',               [$cors, ['Accept', 'application/vnd.api+json']], 1],
    ['upper case',                 [['SEC-FETCH-MODE', 'CORS'], ['ACCEPT', 'APPLICATION/JSON;Q=1']], 1],
    ['two Accept headers',         [$cors, ['Accept', 'text/html'], ['Accept', 'application/json']], 1],
    ['substring trap',             [$cors, ['Accept', 'application/jsonx, text/x;a="application/json"']], 0],
);
for my $case (@cases) {
    my ($what, $headers, $json) = @$case;
    my $r = $t->get('/auto/p?mock_action=block&mock_decision_id=d-1', headers => $headers);
    is($r->{status}, 403, "$what: blocked");
    is($r->{headers}{vary}, $vary, "$what: Vary names what the choice depends on");
    if ($json) {
        is_deeply(is_json($r, $what), { action => 'block', decision_id => 'd-1' }, "$what: JSON block");
    } else {
        like($r->{headers}{'content-type'}, qr{^text/html}, "$what: the HTML block page");
    }
    is($r->{headers}{'access-control-allow-origin'}, 'https://app.example', "$what: add_header ... always applies");
}

# The JSON challenge.
my $r = $t->get('/auto/p?mock_action=challenge&mock_decision_id=c-1', headers => [$cors, ['Accept', 'application/json']]);
is($r->{status}, 403, 'JSON challenge: 403');
my $body = is_json($r, 'JSON challenge');
is($body->{action}, 'challenge', 'action');
like($body->{redirect_url}, qr{^http://127\.0\.0\.1:\d+/challenge\?return_url=}, "Esper's redirect_url");
is($body->{decision_id}, 'c-1', 'decision_id');
is_deeply([sort keys %$body], [qw(action decision_id redirect_url)], 'nothing else');
ok(!defined $r->{headers}{location}, 'no Location');
like($r->{body}, qr/^\{"action":"challenge","redirect_url":/, 'fields in order');

$r = $t->get('/auto/p?mock_action=challenge', headers => [['Sec-Fetch-Mode', 'navigate'], ['Accept', 'text/html']]);
is($r->{status}, 302, 'a browser is redirected as before');
is($r->{headers}{vary}, $vary, 'with Vary in auto');

# Valid JSON whatever the id holds; no decision_id when Esper gave none.
$r = $t->get('/on/p?mock_action=block&mock_decision_id=' . 'a%22b%5Cc%E2%80%A8%F0%9F%A4%96');
is_deeply(json_of($r), { action => 'block', decision_id => "a\"b\\c\x{2028}\x{1F916}" }, 'quotes, backslash, U+2028 and other unicode escaped');
$r = $t->get('/on/p?mock_body=%7B%22action%22%3A%22block%22%7D');
is($r->{body}, '{"action":"block"}', 'decision_id left out when Esper gave none');

# on and off.
$r = $t->get('/on/p?mock_action=block', headers => [['Sec-Fetch-Mode', 'navigate'], ['Accept', 'text/html']]);
is(json_of($r)->{action}, 'block', 'on: JSON even for a navigation');
ok(!defined $r->{headers}{vary}, 'on: no Vary');
$r = $t->get('/off/p?mock_action=block', headers => [$cors, ['Accept', 'application/json']]);
like($r->{headers}{'content-type'}, qr{^text/html}, 'off: never JSON');
ok(!defined $r->{headers}{vary}, 'off: no Vary');

# error_page still applies to the non-JSON block.
$r = $t->get('/page/p?mock_action=block', headers => [['Accept', 'text/html']]);
is($r->{body}, "<h1>blocked page</h1>\n", 'error_page for a browser');
$r = $t->get('/page/p?mock_action=block', headers => [$cors, ['Accept', 'application/json']]);
is(json_of($r)->{action}, 'block', 'JSON for an API client');

# Monitor mode and the failure action behave as before.
is($t->get('/monitor/p?mock_action=block')->{status}, 200, 'monitor: never enforced');
$r = $t->get('/failing/p');
is($r->{status}, 403, 'failure action block');
like($r->{headers}{'content-type'}, qr{^text/html}, 'the failure action is the plain block');

# The enforcement zone answers in JSON too.
$r = $t->get('/zone/p?mock_action=block&mock_decision_id=z-1', headers => [['User-Agent', 'api-bot'], $cors, ['Accept', 'application/json']]);
is_deeply(json_of($r), { action => 'block', decision_id => 'z-1' }, 'decided: JSON');
my $calls = $t->mock_count;
$r = $t->get('/zone/p?mock_action=allow', headers => [['User-Agent', 'api-bot'], $cors, ['Accept', 'application/json']]);
is_deeply(json_of($r), { action => 'block', decision_id => 'z-1' }, 'enforced from the zone: JSON with the remembered id');
is($t->mock_count, $calls, 'without a call');

# HTTP/2.
my $port = $t->port;
my $h2 = `curl -s -i --http2-prior-knowledge -H 'Sec-Fetch-Mode: cors' -H 'Accept: application/json' 'http://127.0.0.1:$port/auto/p?mock_action=block&mock_decision_id=h2'`;
like($h2, qr{^HTTP/2 403}, 'HTTP/2: 403');
like($h2, qr{^content-type: application/json\r?$}mi, 'HTTP/2: JSON');
like($h2, qr{^vary: \Q$vary\E\r?$}mi, 'HTTP/2: Vary');
like($h2, qr{\{"action":"block","decision_id":"h2"\}$}, 'HTTP/2: the body');

# HEAD: the JSON block's head only (its length, no body), and the
# connection goes on with the request pipelined after it.
my $head = $t->request("HEAD /on/p?mock_action=block&mock_decision_id=hd HTTP/1.1\r\nHost: localhost\r\n\r\n"
    . "GET /off/p HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
my @answers = split m{(?=HTTP/1\.1 \d{3} )}, $head->{raw};
is(scalar @answers, 2, 'HEAD: two answers on the connection');
my $first = EsperTest::parse_response($answers[0] // '');
is($first->{status}, 403, 'HEAD: 403');
is($first->{headers}{'content-type'}, 'application/json', 'HEAD: JSON');
is($first->{headers}{'content-length'}, length('{"action":"block","decision_id":"hd"}'), 'HEAD: the length of the JSON body');
is($first->{body}, '', 'HEAD: no body');
like($answers[1] // '', qr{^HTTP/1\.1 200 .*ok\n\z}s, 'HEAD: the next request is served');

is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;
done_testing;
