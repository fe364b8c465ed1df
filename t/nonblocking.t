# The decision call never blocks the worker: with one worker and 50 decisions
# held pending by a slow mock, an `esper off` location answers at once.
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
        root %%DIR%%/html;
        location /judged/ { esper on; alias %%DIR%%/html/; }
        location /free/ { alias %%DIR%%/html/; }
    }
EOF

my @pending = map { $t->open_request("/judged/index.html?mock_delay_ms=1500&n=$_") } 1 .. 50;

# Wait until the mock holds all 50 calls.
my $deadline = time + 5;
sleep 0.02 while $t->mock_count < 50 && time < $deadline;
is($t->mock_count, 50, '50 decisions are pending at the mock');

my @times;
for (1 .. 5) {
    my $r = $t->get('/free/index.html');
    is($r->{status}, 200, 'esper off location answers while decisions are pending');
    push @times, $r->{elapsed};
}
my ($slowest) = sort { $b <=> $a } @times;
cmp_ok($slowest, '<', 0.1, 'and in under 100 ms');

my $started = time;
my @answers = map { EsperTest::read_all($_, 10) } @pending;
is(scalar(grep { $_->{status} == 200 } @answers), 50, 'all 50 pending requests are answered after the slow decision');
cmp_ok(time - $started, '<', 3, 'the pending requests were served concurrently');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
