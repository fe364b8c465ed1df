# esper_metrics: the Prometheus text of counters shared by all workers, kept
# across reloads.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "ok\n");
my $conf = <<'EOF';
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    esper_timeout 200ms;
    server {
        location /held/ { esper on; esper_timeout 2s; alias %%DIR%%/html/; }
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location / { esper on; }
        location /off/ { alias %%DIR%%/html/; }
        # Its own endpoint (another name for the mock), so its breaker is its own.
        location /fragile/ {
            esper on;
            esper_api_url http://localhost:%%MOCKPORT%%;
            esper_circuit_breaker failures=1 cooldown=1m;
            alias %%DIR%%/html/;
        }
        location = /metrics { esper_metrics; }
    }
EOF
my $mock_port = $t->mock_port;
$conf =~ s/%%MOCKPORT%%/$mock_port/g;
$t->start_nginx($conf, workers => 2);

sub scrape {
    my $r = $t->get('/metrics');
    my %m;
    for (split /\n/, $r->{body}) {
        next if /^#/;
        my ($k, $v) = /^(\S+) (\S+)$/ or next;
        $m{$k} = $v;
    }
    return ($r, \%m);
}

my ($r, $m) = scrape();
is($r->{status}, 200, 'the metrics location answers');
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4}, 'Prometheus text format');
like($r->{body}, qr/^# TYPE esper_decisions_total counter$/m, 'with TYPE lines');
is($m->{'esper_requests_total{result="skipped"}'}, 1, 'the scrape itself is not judged');

$t->get('/index.html') for 1 .. 3;
$t->get('/index.html?mock_action=block') for 1 .. 2;
$t->get('/index.html?mock_action=challenge');
$t->get('/index.html?mock_action=block&mock_hang=1');
$t->get('/index.html?mock_status=500');
$t->get('/off/index.html') for 1 .. 2;
$t->get('/index.html?esper_challenge_proof=valid-1');
# Each worker's breaker opens on the first failure it sees.
$t->get('/fragile/index.html?mock_status=503') for 1 .. 12;

# One failure opens a worker's breaker: one call per worker got through.
my $fragile_calls = $t->mock_count - 8;
ok($fragile_calls >= 1 && $fragile_calls <= 2, "the fragile endpoint was called by $fragile_calls worker(s)");

# Twenty scrapes land on both workers; each sees the same, summed numbers.
my %seen;
for (1 .. 20) {
    ($r, $m) = scrape();
    my %copy = %$m;
    delete $copy{'esper_requests_total{result="skipped"}'};
    $seen{join ',', map { "$_=$copy{$_}" } sort keys %copy}++;
}
is(scalar keys %seen, 1, 'every worker serves the same numbers');
my %expect = (
    'esper_decisions_total{action="allow"}'     => 3,
    'esper_decisions_total{action="block"}'     => 2,
    'esper_decisions_total{action="challenge"}' => 1,
    'esper_requests_total{result="decided"}'    => 6,
    'esper_requests_total{result="timeout"}'    => 1,
    'esper_requests_total{result="error"}'      => 13,
    'esper_requests_total{result="pass"}'       => 1,
    'esper_errors_total{reason="status"}'       => 1 + $fragile_calls,
    'esper_errors_total{reason="circuit_open"}' => 12 - $fragile_calls,
    'esper_circuit_breakers_open'               => $fragile_calls,
    'esper_pending'                             => 0,
    'esper_decision_duration_seconds_count'     => 8 + $fragile_calls,
);
is($m->{$_}, $expect{$_}, $_) for sort keys %expect;
is($m->{'esper_requests_total{result="skipped"}'}, 1 + 2 + 20, 'skipped: esper off requests and the scrapes');
cmp_ok($m->{'esper_decision_duration_seconds_bucket{le="0.25"}'}, '>=', 9, 'the timeout falls in the 250 ms bucket');
is($m->{'esper_decision_duration_seconds_bucket{le="+Inf"}'}, 8 + $fragile_calls, 'histogram +Inf equals the count');

# Pending decisions are a gauge over all workers.
my $calls = $t->mock_count;
my @held = map { $t->open_request("/held/index.html?mock_delay_ms=500&n=$_") } 1 .. 4;
my $deadline = time + 3;
sleep 0.01 while $t->mock_count < $calls + 4 && time < $deadline;
(undef, $m) = scrape();
is($m->{esper_pending}, 4, 'four decisions pending');
EsperTest::read_all($_, 5) for @held;
(undef, $m) = scrape();
is($m->{esper_pending}, 0, 'none pending once answered');

# A reload keeps the counters.
my $allowed = $m->{'esper_decisions_total{action="allow"}'};
my @old = $t->worker_pids;
kill 'HUP', $t->nginx_pid;
$deadline = time + 10;
sleep 0.05 while grep({ kill 0, $_ } @old) && time < $deadline;
(undef, $m) = scrape();
is($m->{'esper_decisions_total{action="allow"}'}, $allowed, 'counters survive a reload');
is($m->{esper_circuit_breakers_open}, 0, 'the breakers of exited workers are no longer counted');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
