# Each action Esper can return, applied inside nginx; monitor mode; esper off.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "protected\n");
$t->write_file('html/blocked.html', "custom block page\n");
$t->start_nginx(<<'EOF');
    esper_api_url http://%%MOCK%%;
    esper_api_key test-key;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location / { esper on; }
        location /status/ {
            esper on;
            esper_block_status 429;
            esper_challenge_status 307;
            alias %%DIR%%/html/;
        }
        location /pretty/ {
            esper on;
            error_page 403 /blocked.html;
            alias %%DIR%%/html/;
        }
        location = /blocked.html { esper on; }
        location /monitor/ { esper on; esper_mode monitor; alias %%DIR%%/html/; }
        location /off/ { esper off; alias %%DIR%%/html/; }
        location /close/ { esper on; esper_block_status 444; alias %%DIR%%/html/; }
        location /h2c/ { esper on; esper_http2 on; alias %%DIR%%/html/; }
    }
EOF

my $r = $t->get('/index.html');
is($r->{status}, 200, 'allow continues to the content');
is($r->{body}, "protected\n", 'allow serves the application');
is($t->mock_count, 1, 'one decision call');

$r = $t->get('/index.html?mock_action=block');
is($r->{status}, 403, 'block answers 403 by default');
unlike($r->{body}, qr/protected/, 'block does not reach the application');

$r = $t->get('/index.html?mock_action=challenge&mock_redirect=https://challenge.esperr.test/c%3Fs%3D1');
is($r->{status}, 302, 'challenge redirects with 302 by default');
is($r->{headers}{location}, 'https://challenge.esperr.test/c?s=1', 'Location is the redirect_url');
is($r->{headers}{'cache-control'}, 'no-store', 'challenge is not cacheable');

$r = $t->get('/status/index.html?mock_action=block');
is($r->{status}, 429, 'esper_block_status');
$r = $t->get('/status/index.html?mock_action=challenge');
is($r->{status}, 307, 'esper_challenge_status');
like($r->{headers}{location}, qr{^http://127\.0\.0\.1:\d+/challenge\?return_url=}, 'default mock challenge page');

$t->mock_reset;
$r = $t->get('/pretty/index.html?mock_action=block');
is($r->{status}, 403, 'error_page keeps the block status');
is($r->{body}, "custom block page\n", 'error_page serves its page for a block');
is($t->mock_count, 1, 'the error page is not judged again');

$t->mock_reset;
for my $action (qw(block challenge)) {
    $r = $t->get("/monitor/index.html?mock_action=$action");
    is($r->{status}, 200, "monitor mode never enforces $action");
}
is($t->mock_count, 2, 'monitor mode still asks Esper');

$t->mock_reset;
$r = $t->get('/off/index.html?mock_action=block');
is($r->{status}, 200, 'esper off serves');
is($t->mock_count, 0, 'esper off makes no call');

$r = $t->get('/close/index.html?mock_action=block');
is($r->{raw}, '', 'block status 444 closes the connection without an answer');

$t->mock_reset;
for my $action (qw(allow block)) {
    $r = $t->get("/h2c/index.html?mock_action=$action");
    is($r->{status}, $action eq 'allow' ? 200 : 403, "esper_http2 on: $action applied");
}
is_deeply([map { $_->{version} } @{$t->mock_requests}], ['HTTP/2.0', 'HTTP/2.0'], 'esper_http2 on speaks HTTP/2 (prior knowledge)');
$t->get('/index.html');
is($t->last_call->{version}, 'HTTP/1.1', 'HTTP/1.1 by default');

is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;

done_testing;
