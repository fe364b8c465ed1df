# Connecting to a name with more than one address. The name resolves (a
# private /etc/hosts, bind-mounted in a mount namespace of nginx's own) to
# a blackholed address first (::1, a listener whose backlog is full, so
# SYNs go unanswered) and a live one second (the mock on 127.0.0.1): the
# first call costs one attempt delay (250 ms), not its 1 s deadline; once an
# address worked it is tried first. When the name moves to another
# address, calls follow it within the cache's 30 s, without a reload.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use IO::Socket::IP;
use Socket qw(AF_INET6 SOCK_STREAM SOL_SOCKET SO_REUSEADDR pack_sockaddr_in6 inet_pton);
use Time::HiRes qw(time sleep);
use EsperTest;

# The private hosts file needs a mount namespace: without one this test
# fails rather than skips, so that a run where it proved nothing is seen.
my ($rc) = EsperTest::capture('unshare', '-m', 'true');
if ($rc) {
    fail('mount namespaces (unshare -m) are available: make test runs as root, as CONTRIBUTING.md says');
    done_testing;
    exit;
}

my $t = EsperTest->new;
my $dir = $t->dir;

# A port free on both loopback addresses.
my ($port, $blackhole);
for (1 .. 20) {
    $port = EsperTest::free_port();
    socket($blackhole, AF_INET6, SOCK_STREAM, 0) or die "socket: $!";
    setsockopt($blackhole, SOL_SOCKET, SO_REUSEADDR, 1);
    last if bind($blackhole, pack_sockaddr_in6($port, inet_pton(AF_INET6, '::1')));
    close $blackhole;
    undef $blackhole;
}
die "no port free on ::1 and 127.0.0.1\n" unless $blackhole;
listen($blackhole, 0) or die "listen: $!";
# The one connection a backlog of 0 queues; the next SYNs are dropped.
my $filler = IO::Socket::IP->new(PeerHost => '::1', PeerPort => $port, Timeout => 2) or die "filler: $!";
my $probe = IO::Socket::IP->new(PeerHost => '::1', PeerPort => $port, Timeout => 0.5);
ok(!$probe, '::1 is blackholed: a connection attempt goes unanswered');

$t->start_mock('--listen', "127.0.0.1:$port");
my $hosts = $t->write_file('hosts', "::1 esper.test\n127.0.0.1 esper.test\n");
my $real = EsperTest::nginx_binary();
my $wrapper = $t->write_file('nginx-ns.sh', <<"EOF_SH");
#!/bin/sh
exec unshare -m sh -c 'mount --bind "\$0" /etc/hosts && exec "\$@"' $hosts $real "\$@"
EOF_SH
chmod 0755, $wrapper;
local $ENV{TEST_NGINX_BINARY} = $wrapper;

$t->write_file('html/index.html', "ok\n");
$t->start_nginx(<<"EOF_CONF");
    esper_api_key test-key;
    esper_timeout 1s;
    esper_failure_action block;
    esper_circuit_breaker off;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location /h1/ { esper on; esper_http2 off; esper_api_url http://esper.test:$port; alias %%DIR%%/html/; }
        location /h2/ { esper on; esper_http2 on; esper_api_url http://esper.test:$port; alias %%DIR%%/html/; }
    }
EOF_CONF

my $r = $t->get('/h1/index.html?mock_action=allow');
is($r->{status}, 200, 'HTTP/1.1: decided although the first address is blackholed');
cmp_ok($r->{elapsed}, '>=', 0.24, sprintf('after one attempt delay (%.3f s)', $r->{elapsed}));
cmp_ok($r->{elapsed}, '<', 0.8, 'well within the 1 s deadline');

$t->mock_call('POST', '/__mock/close-idle');
sleep 0.3;
$r = $t->get('/h1/index.html?mock_action=allow');
is($r->{status}, 200, 'a new connection after Esper closed the pooled one');
cmp_ok($r->{elapsed}, '<', 0.2, sprintf('goes to the address that worked first (%.3f s)', $r->{elapsed}));

# Another client profile: connections of its own, tried in the same way.
$r = $t->get('/h2/index.html?mock_action=block');
is($r->{status}, 403, 'HTTP/2: decided (block) past the blackholed address');
cmp_ok($r->{elapsed}, '<', 0.8, sprintf('within the deadline (%.3f s)', $r->{elapsed}));

# The name moves to 127.0.0.3, where a second mock listens.
my $other_out;
my $other = open($other_out, '-|', EsperTest::mock_binary(), '--listen', "127.0.0.3:$port") // die "mock: $!";
# Stopped even when the test dies: closing its pipe waits for it.
END { kill 'TERM', $other if $other }
my $line = <$other_out>;
like($line, qr/listening on 127\.0\.0\.3:$port/, 'second mock on 127.0.0.3');
open(my $fh, '+<', $hosts) or die "hosts: $!";
truncate($fh, 0);
print $fh "127.0.0.3 esper.test\n";
close $fh;

sub other_count {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.3', PeerPort => $port, Timeout => 2) or return -1;
    print $s "GET /__mock/count HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n";
    my $answer = EsperTest::read_all($s, 2);
    return $answer->{body} =~ /"runtime":(\d+)/ ? $1 : -1;
}

my $started = time;
my $moved = 0;
while (time - $started < 40) {
    $t->mock_call('POST', '/__mock/close-idle');
    sleep 0.5;
    $t->get('/h1/index.html?mock_action=allow');
    if (other_count() > 0) { $moved = 1; last }
}
ok($moved, sprintf('calls follow the new address without a reload (after %.1f s)', time - $started));
cmp_ok(time - $started, '<', 35, 'within the cache lifetime of 30 s');
is(EsperTest::slurp('/etc/hosts') =~ /esper\.test/ ? 1 : 0, 0, "the host's /etc/hosts was never touched");

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
kill 'TERM', $other;
close $other_out;
close $filler;
done_testing;
