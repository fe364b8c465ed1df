# The one HTTP/2 connection to Esper going silent without a FIN or a reset
# (a NAT or load balancer that dropped it): the module pings it, gives it up
# when the ping goes unanswered, and the next calls go out on a new
# connection, rather than every call waiting out its deadline on it for good.
# A relay between nginx and the mock freezes the connections it has when
# told to (they stay open, nothing passes) and serves new ones normally.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
my $dir = $t->dir;
my $freeze = "$dir/freeze";
my $accepts = "$dir/accepts";

my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 16, ReuseAddr => 1)
    or die "relay: $!";
my $relay_port = $listen->sockport;
my $relay = fork // die "fork: $!";
if (!$relay) {
    # peer of each socket; frozen sockets are kept open and never served.
    my (%peer, %frozen);
    my $count = 0;
    my $select = IO::Select->new($listen);
    my $deadline = time + 120;
    while (time < $deadline) {
        if (-e $freeze && !%frozen && %peer) {
            for my $s (values %peer) { $frozen{$s} = 1; $select->remove($s) }
        }
        for my $s ($select->can_read(0.05)) {
            if ($s == $listen) {
                my $client = $listen->accept or next;
                my $mock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->mock_port) or next;
                @peer{$client, $mock} = ($mock, $client);
                $select->add($client, $mock);
                if (open(my $fh, '>', $accepts)) { print $fh ++$count; close $fh }
                next;
            }
            my $n = sysread($s, my $buf, 65536);
            if (!$n) {
                my $other = $peer{$s};
                $select->remove($s, $other);
                close $_ for $s, $other;
                delete @peer{$s, $other};
                next;
            }
            syswrite($peer{$s}, $buf);
        }
    }
    exit 0;
}
close $listen;

$t->write_file('html/index.html', "ok\n");
$t->start_nginx(<<"EOF");
    esper_api_key test-key;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location /h2/ {
            esper on;
            esper_http2 on;
            esper_api_url http://127.0.0.1:$relay_port;
            esper_timeout 300ms;
            esper_failure_action block;
            esper_circuit_breaker off;
            alias %%DIR%%/html/;
        }
    }
EOF

sub accepted { my $n = $t->read_file('accepts'); return $n eq '' ? 0 : $n }

is($t->get('/h2/index.html?mock_action=allow')->{status}, 200, 'decided through the relay');
is(accepted(), 1, 'on one connection');

$t->write_file('freeze', '');
sleep 0.2;
is($t->get('/h2/index.html?mock_action=allow')->{status}, 403, 'the connection is silent: the call times out');

# Pinged after 10 s without a frame, given up 5 s later: well within 25 s.
my $started = time;
my $status = 0;
while (time - $started < 25) {
    $status = $t->get('/h2/index.html?mock_action=allow')->{status};
    last if $status == 200;
    sleep 0.5;
}
is($status, 200, 'decided again on a new connection');
cmp_ok(time - $started, '<', 20, 'within the ping interval and timeout');
is(accepted(), 2, 'one new connection');
is(scalar $t->serious_errors, 0, 'no alerts or crashes');

kill 'TERM', $relay;
waitpid $relay, 0;
done_testing;
