# One call's failure stays that call's: over the shared HTTP/2 connection a
# stream Esper resets (before or inside its answer), or an answer head over the 16 KiB bound, fails its
# call once (it is not sent again) and leaves the connection to the other
# calls. Over HTTP/1.1 the head is bounded too (hyper's own bound is about
# 400 KiB). A pooled connection Esper closed while idle costs no call.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use EsperTest;

my $t = EsperTest->new;
my $big = EsperTest->new(name => 'retries_big_head');
my $small = EsperTest->new(name => 'retries_small_head');
$big->start_mock('--head-bytes', '20000');
$small->start_mock('--head-bytes', '12000');
my ($big_port, $small_port) = ($big->mock_port, $small->mock_port);
$t->start_mock;
$t->write_file('html/index.html', "ok\n");
$t->start_nginx(<<"EOF_CONF");
    esper_api_key test-key;
    esper_timeout 3s;
    esper_failure_action block;
    esper_circuit_breaker off;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location /h2/ { esper on; esper_http2 on; esper_api_url http://%%MOCK%%; alias %%DIR%%/html/; }
        location /h1/ { esper on; esper_http2 off; esper_api_url http://%%MOCK%%; alias %%DIR%%/html/; }
        location /big-h2/ { esper on; esper_http2 on; esper_api_url http://127.0.0.1:$big_port; alias %%DIR%%/html/; }
        location /big-h1/ { esper on; esper_http2 off; esper_api_url http://127.0.0.1:$big_port; alias %%DIR%%/html/; }
        location /small-h1/ { esper on; esper_http2 off; esper_api_url http://127.0.0.1:$small_port; alias %%DIR%%/html/; }
    }
EOF_CONF

sub connections { my ($m) = @_; $m->mock_call('GET', '/__mock/count')->{connections} - 1 }
sub received {
    my ($m, $tag) = @_;
    return scalar grep { ($_->{body}{request}{query_params}{tag} // '') eq $tag } @{$m->mock_requests};
}

is($t->get('/h2/index.html?mock_action=allow&tag=warm')->{status}, 200, 'HTTP/2 connection open');
my $held = $t->open_request('/h2/index.html?mock_action=allow&mock_delay_ms=1500&tag=held');
sleep 0.2;
for my $i (1 .. 3) {
    my $r = $t->get("/h2/index.html?mock_action=allow&mock_reset_in_body=1&tag=reset$i");
    is($r->{status}, 403, "stream $i reset by Esper: that call fails");
    is(received($t, "reset$i"), 1, "and Esper received it once");
}
for my $i (1 .. 3) {
    my $r = $t->get("/h2/index.html?mock_action=allow&mock_close=1&tag=refused$i");
    is($r->{status}, 403, "stream $i reset by Esper before any answer: that call fails");
    is(received($t, "refused$i"), 1, "and is not sent again");
}
my $r = EsperTest::read_all($held, 5);
is($r->{status}, 200, 'the call held on the same connection meanwhile is decided');
is(connections($t), 1, 'on the one connection, never torn down');
is($t->get('/h2/index.html?mock_action=block&tag=after')->{status}, 403, 'and the next call is decided on it');
is(connections($t), 1, 'still one connection');

for my $i (1 .. 3) {
    is($t->get("/big-h2/index.html?mock_action=allow&tag=big$i")->{status}, 403, "HTTP/2: a 20 KB answer head fails call $i");
    is(received($big, "big$i"), 1, 'which Esper received once');
}
is(connections($big), 1, 'HTTP/2: the heads over the bound cost no connection');
is($t->get('/big-h1/index.html?mock_action=allow&tag=big-h1')->{status}, 403, 'HTTP/1.1: a 20 KB answer head fails its call');
is(received($big, 'big-h1'), 1, 'which Esper received once');
like($t->error_log, qr/esper decision failed: request failed: .*too large/, 'the reason says the head is too large');
is($t->get('/small-h1/index.html?mock_action=allow')->{status}, 200, 'a 12 KB head is within the bound');

# A pooled HTTP/1.1 connection closed by Esper while idle.
is($t->get('/h1/index.html?mock_action=allow&tag=pooled')->{status}, 200, 'HTTP/1.1 connection pooled');
$t->mock_call('POST', '/__mock/close-idle');
sleep 0.3;
is($t->get('/h1/index.html?mock_action=allow&tag=closed')->{status}, 200, 'after Esper closed it, the next call is decided');
is(received($t, 'closed'), 1, 'received once');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
