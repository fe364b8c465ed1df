# esper_enforcement_zone: Esper's block and challenge decisions remembered per
# entity (client IP and user agent) in shared memory, so a bot's later
# requests are stopped without a call, in every worker and across reloads,
# even once Esper rate-limits the key.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use EsperTest;

my $t = EsperTest->new;
# A mock without a rate limit for the tiny zone's many entities.
my $plain = $t->start_mock('--api-key', 'k');
# Esper blocks the bot's first 20 calls, then rate-limits the key.
my $limited = $t->start_mock('--api-key', 'k', '--rate-limit', '20', '--retry-after', '5');
my $conf = <<'EOF';
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    esper_enforcement_zone zone=bots:1m ttl=30s;
    esper_enforcement_zone zone=tiny:32k ttl=30s;
    esper_enforcement_zone zone=short:32k ttl=1s;
    log_format zone '$pid|$http_user_agent|$status|$esper_result|$esper_action|$esper_decision_id';
    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        access_log %%DIR%%/logs/zone.log zone;
        root %%DIR%%/html;
        esper on;
        esper_enforcement bots;
        location /tiny/ { esper_enforcement tiny; esper_api_url http://127.0.0.1:%%PLAIN%%; }
        location /short/ { esper_enforcement short; }
        location /none/ { esper_enforcement off; }
        location /metrics { esper off; esper_metrics; }
    }
EOF
$conf =~ s/%%PLAIN%%/$plain/g;
$t->write_file("html/$_", "ok\n") for qw(index.html p tiny/p short/p none/p);
$t->start_nginx($conf, workers => 2);

sub metric {
    my ($name) = @_;
    my $body = $t->get('/metrics')->{body};
    return $body =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}
sub calls { $t->mock_call('GET', '/__mock/count')->{runtime} }

