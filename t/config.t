# Invalid configurations fail `nginx -t` with a clear message and file:line;
# valid ones pass, and settings inherit from http to server to location.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;

sub check_fails {
    my ($http, $message, $what) = @_;
    my ($status, $output, $file) = $t->test_config($http);
    isnt($status, 0, "$what: nginx -t fails");
    my $where = $message =~ /variable$/ ? '' : qr/ in \Q$file\E:\d+/;
    like($output, qr/\[emerg\] .*\Q$message\E.*$where/, "$what: message" . ($where ? ' with file and line' : ''))
        or diag $output;
}

sub in_location { "server { listen 127.0.0.1:%%PORT%%; location / { $_[0] } }" }

check_fails(in_location('esper on;'), '"esper on" needs "esper_api_key"', 'esper on without a key');
check_fails("esper on;\n" . in_location('esper_api_key k;'), '"esper on" needs "esper_api_key"', 'key only below esper on');
check_fails(in_location('esper maybe;'), 'invalid value "maybe" in "esper" directive, it must be "on" or "off"', 'bad flag');
check_fails(in_location('esper_api_url ftp://x/;'), 'invalid Esper API URL "ftp://x/": scheme must be http or https', 'bad URL scheme');
check_fails(in_location('esper_api_url api.esperr.com;'), 'invalid Esper API URL "api.esperr.com"', 'relative URL');
check_fails(in_location('esper_api_url https://x/?a=1;'), 'query and fragment are not allowed', 'URL with query');
# A key put into the URL by mistake is not repeated on the terminal or in the log.
for my $url ('https://user:sekret@x/', 'https://x/?key=sekret') {
    my ($status, $output) = $t->test_config(in_location("esper_api_url $url;"));
    isnt($status, 0, "$url: nginx -t fails");
    unlike($output, qr/sekret/, "$url: the error does not repeat what may be a key");
}
check_fails(in_location('esper_api_url https://user:sekret@x/;'), 'invalid Esper API URL "https://***@x/": credentials belong in esper_api_key', 'URL with credentials');
check_fails(in_location('esper_api_key "a b";'), 'invalid API key: it must be non-empty visible ASCII', 'bad key');
check_fails(in_location('esper_timeout 3x;'), '"esper_timeout" directive invalid value', 'bad time');
check_fails(in_location('esper_timeout 0; esper on; esper_api_key k;'), '"esper_timeout" must be more than 0', 'zero timeout');
check_fails(in_location('esper_failure_action deny;'), 'invalid value "deny"', 'bad failure action');
check_fails(in_location('esper_mode watch;'), 'invalid value "watch"', 'bad mode');
check_fails(in_location('esper_block_status 200;'), 'invalid block status "200": use a code from 400 to 599', 'bad block status');
check_fails(in_location('esper_challenge_status 200;'), 'invalid challenge status "200": use 301, 302, 303, 307 or 308', 'bad challenge status');
check_fails(in_location('esper_field "" x;'), 'invalid field name ""', 'empty field name');
check_fails(in_location('esper_field a x; esper_field a y;'), 'duplicate field "a"', 'duplicate field');
check_fails(in_location('esper_field a $no_such_variable;'), 'unknown "no_such_variable" variable', 'unknown variable');
check_fails(in_location('esper_source "a b";'), 'invalid source "a b"', 'bad source');
check_fails(in_location('esper_api_key a; esper_api_key b;'), '"esper_api_key" directive is duplicate', 'duplicate key');
check_fails(in_location('esper_ssl_trusted_certificate /nonexistent.pem;'), 'cannot read "/nonexistent.pem"', 'missing CA file');
$t->write_file('bad.pem', "not a certificate\n");
check_fails(in_location('esper_ssl_trusted_certificate bad.pem;'), 'no certificate found in', 'CA file without certificates');
check_fails(in_location('esper_ssl_verify sometimes;'), 'it must be "on" or "off"', 'bad ssl_verify');
check_fails(in_location('esper_pass_cookie "a=b";'), 'invalid cookie name "a=b"', 'bad cookie name');
check_fails(in_location('esper_pass_ttl forever;'), '"esper_pass_ttl" directive invalid value', 'bad pass ttl');
check_fails(in_location('esper_pass_ttl 0; esper on; esper_api_key k;'), '"esper_pass_ttl" must be more than 0', 'zero pass ttl');
$t->write_file('short.key', "0123456789\n");
check_fails(in_location('esper_pass_secret_file short.key;'), 'the key has 10 bytes, at least 32 are needed', 'short secret');
check_fails(in_location('esper_pass_secret_file /nonexistent.key;'), 'cannot read "/nonexistent.key"', 'missing secret file');
check_fails(in_location('esper_hybrid_key a; esper_hybrid_key b;'), '"esper_hybrid_key" directive is duplicate', 'duplicate hybrid key');
check_fails(in_location('esper_forward_decision_id yes;'), 'it must be "on" or "off"', 'bad forward_decision_id');
check_fails(in_location('esper_max_pending none;'), 'invalid number', 'bad max_pending');
check_fails(in_location('esper_max_pending 0; esper on; esper_api_key k;'), '"esper_max_pending" must be more than 0', 'zero max_pending');
check_fails(in_location('esper_circuit_breaker failures=0;'), 'invalid parameter "failures=0"', 'zero breaker failures');
check_fails(in_location('esper_circuit_breaker window=soon;'), 'invalid parameter "window=soon"', 'bad breaker window');
check_fails(in_location('esper_circuit_breaker colour=red;'), 'invalid parameter "colour=red"', 'unknown breaker parameter');
check_fails(in_location('esper_circuit_breaker off; esper_circuit_breaker off;'), '"esper_circuit_breaker" directive is duplicate', 'duplicate breaker');
check_fails("esper_api_key k;\n" . in_location('esper on; esper_enforcement nowhere;'), 'unknown esper_enforcement_zone "nowhere"', 'unknown zone');
check_fails("esper_enforcement_zone zone=z:1x;", 'invalid zone size "zone=z:1x"', 'bad zone size');
check_fails("esper_enforcement_zone zone=z:4k;", 'zone "z" is too small', 'zone too small');
check_fails("esper_enforcement_zone zone=:1m;", 'invalid zone name "zone=:1m"', 'empty zone name');
check_fails("esper_enforcement_zone zone=ngx_http_esper_module:1m;", 'the zone name "ngx_http_esper_module" is the module\'s own', 'the metrics zone\'s name');
check_fails("esper_enforcement_zone zone=z:1m ttl=0;", 'invalid parameter "ttl=0"', 'zero zone ttl');
check_fails("esper_enforcement_zone zone=z:1m ttl=soon;", 'invalid parameter "ttl=soon"', 'bad zone ttl');
check_fails("esper_enforcement_zone ttl=10s;", '"zone" parameter is missing', 'zone parameter missing');
check_fails("esper_enforcement_zone zone=z:1m colour=red;", 'invalid parameter "colour=red"', 'unknown zone parameter');
check_fails("esper_enforcement_zone zone=z:1m;\nesper_enforcement_zone zone=z:1m;", 'duplicate zone "z"', 'duplicate zone');
check_fails(in_location('esper_enforcement_zone zone=z:1m;'), '"esper_enforcement_zone" directive is not allowed here', 'zone outside http');
check_fails(in_location('esper_enforcement a; esper_enforcement b;'), '"esper_enforcement" directive is duplicate', 'duplicate esper_enforcement');
check_fails(in_location('esper_json_response sometimes;'), 'invalid value "sometimes"', 'bad esper_json_response');

