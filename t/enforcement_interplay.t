# The enforcement zone beside challenges, proofs, pass cookies and monitor
# mode: a remembered challenge replays Esper's URL to the same request; a
# verified proof clears it; a pass cookie skips a remembered challenge but
# never a block, and no proof is verified under a block; monitor mode never
# stores or enforces.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock('--api-key', 'k');
my $conf = <<'EOF2';
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    esper_enforcement_zone zone=bots:1m;
    log_format zone '$http_user_agent|$status|$esper_result|$esper_action|$esper_decision_id';
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/logs/zone.log zone;
        root %%DIR%%/html;
        esper on;
        esper_enforcement bots;
        location /monitor/ { esper_mode monitor; }
        location /none/ { esper_enforcement off; }
    }
EOF2
$t->write_file("html/$_", "ok\n") for qw(p monitor/p none/p);
$t->start_nginx($conf);

sub calls { $t->mock_count }
sub ua { (headers => [['User-Agent', $_[0]], @{$_[1] || []}]) }
sub cookie_of { ($_[0]{headers}{'set-cookie'} // '') =~ /^([^;]+)/ ? $1 : undef }
sub last_log { (grep { /^\Q$_[0]\E\|/ } split /\n/, $t->read_file('logs/zone.log'))[-1] // '' }

# A remembered challenge replays Esper's redirect_url without a call, to a
# request with the same return URL.
my $r = $t->get('/p?mock_action=challenge&mock_decision_id=c-1', ua('c1'));
is($r->{status}, 302, 'challenged');
my $url = $r->{headers}{location};
my $before = calls();
$r = $t->get('/p?mock_action=challenge&mock_decision_id=c-1', ua('c1'));
is($r->{status}, 302, 'challenged again from the zone');
is($r->{headers}{location}, $url, 'to the same challenge URL');
is($r->{headers}{'cache-control'}, 'no-store', 'not cacheable');
is(calls(), $before, 'without a call');
ok($t->wait_for_log('logs/zone.log', qr/^c1\|302\|enforced\|challenge\|c-1$/m), '$esper_result enforced, action and decision id of the remembered challenge');

# A verified proof clears the challenge.
$r = $t->get('/p?esper_challenge_proof=valid-1', ua('c1'));
is($r->{status}, 302, 'proof verified');
ok(cookie_of($r), 'pass cookie issued');
$before = calls();
is($t->get('/p?mock_action=allow', ua('c1'))->{status}, 200, 'without the cookie: asked again, allowed');
is(calls(), $before + 1, 'the challenge entry is gone');

# A pass cookie skips a remembered challenge.
my $pass = cookie_of($t->get('/none/p?esper_challenge_proof=valid-2', ua('c2')));
ok($pass, 'a pass cookie for c2');
is($t->get('/p?mock_action=challenge', ua('c2'))->{status}, 302, 'c2 challenged without its cookie: remembered');
is($t->get('/p?mock_action=challenge', ua('c2'))->{status}, 302, 'and replayed from the zone');
$before = calls();
$r = $t->get('/p?mock_action=block', ua('c2', [['Cookie', $pass]]));
is($r->{status}, 200, 'with its pass cookie c2 passes the remembered challenge');
is(calls(), $before, 'without a call');
like(last_log('c2'), qr/^c2\|200\|pass\|/, '$esper_result pass');

# ... never a remembered block, not even with a verified proof.
$pass = cookie_of($t->get('/none/p?esper_challenge_proof=valid-3', ua('b1')));
is($t->get('/p?mock_action=block&mock_decision_id=b-1', ua('b1'))->{status}, 403, 'b1 blocked and remembered');
$r = $t->get('/p?mock_action=allow', ua('b1'));
is($r->{status}, 403, 'blocked from the zone');
cmp_ok($r->{elapsed}, '>=', 0.009, sprintf('after a hold of 10 ms (%.3f s): a flood cannot take the worker', $r->{elapsed}));
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port) or die "connect: $!";
print $s "GET /p?mock_action=allow&gone=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: b1\r\n\r\n";
close $s;    # a client that goes away while held
is($t->get('/p?mock_action=allow', ua('c9'))->{status}, 200, 'others are served meanwhile');
$before = calls();
my $verified = $t->mock_call('GET', '/__mock/count')->{verify};
is($t->get('/p?mock_action=allow', ua('b1', [['Cookie', $pass]]))->{status}, 403, 'a pass cookie does not skip a block');
like(last_log('b1'), qr/^b1\|403\|enforced\|block\|b-1$/, 'enforced from the zone');
$r = $t->get('/p?esper_challenge_proof=valid-4', ua('b1'));
is($r->{status}, 403, 'a verified proof does not clear a block');
ok(!defined $r->{headers}{'set-cookie'}, 'and issues no pass cookie');
is(calls(), $before, 'no runtime call for any of these');
is($t->mock_call('GET', '/__mock/count')->{verify}, $verified, 'nor a verify call: no proof lifts a block');

# Monitor mode never stores or enforces.
$before = calls();
is($t->get('/monitor/p?mock_action=block', ua('m1'))->{status}, 200, 'monitor: not enforced');
is($t->get('/monitor/p?mock_action=block', ua('m1'))->{status}, 200, 'monitor again');
is(calls(), $before + 2, 'asked each time: nothing stored');
is($t->get('/p?mock_action=allow', ua('m1'))->{status}, 200, 'm1 is not remembered for enforcing locations either');
is($t->get('/monitor/p?mock_action=allow', ua('b1'))->{status}, 200, 'a remembered block is not enforced in monitor mode');
like(last_log('b1'), qr/^b1\|200\|monitor\|allow\|/, 'monitor asked Esper');

is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;
done_testing;
