# An https esper_api_url: the server certificate is verified against the system
# roots or esper_ssl_trusted_certificate, unless esper_ssl_verify is off. The
# TLS front of the mock is a second server of the same nginx.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "ok\n");
$t->make_certificates;
my $tls = EsperTest::free_port();
my $conf = <<'EOF';
    esper_api_url https://127.0.0.1:%%TLS%%;
    esper_api_key test-key;
    esper_failure_action block;
    server {
        listen 127.0.0.1:%%TLS%% ssl;
        http2 on;
        ssl_certificate %%DIR%%/leaf.pem;
        ssl_certificate_key %%DIR%%/leaf.key;
        location / { proxy_pass http://%%MOCK%%; }
    }
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location /system-roots/ { esper on; alias %%DIR%%/html/; }
        location /custom-ca/ { esper on; esper_ssl_trusted_certificate ca.pem; alias %%DIR%%/html/; }
        location /no-verify/ { esper on; esper_ssl_verify off; alias %%DIR%%/html/; }
        location /h2/ {
            esper on;
            esper_http2 on;
            esper_ssl_trusted_certificate ca.pem;
            alias %%DIR%%/html/;
        }
    }
EOF
$conf =~ s/%%TLS%%/$tls/g;
$t->start_nginx($conf);

my $r = $t->get('/custom-ca/index.html');
is($r->{status}, 200, 'a trusted custom CA verifies the Esper certificate');
is($t->mock_count, 1, 'the call went through TLS to the mock');

$r = $t->get('/system-roots/index.html');
is($r->{status}, 403, 'an untrusted certificate is a failure (failure action block)');
like($t->error_log, qr/esper decision failed: request failed: .*certificate/i, 'the reason names the certificate');
is($t->mock_count, 1, 'nothing reached the mock without a trusted certificate');

$r = $t->get('/no-verify/index.html');
is($r->{status}, 200, 'esper_ssl_verify off accepts the certificate');
is($t->mock_count, 2, 'the unverified call reached the mock');

$r = $t->get('/h2/index.html?mock_action=block');
is($r->{status}, 403, 'esper_http2 on: decided over HTTP/2 with TLS');
like($t->access_log, qr/"POST \/api\/v1\/runtime\/mitigation HTTP\/2\.0"/, 'the TLS front saw an HTTP/2 call');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
