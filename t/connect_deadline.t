# A peer that accepts TCP connections and then never answers (a wedged TLS
# handshake): each call gets the failure action at its own deadline, and
# every socket the module opened there is closed within the connect
# deadline (5 s), over HTTP/1.1 and HTTP/2, rather than staying open for as
# long as the peer keeps it.
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

# The wedged peer: accepts, never writes, and records how many sockets it
# accepted and how many of them the module closed (EOF or reset).
my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 64, ReuseAddr => 1)
    or die "wedged peer: $!";
my $wedged = $listen->sockport;
my $peer = fork // die "fork: $!";
if (!$peer) {
    my $select = IO::Select->new($listen);
    my ($accepted, $closed) = (0, 0);
    my $deadline = time + 60;
    while (time < $deadline) {
        for my $s ($select->can_read(0.05)) {
            if ($s == $listen) {
                my $client = $listen->accept or next;
                $select->add($client);
                $accepted++;
            } elsif (!sysread($s, my $buf, 65536)) {
                $select->remove($s);
                close $s;
                $closed++;
            }
            # Bytes the client sent (its TLS hello) are read and never answered.
        }
        if (open(my $fh, '>', "$dir/peer.tmp")) {
            print $fh "$accepted $closed";
            close $fh;
            rename "$dir/peer.tmp", "$dir/peer";
        }
    }
    exit 0;
}
close $listen;

$t->write_file('html/index.html', "ok\n");
$t->start_nginx(<<"EOF");
    esper_api_key test-key;
    esper_api_url https://127.0.0.1:$wedged;
    esper_timeout 200ms;
    esper_failure_action block;
    esper_circuit_breaker off;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location /h1/ { esper on; esper_http2 off; alias %%DIR%%/html/; }
        location /h2/ { esper on; esper_http2 on; alias %%DIR%%/html/; }
    }
EOF

sub peer {
    my $line = $t->read_file('peer');
    my ($accepted, $closed) = split ' ', $line;
    return ($accepted // 0, $closed // 0);
}

for my $version (qw(h1 h2)) {
    my $start = time;
    my @status = map { $t->get("/$version/index.html?mock_action=allow")->{status} } 1 .. 5;
    is_deeply(\@status, [(403) x 5], "$version: each call gets the failure action");
    cmp_ok(time - $start, '<', 3, "$version: at its own deadline");
}
sleep 0.5;
my ($accepted) = peer();
cmp_ok($accepted, '>=', 2, 'the module connected to the wedged peer') or diag "accepted $accepted";

# Within the 5 s connect deadline (and a margin), every socket is closed.
my $until = time + 9;
my ($now_accepted, $closed) = peer();
while (time < $until) {
    ($now_accepted, $closed) = peer();
    last if $closed == $now_accepted;
    sleep 0.2;
}
is($closed, $now_accepted, 'every socket to the wedged peer is closed by the connect deadline')
    or diag "accepted $now_accepted, closed $closed";

kill 'TERM', $peer;
waitpid $peer, 0;
done_testing;
