# The circuit breaker: after repeated failures the module stops asking Esper
# for the cooldown and applies the failure action at once; then one request
# probes, and the breaker closes when Esper answers. Each change is logged once.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "ok\n");
$t->start_nginx(<<'EOF');
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    log_format esper '$request_uri $status $esper_result';
    access_log %%DIR%%/logs/esper.log esper;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location / {
            esper on;
            esper_failure_action block;
            esper_circuit_breaker failures=3 window=10s cooldown=1s;
        }
    }
EOF

sub warnings_matching { my ($re) = @_; return scalar(() = $t->error_log =~ /$re/g) }

# Three failures within the window open the breaker.
is($t->get("/index.html?mock_status=500&n=$_")->{status}, 403, "failure $_: failure action") for 1 .. 3;
is($t->mock_count, 3, 'the failures reached Esper');
my $r = $t->get('/index.html?n=4');
is($r->{status}, 403, 'open: the failure action without asking');
is($t->mock_count, 3, 'open: Esper is not asked');
like($t->error_log, qr/esper decision failed: circuit breaker open, Esper not asked; failure action block/, 'open: logged as such');
is(warnings_matching(qr/\[warn\].*esper circuit breaker open for http:\/\/127\.0\.0\.1:\d+\/api\/v1\/runtime\/mitigation: 3 failures within 10000 ms/), 1,
    'the opening is logged once');
$t->get("/index.html?n=$_") for 5 .. 8;
is($t->mock_count, 3, 'still open during the cooldown');
is(warnings_matching(qr/esper circuit breaker open for/), 1, 'still one warning');

# After the cooldown one request probes; a failed probe opens it again.
sleep 1.1;
is($t->get('/index.html?mock_status=503&probe=1')->{status}, 403, 'failed probe: failure action');
is($t->mock_count, 4, 'the probe reached Esper');
like($t->error_log, qr/\[warn\].*esper circuit breaker half-open for .*: one request probes Esper/, 'half-open logged');
like($t->error_log, qr/\[warn\].*esper circuit breaker open again for .*: the probe failed/, 'reopening logged');
$t->get('/index.html?n=9');
is($t->mock_count, 4, 'open again: Esper is not asked');

# A successful probe closes it; decisions are made again.
sleep 1.1;
is($t->get('/index.html?probe=2')->{status}, 200, 'successful probe: decided (allow)');
like($t->error_log, qr/\[warn\].*esper circuit breaker closed for .*: Esper answered the probe/, 'closing logged');
is($t->get('/index.html?mock_action=block')->{status}, 403, 'closed: decisions apply again');
is($t->mock_count, 6, 'closed: every request asks Esper');
like($t->read_file('logs/esper.log'), qr{^/index\.html\?mock_action=block 403 decided$}m, 'and is logged as decided');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
