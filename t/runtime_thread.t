# The runtime thread of a worker ("esper") blocks every signal, as the
# threads of nginx's own thread pools do: reload, stop and child-exit
# signals reach the nginx thread only. A worker still reloads and stops
# promptly, and decides after the reload.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "ok\n");
my $http = <<'EOF_CONF';
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location / { esper on; }
    }
EOF_CONF
$t->start_nginx($http);
is($t->get('/index.html?mock_action=allow')->{status}, 200, 'decided');

# Signals a worker gets: HUP, INT, QUIT, USR1, USR2, ALRM, TERM, CHLD, WINCH, IO.
my @signals = (1, 2, 3, 10, 12, 14, 15, 17, 28, 29);

sub threads_of {
    my ($pid) = @_;
    my %mask;
    for my $task (glob "/proc/$pid/task/*") {
        my $status = EsperTest::slurp("$task/status");
        my ($name) = $status =~ /^Name:\s+(\S+)/m;
        my ($blocked) = $status =~ /^SigBlk:\s+([0-9a-f]+)/m;
        # Signals 1 to 32 are the last 8 hex digits.
        push @{$mask{$name}}, hex(substr($blocked // "0", -8));
    }
    return \%mask;
}

sub blocks_all {
    my ($mask) = @_;
    for my $sig (@signals) { return 0 unless $mask & (1 << ($sig - 1)) }
    return 1;
}

for my $round ('started', 'reloaded') {
    my ($worker) = $t->worker_pids;
    my $threads = threads_of($worker);
    ok($threads->{esper}, "$round: the worker has its esper thread");
    ok(blocks_all($_), sprintf("$round: the esper thread blocks every signal (SigBlk %x)", $_)) for @{$threads->{esper} || []};
    my @main = @{$threads->{nginx} || []};
    ok(@main && !blocks_all($main[0]), "$round: the nginx thread does not");
    last if $round eq 'reloaded';
    my $master = $t->nginx_pid;
    kill 'HUP', $master;
    my $deadline = time + 10;
    sleep 0.1 while kill(0, $worker) && time < $deadline;
    ok(!kill(0, $worker), 'the old worker exited on reload');
    $deadline = time + 5;
    sleep 0.05 until ($t->worker_pids)[0] || time > $deadline;
}
is($t->get('/index.html?mock_action=block')->{status}, 403, 'the new worker decides');
is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
