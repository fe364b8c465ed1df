# esper_bypass: the example of docs/exceptions.md ("An example") run exactly
# as written there (only the listen port, the key, the log path and the
# upstream are filled in), then its interplay with the enforcement zone,
# monitor mode, internal redirects and inheritance.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock('--api-key', 'k');
my $app = EsperTest::free_port();

my $doc = EsperTest::slurp("$EsperTest::ROOT/docs/exceptions.md");
my ($example) = $doc =~ /^## An example\n.*?^```nginx\n(.*?)^```$/ms or BAIL_OUT('no example in docs/exceptions.md');
$example =~ s/listen 80;/listen 127.0.0.1:%%PORT%%;/ or die;
$example =~ s/esper_api_key YOUR_API_KEY;/esper_api_key k; esper_api_url http:\/\/%%MOCK%%;/ or die;
$example =~ s{/var/log/nginx/esper\.log}{%%DIR%%/logs/esper.log} or die;
$example =~ s{http://app;}{http://127.0.0.1:$app;}g or die;

my $conf = <<"EOF2";
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    esper_enforcement_zone zone=bots:1m;
$example
    server {
        listen 127.0.0.1:$app;
        access_log off;
        location / {
            return 200 "uri=\$request_uri hybrid=\$http_x_esper_hybrid_key\\n";
        }
    }
    # Beside the example: the zone, monitor mode, internal redirects.
    server {
        listen 127.0.0.1:%%PORT%%;
        server_name more;
        esper on;
        esper_api_key k;
        esper_api_url http://%%MOCK%%;
        esper_enforcement bots;
        esper_bypass \$http_x_allow;
        root %%DIR%%/html;
        location /plain/ { }
        location /monitor/ { esper_mode monitor; }
        location /redirect/ { esper_bypass 1; error_page 404 = /judged/; }
        location /judged/ { esper_bypass \$http_x_judged_bypass; }
        location /decided/ { esper_bypass 0; error_page 403 = /plain/p; esper_hybrid_key x; }
        location /metrics { esper off; esper_metrics; }
    }
EOF2
$t->write_file("html/$_", "ok\n") for qw(plain/p monitor/p judged/index.html);
$t->start_nginx($conf);
sub calls { $t->mock_count }

# The example's exceptions: none of these asks Esper, whatever it would say.
my @bypassed = (
    ['the office network',  '/page?mock_action=block', [['X-Real-IP', '192.0.2.44']]],
    ['the uptime monitor, by its address', '/page?mock_action=block', [['X-Real-IP', '198.51.100.7']]],
    ['a webhook by regex',  '/webhooks/stripe?mock_action=block', []],
    ['the other webhook',   '/webhooks/adyen?mock_action=block', []],
    ['a static file',       '/assets/app.css?mock_action=block', []],
    ['a static file deeper', '/assets/img/logo-2.png?mock_action=block', []],
    ['a static file, upper case suffix', '/assets/logo.PNG?mock_action=block', []],
);
for my $case (@bypassed) {
    my ($what, $uri, $headers) = @$case;
    my $before = calls();
    my $r = $t->get($uri, headers => $headers);
    is($r->{status}, 200, "$what: continues");
    is(calls(), $before, "$what: Esper not asked");
}
# ... and what a client can send to look like one of them: judged.
my @judged = (
    ['another network',    '/page?mock_action=block', [['X-Real-IP', '203.0.113.1']]],
    ['the monitor\'s user agent from anywhere', '/page?mock_action=block', [['User-Agent', 'UptimeRobot/2.0 evil']]],
    ['the monitor\'s user agent, exactly', '/page?mock_action=block', [['User-Agent', 'UptimeRobot/2.0']]],
    ['another agent',      '/page?mock_action=block', [['User-Agent', 'curl/8']]],
    ['another webhook',    '/webhooks/other?mock_action=block', []],
    ['below a webhook',    '/webhooks/stripe/x?mock_action=block', []],
    ['a webhook with a path parameter', '/webhooks/stripe;x?mock_action=block', []],
    ['a webhook path leading out', '/webhooks/stripe/../../api/login?mock_action=block', []],
    ['a page',             '/shop/item.html?mock_action=block', []],
    ['a suffix after a path parameter', '/api/login;.css?mock_action=block', []],
    ['a suffix as a file of its own', '/api/login/.css?mock_action=block', []],
    ['a suffix after an encoded ?', '/api/login%3F.png?mock_action=block', []],
    ['a static suffix outside /assets/', '/logo.png?mock_action=block', []],
    ['a path parameter after the suffix', '/assets/app.css;x?mock_action=block', []],
    ['an encoded ? under /assets/', '/assets/app%3F.css?mock_action=block', []],
    ['/assets/ leading out', '/assets/../api/login.css?mock_action=block', []],
    ['/assets/ leading out, encoded', '/assets/%2e%2e/api/login.css?mock_action=block', []],
    ['a suffix with more after it', '/assets/app.css.php?mock_action=block', []],
);
for my $case (@judged) {
    my ($what, $uri, $headers) = @$case;
    my $before = calls();
    is($t->get($uri, headers => $headers)->{status}, 403, "$what: asked, blocked");
    is(calls(), $before + 1, "$what: Esper asked");
}

# Still removed for a bypassed request: forged Esper headers, and the proof
# (never verified).
my $verifies = $t->mock_call('GET', '/__mock/count')->{verify};
my $r = $t->get('/assets/app.css?a=1&esper_challenge_proof=valid-1', headers => [['X-Esper-Hybrid-Key', 'forged']]);
is($r->{body}, "uri=/assets/app.css?a=1 hybrid=\n", 'proof and forged header gone from what the application sees');
is($t->mock_call('GET', '/__mock/count')->{verify}, $verifies, 'the proof was not verified');

# Logging only what Esper did not simply allow.
$t->get('/page?mock_action=allow');
$t->get('/page?mock_action=challenge');
ok($t->wait_for_log('logs/esper.log', qr/esper=decided action=challenge/), 'a challenge is logged');
my $log = $t->read_file('logs/esper.log');
unlike($log, qr/esper=bypassed|action=allow/, 'bypassed and allowed requests are not');
like($log, qr/"GET \/page\?mock_action=block HTTP\/1\.1" 403 esper=decided action=block/, 'blocks are');

# The enforcement zone does not apply to a bypassed request.
is($t->get('/plain/p?mock_action=block', host => 'more', headers => [['User-Agent', 'zb']])->{status}, 403, 'an entity blocked and remembered');
is($t->get('/plain/p?mock_action=block', host => 'more', headers => [['User-Agent', 'zb'], ['X-Allow', 'yes']])->{status}, 200,
    'bypassed though the zone remembers it');
is($t->get('/plain/p', host => 'more', headers => [['User-Agent', 'zb'], ['X-Allow', '0']])->{status}, 403, '"0" does not bypass');
is($t->get('/plain/p', host => 'more', headers => [['User-Agent', 'zb'], ['X-Allow', '']])->{status}, 403, 'nor does an empty value');

# Monitor mode: a bypassed request is not asked either.
my $before = calls();
is($t->get('/monitor/p?mock_action=block', host => 'more', headers => [['X-Allow', '1']])->{status}, 200, 'monitor: bypassed');
is(calls(), $before, 'monitor: not asked');
is($t->get('/monitor/p?mock_action=block', host => 'more')->{status}, 200, 'monitor: not bypassed, asked, not enforced');
is(calls(), $before + 1, 'monitor: asked once');

# Internal redirects: a bypass never leaks into another location.
$before = calls();
is($t->get('/redirect/missing?mock_action=block', host => 'more')->{status}, 403,
    'bypassed in /redirect/, redirected to /judged/: judged there and blocked');
is(calls(), $before + 1, 'asked once, in /judged/');
is($t->get('/redirect/missing?mock_action=block', host => 'more', headers => [['X-Judged-Bypass', '1']])->{status}, 200,
    'and bypassed there when /judged/ bypasses it');
$before = calls();
is($t->get('/decided/x?mock_action=block', host => 'more', headers => [['User-Agent', 'decided']])->{status}, 200, 'decided (block), then error_page to another esper location');
is(calls(), $before + 1, 'a decided request is never judged twice');

# Metrics.
like($t->get('/metrics', host => 'more')->{body}, qr/^esper_requests_total\{result="bypassed"\} (\d+)$/m, 'bypassed requests counted');
my ($n) = $t->get('/metrics', host => 'more')->{body} =~ /^esper_requests_total\{result="bypassed"\} (\d+)$/m;
cmp_ok($n, '>=', 9, "counted by that result ($n)");
is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;

# Inheritance at nginx -t: every level, a location's list replaces the server's.
my ($status, $output) = $t->test_config(<<'EOF2');
    esper_api_key k;
    esper_bypass $http_x_a;
    server {
        listen 127.0.0.1:%%PORT%%;
        esper on;
        esper_bypass $http_x_b $cookie_staff;
        location / { esper_bypass $http_x_c; }
        location /inherit/ { }
    }
EOF2
is($status, 0, 'esper_bypass at http, server and location passes nginx -t') or diag $output;
($status, $output) = $t->test_config("server { listen 127.0.0.1:%%PORT%%; location / { esper_bypass; } }");
like($output, qr/invalid number of arguments in "esper_bypass" directive in .*:\d+/, 'esper_bypass needs a value');
($status, $output) = $t->test_config("server { listen 127.0.0.1:%%PORT%%; location / { esper_bypass \$no_such_thing; } }");
like($output, qr/unknown "no_such_thing" variable/, 'unknown variables fail nginx -t');
done_testing;
