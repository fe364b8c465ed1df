# Faults in the middle of Esper's answer: a connection broken inside the body,
# a head on time with a body too late, a 10 MB body. Each gets the failure
# action and one log line; the worker's memory does not grow; the next request
# is decided normally. Over HTTP/1.1 and over the shared HTTP/2 connection.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep);
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "ok\n");
$t->start_nginx(<<'EOF');
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    esper_timeout 300ms;
    esper_failure_action block;
    esper_circuit_breaker off;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location / { esper on; }
        location /h2/ { esper on; esper_http2 on; alias %%DIR%%/html/; }
    }
EOF
my ($worker) = $t->worker_pids;
sub rss { EsperTest::rss_kb($worker) }

my @faults = (
    ['mock_reset_in_body=1&mock_action=allow'                => qr/request failed: /,                'connection broken inside the body'],
    ['mock_body_delay_ms=1000&mock_action=allow'             => qr/timed out/,                       'head on time, body too late'],
    ['mock_delay_ms=1000&mock_action=allow'                  => qr/timed out/,                       'head too late'],
    ['mock_body_bytes=10485760'                              => qr/answer larger than 65536 bytes/, '10 MB body'],
    ['mock_body=%7B%22action%22%3A%22al'                     => qr/invalid answer body/,             'truncated JSON'],
);
for my $fault (map { my $p = $_; map { [$p, @$_] } @faults } '', '/h2') {
    my ($prefix, $query, $reason, $what) = @$fault;
    $what .= $prefix ? ' (HTTP/2)' : ' (HTTP/1.1)';
    my $before = () = $t->error_log =~ /esper decision failed/g;
    my $r = $t->get("$prefix/index.html?$query");
    is($r->{status}, 403, "$what: failure action");
    cmp_ok($r->{elapsed}, '<', 0.35, "$what: within the deadline");
    my @lines = grep { /esper decision failed/ } split /\n/, $t->error_log;
    is(scalar(@lines) - $before, 1, "$what: one log line");
    like($lines[-1], $reason, "$what: the reason");
    is($t->get("$prefix/index.html")->{status}, 200, "$what: the next request is decided");
    sleep 0.1;
}

# Ten more 10 MB answers each way: the read stops at 64 KiB, the worker does
# not grow, and the HTTP/2 connection's own window is not used up by them.
my $before = rss();
$t->get("$_/index.html?mock_body_bytes=10485760") for map { ('', '/h2') } 1 .. 10;
is($t->get('/h2/index.html')->{status}, 200, 'HTTP/2: decided after ten 10 MB answers on the connection');
# Under AddressSanitizer (make sanitize) RSS measures ASan's quarantine, not the worker.
cmp_ok(rss() - $before, '<', 4096, 'ten 10 MB answers leave the worker within 4 MB of where it was (' . (rss() - $before) . ' kB)')
    unless $ENV{TEST_SANITIZER};
is(join(',', $t->worker_pids), $worker, 'the same worker is alive');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
