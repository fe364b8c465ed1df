# Esper's 429: its Retry-After holds calls back (unknown entities get the
# failure action without a call) while entities in the enforcement zone stay
# enforced. The circuit breaker counts only Esper's availability: a 4xx that
# the client's request caused, and every verify answer, never open it.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use EsperTest;

my $t = EsperTest->new;
$t->start_mock('--api-key', 'k');
my $conf = <<'EOF2';
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    esper_enforcement_zone zone=bots:1m;
    log_format r '$http_user_agent|$status|$esper_result';
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/logs/r.log r;
        root %%DIR%%/html;
        location /z/ { esper on; esper_enforcement bots; }
        # Another endpoint: its own breaker and Retry-After.
        location /br/ {
            esper on;
            esper_api_url http://localhost:%%MOCKPORT%%;
            esper_circuit_breaker failures=2 window=10s cooldown=10s;
        }
        location /metrics { esper_metrics; }
    }
EOF2
$conf =~ s/%%MOCKPORT%%/$t->mock_port/ge;
$t->write_file("html/$_", "ok\n") for qw(z/p br/p);
$t->start_nginx($conf);
sub calls { $t->mock_count }
sub ua { (headers => [['User-Agent', $_[0]]]) }
sub metric {
    my $body = $t->get('/metrics')->{body};
    return $body =~ /^\Q$_[0]\E (\d+)$/m ? $1 : undef;
}

# 429 with Retry-After.
is($t->get('/z/p?mock_action=block', ua('known'))->{status}, 403, 'a bot blocked and remembered');
my $limited_at = time;
is($t->get('/z/p?mock_status=429&mock_retry_after=2', ua('a'))->{status}, 200, '429: the failure action (allow)');
like($t->error_log, qr/esper decision failed: rate limited by Esper \(429\), retry after 2 s; failure action allow/, 'logged with its Retry-After');
my $before = calls();
is($t->get('/z/p?mock_action=block', ua('b'))->{status}, 200, 'meanwhile an unknown entity gets the failure action');
is(calls(), $before, 'without a call');
like($t->error_log, qr/Retry-After after a 429 is running, Esper not asked/, 'saying why');
is($t->get('/z/p?mock_action=allow', ua('known'))->{status}, 403, 'the remembered bot stays blocked');
sleep(2.1 - (time - $limited_at)) if time - $limited_at < 2.1;
is($t->get('/z/p?mock_action=block', ua('b'))->{status}, 403, 'after Retry-After Esper is asked again');
is(calls(), $before + 1, 'one call');
$t->get('/z/p?mock_status=429&mock_retry_after=3600', ua('c'));
like($t->error_log, qr/rate limited by Esper \(429\), retry after 60 s/, 'Retry-After is capped at 60 s');
is(metric('esper_rate_limited_total'), 2, 'rate-limited answers counted');
unlike($t->error_log, qr/circuit breaker open/, 'no breaker opened so far');

# Client-caused 4xx and verify answers never open the breaker.
for my $status (400, 413, 422, 400, 422) {
    is($t->get("/br/p?mock_status=$status")->{status}, 200, "Esper answers $status: failure action");
}
for my $n (1 .. 4) {
    is($t->get("/br/p?mock_action=allow&esper_challenge_proof=status500-$n")->{status}, 200, "verify answers 500 ($n): decided at runtime");
}
unlike($t->error_log, qr/circuit breaker open/, 'the breaker stays closed');
$before = calls();
is($t->get('/br/p?mock_action=block')->{status}, 403, 'Esper is still asked');
is(calls(), $before + 1, 'one call');
# Availability failures do open it.
$t->get('/br/p?mock_status=503') for 1 .. 2;
like($t->error_log, qr/circuit breaker open for .*2 failures/, '5xx answers open it');

is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;
done_testing;
