# esper_http2 auto (the default) offers h2 and http/1.1 by ALPN over https
# and speaks what the server chose; over plain http it speaks HTTP/1.1.
# `on` and `off` keep one version whatever the server offers. Two TLS fronts
# of the same nginx relay to the mock: one offers h2 (`http2 on`), one only
# HTTP/1.1; their access logs show the version of each call.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "ok\n");
$t->make_certificates;
my $h2 = EsperTest::free_port();
my $h1 = EsperTest::free_port();

my $c = EsperTest->new(name => 'http2_auto_conf');
my ($status, $output, $file) = $c->test_config(
    "server { listen 127.0.0.1:%%PORT%%; location / { esper_http2 sometimes; } }");
isnt($status, 0, 'esper_http2 sometimes: nginx -t fails');
like($output, qr/\[emerg\] invalid value "sometimes" in \Q$file\E:\d+/,
    'the error names the value, with file and line') or diag $output;

my $conf = <<'EOF_CONF';
    esper_api_key test-key;
    esper_failure_action block;
    esper_ssl_trusted_certificate ca.pem;
    log_format version "$server_port $server_protocol $request_uri";
    server {
        listen 127.0.0.1:%%H2%% ssl;
        http2 on;
        ssl_certificate %%DIR%%/leaf.pem;
        ssl_certificate_key %%DIR%%/leaf.key;
        access_log %%DIR%%/logs/front.log version;
        location / { rewrite ^/[^/]+(/api/.*)$ $1 break; proxy_pass http://%%MOCK%%; }
    }
    server {
        listen 127.0.0.1:%%H1%% ssl;
        ssl_certificate %%DIR%%/leaf.pem;
        ssl_certificate_key %%DIR%%/leaf.key;
        access_log %%DIR%%/logs/front.log version;
        location / { rewrite ^/[^/]+(/api/.*)$ $1 break; proxy_pass http://%%MOCK%%; }
    }
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location /auto-h2/ { esper on; esper_api_url https://127.0.0.1:%%H2%%/auto-h2; alias %%DIR%%/html/; }
        location /auto-h1/ { esper on; esper_api_url https://127.0.0.1:%%H1%%/auto-h1; alias %%DIR%%/html/; }
        location /off-h2/ {
            esper on; esper_http2 off; esper_api_url https://127.0.0.1:%%H2%%/off-h2; alias %%DIR%%/html/;
        }
        location /on-h2/ {
            esper on; esper_http2 on; esper_api_url https://127.0.0.1:%%H2%%/on-h2; alias %%DIR%%/html/;
        }
        location /on-h1/ {
            esper on; esper_http2 on; esper_api_url https://127.0.0.1:%%H1%%/on-h1; alias %%DIR%%/html/;
        }
        location /plain/ { esper on; esper_api_url http://%%MOCK%%; alias %%DIR%%/html/; }
    }
EOF_CONF
$conf =~ s/%%H2%%/$h2/g;
$conf =~ s/%%H1%%/$h1/g;
$t->start_nginx($conf);

sub versions {
    my ($prefix) = @_;
    return [map { /^\d+ (\S+) \Q$prefix\E\// ? $1 : () } split /\n/, $t->read_file('logs/front.log')];
}

for my $round (1 .. 3) {
    is($t->get("/auto-h2/index.html?mock_action=allow")->{status}, 200, "auto, server offers h2: call $round decided");
    is($t->get("/auto-h1/index.html?mock_action=block")->{status}, 403, "auto, server offers http/1.1 only: call $round decided (block)");
    is($t->get("/off-h2/index.html?mock_action=allow")->{status}, 200, "off: call $round decided");
    is($t->get("/on-h2/index.html?mock_action=allow")->{status}, 200, "on: call $round decided");
}
$t->wait_for_log('logs/front.log', qr/on-h2.*\n.*on-h2.*\n.*on-h2/, 2);
is_deeply(versions('/auto-h2'), [('HTTP/2.0') x 3], 'auto: HTTP/2 where the server chose h2');
is_deeply(versions('/auto-h1'), [('HTTP/1.1') x 3], 'auto: HTTP/1.1 where the server offers nothing else');
is_deeply(versions('/off-h2'), [('HTTP/1.1') x 3], 'off: HTTP/1.1 although the server offers h2');
is_deeply(versions('/on-h2'), [('HTTP/2.0') x 3], 'on: HTTP/2');

my $r = $t->get('/on-h1/index.html?mock_action=allow');
is($r->{status}, 403, 'on, server without h2: the call fails (failure action block)');
is_deeply(versions('/on-h1'), [], 'and nothing was answered as HTTP/1.1');

$t->mock_reset;
is($t->get('/plain/index.html?mock_action=allow')->{status}, 200, 'auto over plain http: decided');
is_deeply([map { $_->{version} } @{$t->mock_requests}], ['HTTP/1.1'], 'auto over plain http speaks HTTP/1.1');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
