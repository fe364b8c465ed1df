# A proof under the enforcement zone: a request whose proof does not verify
# is judged as the same request without a proof (the zone's block first,
# then the rate-limit gate or the failure action), no proof is verified
# under a remembered block, and one entity gets at most three proofs
# verified while it has a remembered challenge.
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
    esper_timeout 300ms;
    esper_enforcement_zone zone=bots:1m ttl=60s;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        esper on;
        esper_enforcement bots;
        esper_failure_action allow;
        esper_circuit_breaker off;
    }
EOF2
$t->write_file("html/$_", "ok\n") for qw(p c);
$t->start_nginx($conf, workers => 2);

sub counts { my $c = $t->mock_call('GET', '/__mock/count'); ($c->{runtime}, $c->{verify}) }
sub ua { (headers => [['User-Agent', $_[0]], @{$_[1] || []}]) }

# 1. A blocked bot whose Esper now answers 429, 503, or not at all: junk,
# failing, hanging and even valid proofs never get it through.
is($t->get('/p?mock_action=block', ua('bot-1'))->{status}, 403, 'bot-1 blocked by Esper, remembered');
my ($runtime, $verified) = counts();
my %status;
for my $n (1 .. 12) {
    my $esper = (qw(mock_status=429 mock_status=503 mock_hang=1))[$n % 3];
    my $proof = (qw(junk anything fail-1 slow-1 status503-x valid-1))[$n % 6];
    my $r = $t->get("/p?$esper&esper_challenge_proof=$proof-$n", ua('bot-1'));
    $status{$r->{status}}++;
    is($r->{headers}{'cache-control'}, 'no-store', "request $n: the block is not cacheable") if $r->{status} == 403;
}
is_deeply(\%status, {403 => 12}, '12 of 12 requests with a proof blocked from the zone');
is_deeply([counts()], [$runtime, $verified], 'no verify call and no runtime call for any of them');

# The same bot without a zone entry would get the failure action: the
# proof changes nothing of that either.
my $r = $t->get('/p?mock_status=503&esper_challenge_proof=junk-x', ua('fresh-1'));
is($r->{status}, 200, 'without a zone entry, a refused proof: the failure action (allow) as without a proof');

# 2. A challenged bot brings proofs: three are verified, then none; each
# answer is the remembered challenge, without a runtime call.
$r = $t->get('/c?mock_action=challenge', ua('bot-2'));
is($r->{status}, 302, 'bot-2 challenged, remembered');
my $challenge = $r->{headers}{location};
($runtime, $verified) = counts();
for my $n (1 .. 8) {
    $r = $t->get("/c?mock_action=challenge&esper_challenge_proof=bad-$n", ua('bot-2'));
    is($r->{status}, 302, "proof $n refused: challenged again");
    is($r->{headers}{location}, $challenge, "proof $n: the remembered challenge");
    ok(!defined $r->{headers}{'set-cookie'}, "proof $n: no pass");
}
is_deeply([counts()], [$runtime, $verified + 3], 'three verify calls for eight proofs, no runtime call');
ok($t->wait_for_log('logs/error.log', qr/esper challenge proof not verified: the enforcement zone remembers a block, or this entity's proofs are spent/),
    'the refusal is logged with its reason');

# 3. A visitor who solves the challenge: the proof verifies, the challenge
# entry goes, the pass cookie lets it through.
$r = $t->get('/c?mock_action=challenge', ua('human'));
is($r->{status}, 302, 'a person is challenged');
($runtime, $verified) = counts();
$r = $t->get('/c?mock_action=challenge&esper_challenge_proof=valid-h', ua('human'));
is($r->{status}, 302, 'the proof verifies: back to the clean URL');
like($r->{headers}{location}, qr{^http://localhost(:\d+)?/c\?mock_action=challenge$}, 'without the proof');
my ($pass) = ($r->{headers}{'set-cookie'} // '') =~ /^([^;]+)/;
ok($pass, 'with a pass cookie');
is($t->get('/c?mock_action=block', ua('human', [['Cookie', $pass]]))->{status}, 200, 'the pass lets it through');
is($t->get('/c?mock_action=allow', ua('human'))->{status}, 200, 'the challenge entry is gone: without the cookie, asked again');
is_deeply([counts()], [$runtime + 1, $verified + 1], 'one verify call, one runtime call');

is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;
done_testing;
