# What the README says the variables show where there is no decision or no
# call: `return` in an `esper on` location answers before the access phase
# (nothing is found, `-`), `esper off` is `skipped`, and $esper_action and
# $esper_latency are not found for a bypass or a decision replayed from the
# enforcement zone.
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
    esper_enforcement_zone zone=bots:1m;
    map $arg_skip $esper_skip { default 0; yes 1; }
    log_format vars '$uri result=$esper_result action=$esper_action latency=$esper_latency';
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        access_log %%DIR%%/logs/vars.log vars;
        esper on;
        esper_enforcement bots;
        esper_bypass $esper_skip;
        location = /returned { return 200 "returned\n"; }
        location = /off.html { esper off; alias %%DIR%%/html/index.html; }
        location / { }
    }
EOF

$t->get('/returned');
$t->get('/off.html');
$t->get('/index.html?skip=yes');
$t->get('/index.html');
$t->get('/index.html?mock_action=block', headers => [['User-Agent', 'bot']]);
$t->get('/index.html', headers => [['User-Agent', 'bot']]);
$t->wait_for_log('logs/vars.log', qr/(?:.*\n){6}/);
my @lines = split /\n/, $t->read_file('logs/vars.log');
is($lines[0], '/returned result=- action=- latency=-', 'return in an esper on location: nothing found');
is($lines[1], '/off.html result=skipped action=- latency=-', 'esper off: skipped');
is($lines[2], '/index.html result=bypassed action=- latency=-', 'bypassed: no action, no latency');
like($lines[3], qr{^/index\.html result=decided action=allow latency=\d+\.\d{3}$}, 'decided: action and latency');
like($lines[4], qr{^/index\.html result=decided action=block latency=\d+\.\d{3}$}, 'a block');
is($lines[5], '/index.html result=enforced action=block latency=-', 'enforced from the zone: no latency');

done_testing;
