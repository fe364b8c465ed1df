# What the enforcement zone replays: a decision whose lifetime is zero or
# over applies to its own request only and is never stored; a remembered
# challenge is replayed only to a request with the same return URL, so that
# no visitor behind the same address and user agent (a shared NAT) is sent
# to another request's host, server block or path after solving it.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock('--api-key', 'k');
my $conf = <<'EOF2';
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    esper_enforcement_zone zone=bots:1m ttl=60s;
    esper_enforcement bots;
    log_format zone '$host|$http_user_agent|$status|$esper_result|$esper_action';
    access_log %%DIR%%/logs/zone.log zone;
    server {
        listen 127.0.0.1:%%PORT%% default_server;
        server_name _;
        root %%DIR%%/html;
        esper on;
    }
    server {
        listen 127.0.0.1:%%PORT%%;
        server_name shop.example;
        root %%DIR%%/html;
        esper on;
    }
EOF2
$t->write_file("html/$_", "ok\n") for qw(p login account);
$t->start_nginx($conf, workers => 2);

sub calls { $t->mock_count }
sub get { my ($uri, $ua, $host) = @_; $t->get($uri, host => $host // 'localhost', headers => [['User-Agent', $ua]]) }
sub unescape { my ($s) = @_; $s =~ tr/+/ /; $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge; $s }
sub return_url_of { my ($location) = @_; ($location // '') =~ /[?&]return_url=([^&]*)/ ? unescape($1) : '' }

# 1. Lifetimes that are zero or over: the decision applies, nothing is stored.
for my $case (['mock_ttl=0', 'ttl_seconds 0'], ['mock_ttl=-3', 'a negative ttl_seconds'], ['mock_expires_in=-5', 'expires_at in the past']) {
    my ($query, $what) = @$case;
    my $ua = "once-$query";
    is(get("/p?mock_action=block&$query", $ua)->{status}, 403, "$what: the block applies to its request");
    my $before = calls();
    is(get('/p?mock_action=allow', $ua)->{status}, 200, "$what: the next request is asked again and allowed");
    is(calls(), $before + 1, "$what: not answered from the zone");
    is(get("/p?mock_action=challenge&$query", "$ua-c")->{status}, 302, "$what: a challenge applies to its request");
    is(get("/p?mock_action=challenge&$query", "$ua-c")->{status}, 302, "$what: the same request again");
    is(calls(), $before + 3, "$what: asked each time, never replayed");
}
is(get('/p?mock_action=block&mock_ttl=2', 'kept')->{status}, 403, 'a lifetime still ahead: blocked');
is(get('/p?mock_action=allow', 'kept')->{status}, 403, 'and remembered for it');
ok($t->wait_for_log('logs/zone.log', qr/^localhost\|kept\|403\|enforced\|block$/m), 'answered from the zone');

# 2. A challenge made for a forged host is never replayed elsewhere.
my $r = get('/login?mock_action=challenge', 'shared-nat', 'evil.example');
is($r->{status}, 302, 'a client sends Host: evil.example to the catch-all server and is challenged');
is(return_url_of($r->{headers}{location}), 'http://evil.example/login?mock_action=challenge', 'for a return URL on evil.example');
my $before = calls();
$r = get('/login?mock_action=challenge', 'shared-nat', 'evil.example');
is($r->{status}, 302, 'the same request again');
is(calls(), $before, 'is answered from the zone');

# A second visitor behind the same address with the same user agent.
$r = get('/account?mock_action=allow', 'shared-nat', 'shop.example');
is($r->{status}, 200, 'the real server\'s /account is not answered with the stored challenge: Esper is asked');
is(calls(), $before + 1, 'one runtime call');
$r = get('/account?mock_action=challenge', 'shared-nat', 'shop.example');
is($r->{status}, 302, 'when Esper challenges it');
is(return_url_of($r->{headers}{location}), 'http://shop.example/account?mock_action=challenge', 'the visitor goes back to its own URL after solving');
$r = get('/p?mock_action=allow', 'shared-nat', 'shop.example');
is($r->{status}, 200, 'another path of the same server: asked again, never the /account challenge');
$r = get('/login?mock_action=allow', 'shared-nat', 'localhost');
is($r->{status}, 200, 'the same path on another host: asked again');
$r = get('/account?mock_action=challenge', 'shared-nat', 'shop.example');
unlike($r->{headers}{location} // '', qr/evil\.example/, 'no answer ever names evil.example');

is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;
done_testing;
