# A client that goes away while its decision is pending: the worker survives,
# the late answer is dropped, and the error log holds nothing above info.
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
    esper_timeout 1s;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location / { esper on; }
    }
EOF
my ($worker) = $t->worker_pids;

# Clients leave while the mock is still deciding (answers come at 300 ms).
for my $round (1 .. 3) {
    my @gone = map { $t->open_request("/index.html?mock_delay_ms=300&r=$round&n=$_") } 1 .. 20;
    sleep 0.1;
    close $_ for @gone;
}
# Clients leave while the call hangs until the deadline.
my @gone = map { $t->open_request("/index.html?mock_hang=1&n=$_") } 1 .. 20;
sleep 0.1;
close $_ for @gone;

ok($t->wait_for_log('logs/access.log', qr/(?:.*\n){80}/, 5), 'all 80 abandoned requests were logged');
like($t->access_log, qr/" 499 /, 'abandoned requests are logged with 499');
sleep 1.2;    # past every late answer and every deadline

my $r = $t->get('/index.html');
is($r->{status}, 200, 'the worker still serves decisions');
is(join(',', $t->worker_pids), $worker, 'the same worker process is alive');

my @above_info = grep { /\[(warn|error|crit|alert|emerg)\]/ } split /\n/, $t->error_log;
is(scalar @above_info, 0, 'nothing in the error log beyond info') or diag join "\n", @above_info;
like($t->error_log, qr/\[info\].*client prematurely closed connection/, 'the disconnects are noticed (info)');

done_testing;
