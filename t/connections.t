# Connections to Esper: a worker opens no more HTTP/1.1 connections than it
# has calls in flight at once and reuses them, one HTTP/2 connection carries
# every call, a connection Esper closed while idle costs no call (it is sent
# again on a new connection), and calls given up leave none open.
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
    esper_timeout 5s;
    esper_failure_action block;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location /h1/ { esper on; alias %%DIR%%/html/; }
        location /h2/ { esper on; esper_http2 on; alias %%DIR%%/html/; }
    }
EOF

# The connections (client ports) the mock saw the calls on, from call $from on.
sub peers_of {
    my ($from) = @_;
    my @calls = @{ $t->mock_requests };
    return map { $_->{peer} } @calls[$from .. $#calls];
}
sub distinct { my %seen; return grep { !$seen{$_}++ } @_ }

sub held_at_once {
    my ($location, $n, $tag) = @_;
    my $before = $t->mock_count;
    my @open = map { $t->open_request("/$location/index.html?mock_delay_ms=400&$tag=$_") } 1 .. $n;
    my $deadline = time + 5;
    sleep 0.02 while $t->mock_count < $before + $n && time < $deadline;
    is($t->mock_count, $before + $n, "$n calls held by the mock at once ($location)");
    my @answers = map { EsperTest::read_all($_, 10) } @open;
    is(scalar(grep { $_->{status} == 200 } @answers), $n, "all $n answered 200 ($location)");
}

# HTTP/1.1: six calls at once need six connections; the calls after them
# reuse those, one at a time.
held_at_once('h1', 6, 'held');
my @held = distinct(peers_of(0));
is(scalar @held, 6, 'six calls in flight: six connections');
for (1 .. 10) {
    is($t->get("/h1/index.html?seq=$_")->{status}, 200, "sequential call $_ answered");
}
my @sequential = distinct(peers_of(6));
is(scalar @sequential, 1, 'ten sequential calls share one connection');
ok((grep { $_ eq $sequential[0] } @held), 'and it is one of the six already open');

# The five connections the sequential calls left unused are a burst's
# surplus: closed after 5 s idle; the one in use stays.
my $open = sub { $t->mock_call('GET', '/__mock/count')->{connections} - 1 };
is($open->(), 6, 'six connections open after the burst');
my $deadline = time + 10;
sleep 0.25 while $open->() > 1 && time < $deadline;
is($open->(), 1, 'the five unused ones are closed within seconds, one stays');
is($t->get('/h1/index.html?seq=kept')->{status}, 200, 'the next call is answered');
my @kept = distinct(peers_of(16));
is_deeply(\@kept, \@sequential, 'on the connection that stayed');

# Three calls at once again: one from the pool, two opened.
held_at_once('h1', 3, 'again');
my @again = distinct(peers_of(17));
is(scalar @again, 3, 'three calls in flight on three connections');
is(scalar(grep { my $p = $_; grep { $_ eq $p } @held } @again), 1, 'one of them from the pool');

# Esper closes its idle connections (as a server's keepalive timeout does).
# The next calls must not fail: once the close is seen, or while it is still
# on its way, the call goes on a new connection.
$t->mock_call('POST', '/__mock/close-idle');
my @after = map { $t->get("/h1/index.html?after_close=$_")->{status} } 1 .. 5;
is_deeply(\@after, [(200) x 5], 'calls right after Esper closed the idle connections are answered');
sleep 0.3;
$t->mock_call('POST', '/__mock/close-idle');
sleep 0.3;
is($t->get('/h1/index.html?later=1')->{status}, 200, 'and after the close has been seen');
my @closed = (@held, @again, (peers_of(20))[0 .. 4]);
my ($later) = peers_of(25);
ok(!(grep { $_ eq $later } @closed), 'on a new connection');
unlike($t->error_log, qr/esper decision failed/, 'no call failed');

# HTTP/2: one connection for many calls at once, and for the calls after.
my $first_h2 = scalar @{ $t->mock_requests };
held_at_once('h2', 8, 'h2');
is($t->get('/h2/index.html?seq=h2')->{status}, 200, 'a call after them');
my @h2 = distinct(peers_of($first_h2));
is(scalar @h2, 1, 'esper_http2 on: nine calls, one connection');
like(($t->mock_requests->[-1]{version} // ''), qr/HTTP\/2/, 'spoken over HTTP/2');

# Esper closes the HTTP/2 connection: the next call opens a new one.
$t->mock_call('POST', '/__mock/close-idle');
sleep 0.3;
is($t->get('/h2/index.html?after_close=h2')->{status}, 200, 'a call after Esper closed the HTTP/2 connection');
my ($last_peer) = peers_of(scalar(@{ $t->mock_requests }) - 1);
isnt($last_peer, $h2[0], 'on a new connection');
unlike($t->error_log, qr/esper decision failed/, 'no call failed');


# Calls whose clients went away, while Esper still holds them, leave no
# connection behind: a call given up is cancelled and its connection closed.
my $connections = sub { $t->mock_call('GET', '/__mock/count')->{connections} };
my $before = $connections->();
for my $location ('h1', 'h2') {
    my $calls = $t->mock_count;
    my @gone = map { $t->open_request("/$location/index.html?mock_hang=1&gone=$_") } 1 .. 10;
    my $until = time + 5;
    sleep 0.02 while $t->mock_count < $calls + 10 && time < $until;
    is($t->mock_count, $calls + 10, "$location: ten calls held by Esper");
    close $_ for @gone;
}
$deadline = time + 5;
sleep 0.1 while $connections->() > $before && time < $deadline;
cmp_ok($connections->(), '<=', $before, "no connection left open for the calls given up ($before before)");
is($t->get('/h1/index.html?after_gone=1')->{status}, 200, 'HTTP/1.1 calls go on');
is($t->get('/h2/index.html?after_gone=1')->{status}, 200, 'HTTP/2 calls go on');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
