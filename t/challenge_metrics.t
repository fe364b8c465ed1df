# The challenge loop's counters: proof verifications by outcome and pass
# cookies issued, as esper_metrics serves them, summed over workers.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "ok\n");
$t->start_nginx(<<'EOF', workers => 2);
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    esper_timeout 300ms;
    esper_enforcement_zone zone=bots:1m;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location / { esper on; esper_enforcement bots; }
        location = /metrics { esper_metrics; }
    }
EOF

sub counters {
    my %m = $t->get('/metrics')->{body} =~ /^(esper_(?:proof_verifications|pass_cookies_issued)_total\S*) (\d+)$/mg;
    return \%m;
}

my $before = counters();
is_deeply($before, {
    'esper_proof_verifications_total{outcome="verified"}' => 0,
    'esper_proof_verifications_total{outcome="refused"}' => 0,
    'esper_proof_verifications_total{outcome="failed"}' => 0,
    'esper_pass_cookies_issued_total' => 0,
}, 'both families are served, at zero');

my @steps = (
    ['valid-1', 302, 'a valid proof: a pass'],
    ['ttl60-2', 302, 'another valid proof'],
    ['nope-3', 200, 'a refused proof: decided as usual'],
    ['fail-4', 200, 'a failed verification'],
    ['slow-5', 200, 'a verification that times out'],
);
for (@steps) {
    my ($token, $status, $what) = @$_;
    my $r = $t->get("/index.html?esper_challenge_proof=$token");
    is($r->{status}, $status, $what);
}
# A proof from an entity the zone holds a block for: not even verified.
$t->get('/index.html?mock_action=block', headers => [['User-Agent', 'blocked-bot']]);
is($t->get('/index.html?esper_challenge_proof=valid-6', headers => [['User-Agent', 'blocked-bot']])->{status},
   403, 'a proof of a blocked entity gets the block');

is_deeply(counters(), {
    'esper_proof_verifications_total{outcome="verified"}' => 2,
    'esper_proof_verifications_total{outcome="refused"}' => 1,
    'esper_proof_verifications_total{outcome="failed"}' => 2,
    'esper_pass_cookies_issued_total' => 2,
}, 'each verification counted by outcome, each pass cookie issued counted');
is($t->get('/index.html')->{status}, 200, 'a request without a proof');
is(counters()->{'esper_proof_verifications_total{outcome="verified"}'}, 2, 'counts no verification');
is(scalar $t->serious_errors, 0, 'no alert or crash');

done_testing;