# 1. The flood: one bot (one IP, one user agent), 1,200 requests over 8
# keepalive connections at once.
my $per_connection = 150;
my @conns = map {
    IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port, Timeout => 10) or die "connect: $!"
} 1 .. 8;
my %status;
for my $round (1 .. $per_connection) {
    for my $s (@conns) {
        print $s "GET /p?mock_action=block&r=$round HTTP/1.1\r\nHost: shop\r\nUser-Agent: flood-bot/1.0\r\n\r\n";
    }
    for my $s (@conns) {
        my $head = '';
        while ($head !~ /\r\n\r\n/) {
            my $n = sysread($s, my $buf, 1) or last;
            $head .= $buf;
        }
        my ($code) = $head =~ m{^HTTP/1\.1 (\d+)};
        my ($len) = $head =~ /^Content-Length: (\d+)/mi;
        my $body = '';
        sysread($s, $body, $len - length($body), length $body) while $len && length($body) < $len;
        $status{$code // 'none'}++;
    }
}
close $_ for @conns;
my $blocked = $status{403} // 0;
cmp_ok($blocked, '>=', 1188, "at least 99% of 1,200 flood requests blocked ($blocked)") or diag explain \%status;
my $asked = calls();
cmp_ok($asked, '<=', 8 + 2, "Esper asked only until the first answers landed ($asked calls)");
is($t->mock_call('GET', '/__mock/count')->{rate_limited}, 0, 'the rate limit was never reached');
my @lines = grep { /flood-bot/ } split /\n/, $t->read_file('logs/zone.log');
my @enforced = grep { /\|403\|enforced\|block\|dec-\d+$/ } @lines;
cmp_ok(scalar @enforced, '>=', 1200 - $asked, '$esper_result enforced, with the remembered action and decision id');

# 2. Both workers use the same entries: new connections land on either
# worker (reuseport), and none asks Esper again.
my $before = calls();
for (1 .. 20) {
    is($t->get('/p?mock_action=allow', headers => [['User-Agent', 'flood-bot/1.0']])->{status}, 403, "connection $_: still blocked")
        or last;
}
is(calls(), $before, 'no new call from any worker');
my %pids = map { (split /\|/)[0] => 1 } grep { /flood-bot/ } split /\n/, $t->read_file('logs/zone.log');
is(scalar keys %pids, 2, 'both workers enforced the entry');

# The entity is client IP and user agent: another agent is its own entity.
is($t->get('/p?mock_action=allow', headers => [['User-Agent', 'human/1.0']])->{status}, 200, 'another user agent is asked and allowed');
is($t->get('/p?mock_action=block', headers => [['User-Agent', 'human/1.0']])->{status}, 403, 'allow is never remembered: asked again');
is($t->get('/none/p?mock_action=allow', headers => [['User-Agent', 'flood-bot/1.0']])->{status}, 200, 'a location without the zone asks Esper');

# 3. Metrics.
cmp_ok(metric('esper_enforced_requests_total{action="block"}'), '>=', 1200 - $asked, 'enforced requests counted by action');
is(metric('esper_enforcement_entries{zone="bots"}'), 2, 'entries of the zone');
is(metric('esper_enforcement_entries{zone="tiny"}'), 0, 'each zone its own');
cmp_ok(metric('esper_requests_total{result="enforced"}'), '>=', 1200 - $asked, 'result enforced');

# 4. A reload keeps the zone and its entries.
my @old = $t->worker_pids;
kill 'HUP', $t->nginx_pid;
my $deadline = time + 10;
sleep 0.05 while time < $deadline && grep({ my $o = $_; grep { $_ eq $o } $t->worker_pids } @old);
$before = calls();
is($t->get('/p?mock_action=allow', headers => [['User-Agent', 'flood-bot/1.0']])->{status}, 403, 'blocked after a reload');
is(calls(), $before, 'from the kept zone, without a call');

# 5. Expiry: the zone's ttl caps Esper's lifetime; Esper's shorter one wins.
$t->mock_reset;
is($t->get('/short/p?mock_action=block&mock_ttl=100', headers => [['User-Agent', 'ttl-a']])->{status}, 403, 'blocked');
is($t->get('/short/p?mock_action=allow', headers => [['User-Agent', 'ttl-a']])->{status}, 403, 'remembered');
is($t->get('/p?mock_action=block&mock_ttl=1', headers => [['User-Agent', 'ttl-b']])->{status}, 403, 'blocked for 1 s by Esper');
is($t->get('/p?mock_action=allow', headers => [['User-Agent', 'ttl-b']])->{status}, 403, 'remembered');
is(calls(), 2, 'two calls so far');
sleep 1.3;
is($t->get('/short/p?mock_action=allow', headers => [['User-Agent', 'ttl-a']])->{status}, 200, 'ttl=1s caps Esper\'s 100 s: asked again');
is($t->get('/p?mock_action=allow', headers => [['User-Agent', 'ttl-b']])->{status}, 200, 'Esper\'s ttl_seconds: asked again');
is(calls(), 4, 'both asked again after expiry');

# 6. A full zone drops the least recently used entry, counts and logs it.
$t->{mock_port} = $plain;
for my $n (1 .. 60) {
    $t->get('/tiny/p?mock_action=block', headers => [['User-Agent', "evict-$n"]]);
}
my $evictions = metric('esper_enforcement_evictions_total{zone="tiny"}');
cmp_ok($evictions, '>', 0, "evictions counted ($evictions)");
my $entries = metric('esper_enforcement_entries{zone="tiny"}');
is($entries + $evictions, 60, "every entry kept or evicted ($entries kept)");
$before = calls();
is($t->get('/tiny/p?mock_action=allow', headers => [['User-Agent', 'evict-60']])->{status}, 403, 'the newest entry is kept');
is(calls(), $before, 'without a call');
is($t->get('/tiny/p?mock_action=allow', headers => [['User-Agent', 'evict-1']])->{status}, 200, 'the oldest went: asked again');
my @full = $t->error_log =~ /esper_enforcement_zone "tiny" is full/g;
cmp_ok(scalar @full, '>=', 1, 'the eviction is logged');
cmp_ok(scalar @full, '<=', 4, 'at most once a second per worker');

is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;
done_testing;
