# With `error_log ... debug` (nginx built --with-debug), an operator sees
# every hop of a request through the module, in order, and never the API
# key, a cookie or a challenge proof.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
EsperTest::require_nginx_flag('--with-debug');

$t->start_mock('--api-key', 'secret-api-key-123');
$t->write_file('html/p', "ok\n");
$t->start_nginx(<<'EOF2', log_level => 'debug');
    esper_api_url http://%%MOCK%%;
    esper_api_key secret-api-key-123;
    esper_timeout 300ms;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location / { esper on; }
    }
EOF2

# Module lines of one request, by its connection number.
sub hops {
    my ($marker) = @_;
    my $log = $t->error_log;
    my ($conn) = $log =~ /\*(\d+) http request line: "GET \/p\?\Q$marker\E/ or return ();
    return map { /\*$conn (esper: .*)$/ ? $1 : () } split /\n/, $log;
}

# A proof that is refused, then the runtime decision.
my $r = $t->get('/p?hop=1&esper_challenge_proof=wrong-proof-456&mock_action=block',
    headers => [['Cookie', 'esper_challenge=v1.1.secret-cookie-789; other=cookie-value-000']]);
is($r->{status}, 403, 'blocked');
my @hops = hops('hop=1');
my @expected = (
    qr/^esper: state attached$/,
    qr/^esper: challenge proof taken out of the request, verifying it$/,
    qr/^esper: call \d+ started \(proof verification\)$/,
    qr/^esper: call \d+ answered$/,
    qr/^esper: challenge proof not verified$/,
    qr/^esper: call \d+ started \(runtime decision\)$/,
    qr/^esper: call \d+ answered$/,
    qr/^esper: decision block applied$/,
);
my @seen = grep { my $h = $_; grep { $h =~ $_ } @expected } @hops;
is(scalar @seen, scalar @expected, 'every hop logged once') or diag join "\n", @hops;
for my $i (0 .. $#expected) {
    like($seen[$i] // '', $expected[$i], "hop $i in order");
}

# A deadline and the failure action.
$t->get('/p?hop=2&mock_delay_ms=1000');
@hops = hops('hop=2');
ok((grep { /^esper: deadline reached$/ } @hops), 'the deadline is logged');
ok((grep { /^esper: failure action applied$/ } @hops), 'and the failure action');

# A pass cookie refused is said, without its value.
$t->get('/p?hop=3&mock_action=allow', headers => [['Cookie', 'esper_challenge=v1.1.secret-cookie-789']]);
@hops = hops('hop=3');
ok((grep { /^esper: pass cookie absent or refused$/ } @hops), 'the pass cookie check is logged');
ok((grep { /^esper: decision allow applied$/ } @hops), 'and the decision');

$t->stop_nginx;
my $log = $t->error_log;
unlike($log, qr/secret-api-key-123/, 'the API key never appears in the log');
# nginx itself logs the request line and headers at debug; the module's own
# lines never carry the proof or a cookie.
my $module_lines = join "\n", grep { /esper/ && !/http (request line|header|args|exten|uri):/ } split /\n/, $log;
unlike($module_lines, qr/wrong-proof-456/, 'the module never logs the proof');
unlike($module_lines, qr/secret-cookie-789|cookie-value-000/, 'nor cookie values');
done_testing;
