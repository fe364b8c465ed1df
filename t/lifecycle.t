# The runtime lives in worker processes: it starts in each worker, survives
# reloads, and a graceful shutdown answers every pending decision first and
# leaves nothing open behind.
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
    esper_api_key test-key;
    esper_timeout 2s;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location / { esper on; }
    }
EOF
my $master = $t->nginx_pid;
my @threads = grep { /esper/ } `ps -T -p $master -o comm=`;
is(scalar @threads, 0, 'the master process runs no Esper runtime');
my ($worker) = $t->worker_pids;
@threads = grep { /esper/ } `ps -T -p $worker -o comm=`;
is(scalar @threads, 1, 'each worker runs one Esper runtime thread');

# Reload while decisions are pending: the old worker finishes them.
my @pending = map { $t->open_request("/index.html?mock_delay_ms=400&n=$_") } 1 .. 10;
sleep 0.1;
kill 'HUP', $master;
ok($t->wait_for_log('logs/error.log', qr/start worker process/, 5), 'reloaded');
my @answers = map { EsperTest::read_all($_, 5) } @pending;
is(scalar(grep { $_->{status} == 200 } @answers), 10, 'decisions pending across a reload are answered');
my $deadline = time + 5;
sleep 0.05 while kill(0, $worker) && time < $deadline;
ok(!kill(0, $worker), 'the old worker exited');
is($t->get('/index.html')->{status}, 200, 'the new worker decides');

# Graceful shutdown with decisions pending: each is answered before exit.
@pending = map { $t->open_request("/index.html?mock_delay_ms=500&q=$_") } 1 .. 10;
sleep 0.1;
my $started = time;
$t->stop_nginx;
@answers = map { EsperTest::read_all($_, 5) } @pending;
is(scalar(grep { $_->{status} == 200 } @answers), 10, 'QUIT: every pending decision is answered');
cmp_ok(time - $started, '<', 3, 'and nginx exits once they are done');

my $log = $t->error_log;
unlike($log, qr/open socket #\d+ left/, 'no descriptor left open at exit');
like($log, qr/worker process \d+ exited with code 0/, 'workers exit cleanly');
is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;


# Two workers, calls Esper never answers, a reload: `worker_shutdown_timeout`
# bounds how long the old workers wait for them, over HTTP/1.1 and HTTP/2;
# nothing is left open and the new workers have no pending call.
for my $http2 ('off', 'on') {
    my $s = EsperTest->new(name => "lifecycle-shutdown-$http2");
    $s->start_mock;
    $s->write_file('html/index.html', "ok\n");
    $s->start_nginx(<<"EOF", workers => 2, main => 'worker_shutdown_timeout 1s;');
    esper_api_url http://%%MOCK%%;
    esper_api_key test-key;
    esper_timeout 10s;
    esper_http2 $http2;
    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        root %%DIR%%/html;
        location / { esper on; }
        location = /metrics { esper_metrics; }
    }
EOF
    my @old = $s->worker_pids;
    my @held = map { $s->open_request("/index.html?mock_hang=1&n=$_") } 1 .. 20;
    my $deadline = time + 5;
    sleep 0.05 while $s->mock_count < 20 && time < $deadline;
    is($s->mock_count, 20, "esper_http2 $http2: 20 calls held by Esper");
    my $started = time;
    kill 'HUP', $s->nginx_pid;
    sleep 0.05 while (grep { kill 0, $_ } @old) && time - $started < 5;
    my $took = time - $started;
    cmp_ok($took, '<', 2, sprintf("esper_http2 $http2: the old workers exit after worker_shutdown_timeout (%.1f s)", $took));
    close $_ for @held;
    is($s->get('/index.html')->{status}, 200, "esper_http2 $http2: the new workers decide");
    like($s->get('/metrics')->{body}, qr/^esper_pending 0$/m, "esper_http2 $http2: nothing pending in them");
    $s->stop_nginx;
    unlike($s->error_log, qr/open socket #\d+ left/, "esper_http2 $http2: no descriptor left open");
    is(scalar $s->serious_errors, 0, "esper_http2 $http2: no alerts or crashes") or diag join "\n", $s->serious_errors;
}

done_testing;
