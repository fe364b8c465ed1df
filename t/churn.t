# Lifecycle under load: five reloads during a load run lose nothing, a killed
# worker is replaced by one that decides, and 1,000 clients leaving with their
# decisions pending leave the worker's memory where it was.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use EsperTest;

my $t = EsperTest->new;
$t->start_mock('--no-record');
$t->write_file('html/index.html', "ok\n");
$t->start_nginx(<<'EOF');
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    esper_timeout 1s;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location / { esper on; }
    }
EOF

# Load from a child process while the parent reloads nginx five times.
my $statuses = $t->dir . '/statuses';
my $pid = fork // die "fork: $!";
if (!$pid) {
    open(my $out, '>', $statuses) or die;
    my $until = time + 3;
    while (time < $until) {
        my $r = eval { $t->get('/index.html?mock_delay_ms=20', timeout => 5) };
        print $out(($r ? $r->{status} : 'none') . "\n");
    }
    close $out;
    $t->{nginx} = 0;    # the parent owns nginx
    $t->{pids} = [];
    POSIX::_exit(0);
}
for (1 .. 5) {
    sleep 0.4;
    kill 'HUP', $t->nginx_pid;
}
waitpid($pid, 0);
my @got = split /\n/, $t->read_file('statuses');
cmp_ok(scalar @got, '>', 50, 'the load ran (' . scalar(@got) . ' requests)');
is(scalar(grep { $_ ne '200' } @got), 0, 'five reloads during the load: no failed request');
is(() = $t->error_log =~ /SIGHUP\) received.*reconfiguring/g, 5, 'five reloads happened');

# A worker killed with SIGKILL: the master's new worker decides.
my $deadline = time + 10;
sleep 0.05 while scalar($t->worker_pids) != 1 && time < $deadline;
my ($old) = $t->worker_pids;
kill 'KILL', $old;
$deadline = time + 5;
my $new;
while (time < $deadline) {
    ($new) = grep { $_ != $old } $t->worker_pids;
    last if $new;
    sleep 0.05;
}
ok($new, 'the master started a new worker');
my $before = $t->mock_count;
is($t->get('/index.html?mock_action=block')->{status}, 403, 'the new worker decides');
is($t->mock_count, $before + 1, 'it asked Esper');

# 1,000 clients leave while their decisions are pending.
sub rss { my ($w) = $t->worker_pids; EsperTest::rss_kb($w) }
sub abandon {
    for my $batch (1 .. $_[0] / 100) {
        my @gone = map { $t->open_request("/index.html?mock_delay_ms=300&b=$batch&n=$_") } 1 .. 100;
        sleep 0.05;
        close $_ for @gone;
    }
    sleep 0.5;
}
abandon(1000);    # warm up: the heaps grow once
my $rss_before = rss();
abandon(1000);
my $rss_after = rss();
# Under AddressSanitizer (make sanitize) RSS measures ASan's quarantine, not the worker.
cmp_ok($rss_after - $rss_before, '<', 2048, "1,000 abandoned decisions: worker RSS stable ($rss_before kB -> $rss_after kB)")
    unless $ENV{TEST_SANITIZER};
is($t->get('/index.html')->{status}, 200, 'the worker still decides');

my @serious = grep { !/worker process $old exited on signal 9/ } $t->serious_errors;
is(scalar @serious, 0, 'no alerts or crashes beyond the killed worker') or diag join "\n", @serious;
done_testing;
