# HTTP/2 beyond one connection's stream limit: with a mock that allows 10
# concurrent streams, 35 calls held at once go out on ceil(35 / 10) = 4
# connections (5 at most), all in one round trip rather than four, and the
# surplus is closed once idle. Streams the server refuses before its limit
# is known (a burst on a fresh connection) are sent again, and no call
# reaches Esper twice.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use EsperTest;

my $t = EsperTest->new;
$t->start_mock('--max-streams', '10');
$t->write_file('html/index.html', "ok\n");
$t->start_nginx(<<'EOF_CONF');
    esper_api_key test-key;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location /h2/ {
            esper on;
            esper_http2 on;
            esper_api_url http://%%MOCK%%;
            esper_timeout 5s;
            esper_failure_action block;
            esper_circuit_breaker off;
            esper_max_pending 1000;
            alias %%DIR%%/html/;
        }
    }
EOF_CONF

# Connections to the mock from nginx (its count includes the asking one).
sub esper_connections { $t->mock_call('GET', '/__mock/count')->{connections} - 1 }

sub burst {
    my ($n, $tag) = @_;
    my @s = map { $t->open_request("/h2/index.html?mock_action=allow&mock_delay_ms=1000&b=$tag$_") } 1 .. $n;
    return @s;
}

sub statuses {
    my @s = @_;
    my @got;
    for my $s (@s) {
        my $r = EsperTest::read_all($s, 10);
        push @got, $r->{status};
        close $s;
    }
    return @got;
}

# A burst on a fresh worker: the first connection takes streams before the
# server's SETTINGS arrive; the ones it refuses are sent again.
my @s = burst(30, 'fresh');
my @got = statuses(@s);
is(scalar(grep { $_ == 200 } @got), 30, 'a burst of 30 on a fresh worker: every call decided');
is($t->mock_count, 30, 'Esper received each call once');

sleep 7;    # the surplus of that burst is closed
is(esper_connections(), 1, 'idle: one connection left');

$t->mock_reset;
my $started = time;
@s = burst(35, 'held');
my $deadline = time + 3;
sleep 0.05 while $t->mock_count < 35 && time < $deadline;
my $open = esper_connections();
cmp_ok($open, '>=', 4, "35 calls held at once on at least ceil(35/10) = 4 connections ($open)");
cmp_ok($open, '<=', 5, 'and at most ceil(35/10) + 1');
@got = statuses(@s);
my $took = time - $started;
is(scalar(grep { $_ == 200 } @got), 35, 'every call decided');
cmp_ok($took, '<', 1.9, sprintf('in one round of Esper\'s 1 s, not four (%.2f s)', $took));
is($t->mock_count, 35, 'each call received once');

$deadline = time + 10;
sleep 0.2 while esper_connections() > 1 && time < $deadline;
is(esper_connections(), 1, 'the surplus is closed once idle, one connection kept');
is($t->get('/h2/index.html?mock_action=block')->{status}, 403, 'the kept connection still decides');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
