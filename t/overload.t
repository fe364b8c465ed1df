# Protecting the site from a sick Esper: esper_max_pending caps the decisions
# in flight per worker, and a dead Esper does not flood the error log.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
my $dead = EsperTest::free_port();
$t->write_file('html/index.html', "ok\n");
my $conf = <<'EOF';
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    esper_timeout 2s;
    log_format esper '$request_uri $status $esper_result';
    access_log %%DIR%%/logs/esper.log esper;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location /capped/ { esper on; esper_max_pending 5; esper_failure_action block; alias %%DIR%%/html/; }
        location /dead/ {
            esper on;
            esper_api_url http://127.0.0.1:%%DEAD%%;
            esper_circuit_breaker off;    # every request tries the dead Esper
            alias %%DIR%%/html/;
        }
    }
EOF
$conf =~ s/%%DEAD%%/$dead/g;
$t->start_nginx($conf);

# Five decisions held by the mock fill the cap; the sixth is not asked.
my @held = map { $t->open_request("/capped/index.html?mock_delay_ms=800&n=$_") } 1 .. 5;
my $deadline = time + 5;
sleep 0.02 while $t->mock_count < 5 && time < $deadline;
my $r = $t->get('/capped/index.html?over=1');
is($r->{status}, 403, 'beyond esper_max_pending: the failure action at once');
cmp_ok($r->{elapsed}, '<', 0.2, 'without waiting');
is($t->mock_count, 5, 'Esper was not asked');
like($t->error_log, qr/esper decision failed: 5 decisions already pending \(esper_max_pending\), Esper not asked; failure action block/,
    'logged with the reason');
my @answers = map { EsperTest::read_all($_, 5) } @held;
is(scalar(grep { $_->{status} == 200 } @answers), 5, 'the held decisions are answered');
is($t->get('/capped/index.html')->{status}, 200, 'below the cap again: decided');

# A dead Esper: 300 failing requests in about a second write a bounded number of lines.
my $before = () = $t->error_log =~ /esper decision failed/g;
my $started = time;
$t->get('/dead/index.html') for 1 .. 300;
my $seconds = time - $started;
my $lines = (() = $t->error_log =~ /esper decision failed/g) - $before;
cmp_ok($lines, '<=', 10 * (int($seconds) + 2), "at most 10 failure lines a second ($lines in ${seconds}s)");
cmp_ok($lines, '>=', 1, 'failures are still logged');
sleep 1.1;
$t->get('/dead/index.html');
like($t->error_log, qr/esper decision failed: request failed: .* \((\d+) similar lines left out\)/, 'the next line counts what was left out');
my $logged = () = $t->read_file('logs/esper.log') =~ m{^/dead/index\.html 200 error$}mg;
is($logged, 301, 'every request got the failure action, logged or not');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
