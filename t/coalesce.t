# Under load (128 calls or more in flight) the runtime thread gathers answers
# before it sleeps on its sockets: 200 calls held at once all come back, each
# with its own decision, and once they are done a lone call is no slower
# than before the burst (the count of calls in flight went back down).
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
    server {
        listen 127.0.0.1:%%PORT%%;
        location /judged/ { esper on; alias %%DIR%%/html/; }
    }
EOF

sub median_lone_call {
    my @took = sort { $a <=> $b } map {
        my $r = $t->get('/judged/index.html');
        die "lone call answered $r->{status}" unless $r->{status} == 200;
        $r->{elapsed}
    } 1 .. 31;
    return $took[15];
}

$t->get('/judged/index.html');    # opens the pooled connection
my $before = median_lone_call();

my $held = 200;
my @pending = map {
    my $action = $_ % 2 ? 'block' : 'allow';
    [$action, $t->open_request("/judged/index.html?mock_delay_ms=800&mock_action=$action&n=$_")]
} 1 .. $held;

my $deadline = time + 10;
sleep 0.02 while $t->mock_count < 1 + 31 + $held && time < $deadline;
is($t->mock_count, 1 + 31 + $held, "the mock holds all $held calls at once");

my $started = time;
my $right = 0;
for (@pending) {
    my ($action, $socket) = @$_;
    my $r = EsperTest::read_all($socket, 10);
    $right++ if $r->{status} == ($action eq 'block' ? 403 : 200);
}
is($right, $held, 'every held call got its own decision (allow 200, block 403)');
cmp_ok(time - $started, '<', 3, 'and they came back together');

my $after = median_lone_call();
cmp_ok($after, '<', $before + 0.001,
    sprintf('a lone call after the burst is not held back (median %.2f ms, before %.2f ms)',
        $after * 1000, $before * 1000));

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