$t->write_file('good.key', ('k' x 64) . "\n");
my ($status, $output) = $t->test_config(<<'EOF');
    esper_api_key k;
    esper_api_url https://esper.internal.example/prefix;
    esper_timeout 1s;
    esper_failure_action block;
    esper_mode monitor;
    esper_block_status 444;
    esper_challenge_status 303;
    esper_return_url https://$host$request_uri;
    esper_field host $host;
    esper_field ua_hash $http_user_agent;
    esper_source nginx-edge;
    esper_send_cookies on;
    esper_ssl_verify off;
    esper_pass_cookie esper_pass;
    esper_pass_ttl 1h;
    esper_pass_secret_file %%DIR%%/good.key;
    esper_hybrid_key $http_x_request_id;
    esper_forward_decision_id on;
    esper_max_pending 256;
    esper_circuit_breaker failures=50 window=30s cooldown=10s;
    esper_http2 on;
    esper_enforcement_zone zone=bots:1m ttl=5m;
    esper_enforcement_zone zone=other:64k;
    esper_enforcement bots;
    esper_json_response off;
    server {
        listen 127.0.0.1:%%PORT%%;
        esper on;
        esper_enforcement other;
        location / { }
        location /static/ { esper off; }
        location /no-breaker/ { esper_circuit_breaker off; }
        location /bots/ { esper_enforcement bots; }
        location /no-zone/ { esper_enforcement off; }
        location /api/ { esper_json_response on; }
        location /spa/ { esper_json_response auto; }
    }
EOF
is($status, 0, 'every directive at http level passes nginx -t') or diag $output;
done_testing;
