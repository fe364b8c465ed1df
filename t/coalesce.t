# Under load (128 calls or more in flight) the runtime thread gathers answers
# before it sleeps on its sockets. Over HTTP/1.1 (a connection per call) and
# HTTP/2 (a server allowing 100 streams, so the calls share 2 or 3
# connections): 200 calls held at once all come back, each with its own
# decision, and once they are done a lone call is no slower than before the
# burst (the count of calls in flight went back down).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use EsperTest;

my $t = EsperTest->new;
$t->start_mock('--max-streams', '100');
$t->write_file('html/index.html', "ok\n");
$t->start_nginx(<<'EOF_CONF');
    esper_api_url http://%%MOCK%%;
    esper_api_key test-key;
    esper_timeout 5s;
    server {
        listen 127.0.0.1:%%PORT%%;
        location /h1/ { esper on; esper_http2 off; alias %%DIR%%/html/; }
        location /h2/ { esper on; esper_http2 on; alias %%DIR%%/html/; }
    }
EOF_CONF

my $lone_calls = 31;
my $held = 200;

sub median_lone_call {
    my ($location) = @_;
    my @took = sort { $a <=> $b } map {
        my $r = $t->get("/$location/index.html");
        die "lone call answered $r->{status}" unless $r->{status} == 200;
        $r->{elapsed}
    } 1 .. $lone_calls;
    return $took[$lone_calls / 2];
}

for my $location ('h1', 'h2') {
    $t->get("/$location/index.html");    # opens the first connection
    my $before = median_lone_call($location);

    my $asked = $t->mock_count;
    my @pending = map {
        my $action = $_ % 2 ? 'block' : 'allow';
        [$action, $t->open_request("/$location/index.html?mock_delay_ms=800&mock_action=$action&n=$_")]
    } 1 .. $held;
    my $deadline = time + 10;
    sleep 0.02 while $t->mock_count < $asked + $held && time < $deadline;
    is($t->mock_count - $asked, $held, "$location: the mock holds all $held calls at once");

    my $started = time;
    my $right = 0;
    for (@pending) {
        my ($action, $socket) = @$_;
        my $r = EsperTest::read_all($socket, 10);
        $right++ if $r->{status} == ($action eq 'block' ? 403 : 200);
    }
    is($right, $held, "$location: every held call got its own decision (allow 200, block 403)");
    cmp_ok(time - $started, '<', 3, "$location: and they came back together");

    my $after = median_lone_call($location);
    cmp_ok($after, '<', $before + 0.001,
        sprintf('%s: a lone call after the burst is not held back (median %.2f ms, before %.2f ms)',
            $location, $after * 1000, $before * 1000));
}

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
