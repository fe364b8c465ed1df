# The exact body and headers of the decision call (docs/esper-contract.md, "Runtime decision request").
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "ok\n");
$t->start_nginx(<<'EOF');
    esper_api_url http://%%MOCK%%/;
    esper_api_key sk_test_123;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location / { esper on; }
        location /custom/ {
            esper on;
            esper_source edge-eu-1;
            esper_return_url https://shop.example.com$request_uri;
            esper_field host $host;
            esper_field tier gold;
            esper_field route $uri;
            esper_send_cookies on;
            alias %%DIR%%/html/;
        }
    }
EOF

my $r = $t->get('/index.html?step=2&a=%C3%A9+x&step=3&flag',
    host => 'shop.example.com',
    headers => [
        ['User-Agent', 'Mozilla/5.0 (Test)'],
        ['X-Forwarded-For', '10.0.0.1'],
        ['X-Forwarded-For', '10.0.0.2'],
        ['Authorization', 'Basic c2VjcmV0'],
        ['Proxy-Authorization', 'Basic c2VjcmV0'],
        ['Cookie', 'session=abc; theme=dark'],
        ['X-Real-IP', '198.51.100.23'],
    ]);
is($r->{status}, 200, 'allowed');

my $call = $t->last_call;
ok($call, 'the mock recorded a call on /api/v1/runtime/mitigation below the API base');
is($call->{headers}{'x-esper-api-key'}, 'sk_test_123', 'API key header');
like($call->{headers}{'content-type'}, qr{^application/json}, 'JSON content type');

my $p = $call->{body};
is(ref $p, 'HASH', 'body is a JSON object');
is($p->{source}, 'nginx', 'default source');
like($p->{observed_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'observed_at is RFC 3339 UTC with milliseconds');
like($p->{idempotency_key}, qr/^[0-9a-f]{32}$/, 'idempotency key is the request id');
is($p->{return_url}, 'http://shop.example.com/index.html?step=2&a=%C3%A9+x&step=3&flag', 'default return_url');
my $req = $p->{request};
is($req->{method}, 'GET', 'method');
is($req->{path}, '/index.html', 'path without query');
is($req->{client_ip}, '198.51.100.23', 'client_ip follows the realip module');
is($req->{user_agent}, 'Mozilla/5.0 (Test)', 'user_agent');
is_deeply($req->{query_params}, { step => '3', a => "\x{e9} x", flag => '' }, 'query params decoded, last wins');
is_deeply($req->{route_params}, {}, 'route_params is empty');
ok(!exists $req->{cookies}, 'no cookies unless esper_send_cookies on');
is($req->{headers}{'x-forwarded-for'}, '10.0.0.1, 10.0.0.2', 'repeated headers joined');
is($req->{headers}{host}, 'shop.example.com', 'host header');
is($req->{headers}{'user-agent'}, 'Mozilla/5.0 (Test)', 'header names lower-case');
ok(!exists $req->{headers}{$_}, "$_ never sent") for qw(authorization proxy-authorization cookie);
is_deeply($p->{fields}, { host => 'shop.example.com' }, 'default field is host');

# Another request gets another idempotency key.
$t->get('/index.html');
my $second = $t->last_call->{body};
isnt($second->{idempotency_key}, $p->{idempotency_key}, 'idempotency key is unique per request');

$t->get('/custom/index.html?x=1', headers => [['Cookie', 'session=abc; theme="dark"'], ['Cookie', 'x=1']]);
$p = $t->last_call->{body};
is($p->{source}, 'edge-eu-1', 'esper_source');
is($p->{return_url}, 'https://shop.example.com/custom/index.html?x=1', 'esper_return_url with variables');
is_deeply($p->{fields}, { host => 'localhost', tier => 'gold', route => '/custom/index.html' }, 'esper_field values with variables');
is_deeply($p->{request}{cookies}, { session => 'abc', theme => 'dark', x => '1' }, 'cookies parsed with esper_send_cookies on');
ok(!exists $p->{request}{headers}{cookie}, 'cookie header still not sent as a header');

# Bytes that are not UTF-8, control characters and broken escapes still give valid JSON.
$r = $t->request("GET /index.html?k\xff=%ZZ&q=%E2%82 HTTP/1.1\r\nHost: localhost\r\n"
    . "User-Agent: bot\xc3\x28\x01\r\nX-Bin: \xfe\xff\"\\\r\nConnection: close\r\n\r\n");
is($r->{status}, 200, 'odd bytes are judged and allowed');
$p = $t->last_call->{body};
is(ref $p, 'HASH', 'odd bytes: the mock parsed valid JSON');
is($p->{request}{user_agent}, "bot\x{fffd}(\x{1}", 'invalid UTF-8 replaced, not dropped');
is($p->{request}{headers}{'x-bin'}, "\x{fffd}\x{fffd}\"\\", 'header value replaced and escaped');
is($p->{request}{query_params}{"k\x{fffd}"}, '%ZZ', 'broken escapes kept as sent');

# Oversized values are cut, the body stays bounded.
my $long = 'a' x 6000;
$t->get("/index.html?big=$long", headers => [['X-Long', $long]]);
$p = $t->last_call->{body};
is(length $p->{request}{query_params}{big}, 2048, 'long query value cut at 2048 bytes');
is(length $p->{request}{headers}{'x-long'}, 2048, 'long header value cut at 2048 bytes');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
