# A location with esper_metrics is never judged, whatever it inherits or
# says: a scrape never reaches Esper, and is answered when Esper would block
# or is down with esper_failure_action block.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "ok\n");
my $down = EsperTest::free_port();
$t->start_nginx(<<"EOF");
    esper on;
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    esper_failure_action block;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location / { }
        location = /metrics { esper_metrics; }
        location = /metrics-on { esper_metrics; esper on; }
        location = /metrics-down {
            esper_metrics;
            esper_api_url http://127.0.0.1:$down;
        }
    }
EOF

is($t->get('/index.html?mock_action=block')->{status}, 403, 'the server is judged (esper on inherited)');
$t->mock_reset;
for my $path ('/metrics', '/metrics-on', '/metrics-down') {
    my $r = $t->get("$path?mock_action=block");
    is($r->{status}, 200, "$path: answered although Esper would block");
    like($r->{body}, qr/^esper_decisions_total\{action="block"\} 1$/m, "$path: with the counters");
}
is($t->mock_count, 0, 'Esper was never asked about a scrape');
is($t->get('/index.html')->{body}, "ok\n", 'the rest of the server is still judged');
is($t->mock_count, 1, 'and asks Esper');
is(scalar $t->serious_errors, 0, 'no alert or crash');

done_testing;
