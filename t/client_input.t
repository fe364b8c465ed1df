# Whatever a client sends, the payload Esper receives is valid JSON and the
# decision is applied: huge and many headers, 10,000 query parameters, odd
# methods, HTTP/1.0 without Host, HTTP/2.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "ok\n");
$t->start_nginx(<<'EOF');
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    large_client_header_buffers 4 128k;
    server {
        listen 127.0.0.1:%%PORT%%;
        server_name shop.test;
        http2 on;
        root %%DIR%%/html;
        location / { esper on; }
    }
EOF

# Each case: a raw request that asks the mock to block; the module must send
# a JSON payload (the mock recorded it as an object) and apply the block.
sub judged {
    my ($what, $raw, $check) = @_;
    $t->mock_reset;
    my $r = $t->request($raw);
    is($r->{status}, 403, "$what: the decision (block) is applied");
    my $call = $t->last_call;
    is(ref($call && $call->{body}), 'HASH', "$what: the payload is valid JSON");
    $check->($call->{body}) if $check && $call;
}

my $big = 'x' x (64 * 1024);
judged('64 KB header', "GET /index.html?mock_action=block HTTP/1.1\r\nHost: a\r\nX-Big: $big\r\nConnection: close\r\n\r\n", sub {
    is(length $_[0]{request}{headers}{'x-big'}, 2048, '64 KB header: cut to 2048 bytes');
});

my $many = join '', map { "X-H$_: v$_\r\n" } 1 .. 500;
judged('500 headers', "GET /index.html?mock_action=block HTTP/1.1\r\nHost: a\r\n${many}Connection: close\r\n\r\n", sub {
    cmp_ok(scalar keys %{$_[0]{request}{headers}}, '<=', 64, '500 headers: at most 64 sent');
});

my $params = join '&', map { "p$_=$_" } 1 .. 10_000;
judged('10,000 query parameters', "GET /index.html?mock_action=block&$params HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", sub {
    cmp_ok(scalar keys %{$_[0]{request}{query_params}}, '<=', 64, '10,000 parameters: at most 64 sent');
    like($_[0]{request}{path}, qr{^/index\.html$}, '10,000 parameters: path intact');
});

judged('broken percent-encoding and bytes', "GET /index.html?mock_action=block&%=%&%zz=1&\xff\xfe=%E2%82 HTTP/1.1\r\nHost: a\r\nUser-Agent: \x80\x81\r\nConnection: close\r\n\r\n");

for my $method (qw(PROPFIND FOO)) {
    judged("method $method", "$method /index.html?mock_action=block HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", sub {
        is($_[0]{request}{method}, $method, "method $method is sent as is");
    });
}

judged('HTTP/1.0 without Host', "GET /index.html?mock_action=block HTTP/1.0\r\n\r\n", sub {
    ok(!exists $_[0]{request}{headers}{host}, 'HTTP/1.0: no host header invented');
    is_deeply($_[0]{fields}, { host => 'shop.test' }, 'HTTP/1.0: the host field is the server name');
});

# HTTP/2 (curl with prior knowledge): :authority becomes the host.
$t->mock_reset;
my $port = $t->port;
my $status = `curl -s -o /dev/null -w '%{http_code} %{http_version}' --http2-prior-knowledge 'http://127.0.0.1:$port/index.html?mock_action=block' -H 'X-Two: 2'`;
is($status, '403 2', 'HTTP/2: the decision is applied');
my $call = $t->last_call;
is(ref($call && $call->{body}), 'HASH', 'HTTP/2: the payload is valid JSON');
is($call->{body}{request}{headers}{host}, "127.0.0.1:$port", 'HTTP/2: :authority is the host header');
is($call->{body}{request}{headers}{'x-two'}, '2', 'HTTP/2: other headers are sent');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
