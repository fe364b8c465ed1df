# Every way a decision can fail, with both failure actions: the configured
# action applies, $esper_result says why, and one error-log line names the reason.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep);
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
my $refused = EsperTest::free_port();
$t->write_file('html/index.html', "ok\n");
my $conf = <<'EOF';
    esper_api_url http://%%MOCK%%;
    esper_api_key sk_never_logged_42;
    esper_timeout 200ms;
    # Every failure here must reach Esper; t/breaker.t covers the breaker.
    esper_circuit_breaker off;
    log_format esper '$request_uri $status result=$esper_result action=$esper_action';
    access_log %%DIR%%/logs/esper.log esper;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location /open/ { esper on; alias %%DIR%%/html/; }
        location /closed/ { esper on; esper_failure_action block; alias %%DIR%%/html/; }
        location /refused/ {
            esper on;
            esper_api_url http://127.0.0.1:%%REFUSED%%;
            esper_failure_action block;
            alias %%DIR%%/html/;
        }
        location /monitor/ { esper on; esper_mode monitor; esper_failure_action block; alias %%DIR%%/html/; }
    }
EOF
$conf =~ s/%%REFUSED%%/$refused/;
$t->start_nginx($conf);

# query string => [expected $esper_result, error-log reason]
my @faults = (
    ['mock_status=500'                      => 'error', qr/unexpected status 500/],
    ['mock_status=503'                      => 'error', qr/unexpected status 503/],
    ['mock_status=302'                      => 'error', qr/unexpected status 302/],
    ['mock_status=401'                      => 'error', qr/status 401: Esper refused the API key, check "esper_api_key"/],
    ['mock_status=403'                      => 'error', qr/status 403: Esper refused the API key/],
    ['mock_body=not-json'                   => 'error', qr/invalid answer body/],
    ['mock_body='                           => 'error', qr/invalid answer body: empty body/],
    ['mock_content_type=text/html'          => 'error', qr/answer is not JSON \(content type "text\/html"\)/],
    ['mock_action=maybe'                    => 'error', qr/unknown action "maybe"/],
    ['mock_action=challenge&mock_redirect=/relative' => 'error', qr/challenge without a usable redirect_url/],
    ['mock_action=challenge&mock_redirect=javascript:alert(1)' => 'error', qr/challenge without a usable redirect_url/],
    ['mock_close=1'                         => 'error', qr/request failed/],
    ['mock_delay_ms=1000'                   => 'timeout', qr/timed out/],
    # Last: Esper's 429 holds further calls back (1 s without Retry-After).
    ['mock_status=429'                      => 'error', qr/rate limited by Esper \(429\)|Retry-After after a 429 is running/],
);

my $responses = '';
for my $fault (@faults) {
    my ($query, $result, $reason) = @$fault;
    for my $where (['open', 200], ['closed', 403]) {
        my ($location, $status) = @$where;
        my $uri = "/$location/index.html?$query";
        sleep 0.12;    # within the budget of 10 failure lines a second
        my $before = () = $t->error_log =~ /esper decision failed/g;
        my $r = $t->get($uri);
        $responses .= $r->{raw};
        is($r->{status}, $status, "$query: failure action of /$location/");
        ok($t->wait_for_log('logs/esper.log', qr/^\Q$uri\E $status result=$result action=-$/m),
            "$query: \$esper_result is $result");
        my @lines = grep { /esper decision failed/ } split /\n/, $t->error_log;
        is(scalar @lines - $before, 1, "$query: one error-log line");
        like($lines[-1] // '', qr/\[error\].*$reason.*request: "GET \Q$uri\E/, "$query: the line names the reason");
    }
}

sleep 1.1;    # the 429's hold-back is over
my $r = $t->get('/refused/index.html');
is($r->{status}, 403, 'connection refused: failure action block');
like($t->error_log, qr/esper decision failed: request failed: .*(refused|connect)/i, 'connection refused is logged');

$r = $t->get('/monitor/index.html?mock_status=500');
is($r->{status}, 200, 'monitor mode never blocks, even on failure with failure action block');
like($t->error_log, qr/unexpected status 500; monitor mode, request continues/, 'monitor failure logged');

# The deadline is exact: 200 ms, give or take 50 ms.
for my $location (qw(open closed)) {
    $r = $t->get("/$location/index.html?mock_hang=1");
    cmp_ok($r->{elapsed}, '>=', 0.195, "/$location/: not before the deadline");
    cmp_ok($r->{elapsed}, '<', 0.250, "/$location/: within 50 ms of the deadline");
}

# After all of that the worker still serves normally.
$r = $t->get('/closed/index.html');
is($r->{status}, 200, 'next request decided normally');
unlike($t->error_log . $t->access_log . $t->read_file('logs/esper.log'), qr/sk_never_logged_42/, 'the API key is never logged');
unlike($responses, qr/sk_never_logged_42/, 'nor sent in any response');
is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;

done_testing;
