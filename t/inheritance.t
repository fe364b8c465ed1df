# The blocks nginx makes inside a location take its `esper` settings, so a
# client cannot step around Esper by choosing one: an `if` block its query
# selects (before or after `esper on`), a nested location, the part of a
# `limit_except` its method selects. `esper` itself is refused inside `if`.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "protected\n");
$t->write_file('html/inner/index.html', "inner\n");
$t->write_file('html/open/index.html', "open\n");
$t->start_nginx(<<'EOF');
    esper_api_url http://%%MOCK%%;
    esper_api_key test-key;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location / {
            esper on;
            if ($arg_debug) { add_header X-Debug after always; }
            location /inner/ { }
            location /open/ { esper off; }
        }
        location /first/ {
            if ($arg_debug) { add_header X-Debug before always; }
            esper on;
            alias %%DIR%%/html/;
        }
        location /methods/ {
            esper on;
            limit_except GET { allow all; }
            alias %%DIR%%/html/;
        }
    }
EOF

my $r = $t->get('/index.html?debug=1&mock_action=block');
is($r->{status}, 403, 'if after esper on: the request its query selects is judged');
is($r->{headers}{'x-debug'}, 'after', 'if after esper on: the if block applied');
$r = $t->get('/first/index.html?debug=1&mock_action=block');
is($r->{status}, 403, 'if before esper on: judged');
is($r->{headers}{'x-debug'}, 'before', 'if before esper on: the if block applied');
is($t->get('/index.html?debug=1')->{body}, "protected\n", 'if: allowed requests reach the content');

is($t->get('/inner/index.html?mock_action=block')->{status}, 403, 'a nested location inherits esper on');
is($t->get('/inner/index.html')->{body}, "inner\n", 'a nested location: allowed');
is($t->get('/open/index.html?mock_action=block')->{body}, "open\n", 'a nested location may say esper off');

$t->mock_reset;
$r = $t->request("POST /methods/index.html?mock_action=block HTTP/1.1\r\nHost: localhost\r\n"
    . "Content-Length: 0\r\nConnection: close\r\n\r\n");
is($r->{status}, 403, 'limit_except: a method outside it is judged (not 405)');
is($t->mock_count, 1, 'limit_except: Esper was asked');
is($t->get('/methods/index.html?mock_action=block')->{status}, 403, 'limit_except: GET judged too');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');

# In a test directory of its own: nginx -t logs its refusal at emerg.
my ($status, $output, $file) = EsperTest->new->test_config(<<'EOF');
    esper_api_url http://127.0.0.1:1;
    esper_api_key test-key;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / {
            if ($arg_x) { esper off; }
        }
    }
EOF
isnt($status, 0, 'esper inside if: nginx -t fails');
like($output, qr/"esper" directive is not allowed here in \Q$file\E:\d+/, 'esper inside if: with file and line');
done_testing;
