# Bounds on what a client's bytes can cost: the decision payload stays within
# its documented size after JSON escaping and U+FFFD replacement, a request
# carrying many pass-cookie candidates gets only a few checked, and the
# verify call names the client that redeems a proof.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use JSON::PP;
use EsperTest;

# The largest payload the module writes (esper_protocol::payload::MAX_PAYLOAD_BYTES).
my $MAX_PAYLOAD_BYTES = 60_638;
my $MAX_VALUE_BYTES = 2048;

my $t = EsperTest->new;
$t->start_mock('--api-key', 'k');
$t->write_file('html/p', "ok\n");
$t->start_nginx(<<'EOF2');
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    large_client_header_buffers 8 64k;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location / { esper on; esper_send_cookies on; }
        location /none/ { esper on; }
    }
EOF2

# 1. Payload bounds after escaping: control bytes escape to six bytes each,
# invalid UTF-8 becomes U+FFFD (three bytes).
my $json = JSON::PP->new->canonical;
for my $case (['control bytes', "\x01"], ['invalid UTF-8', "\xff"], ['mixed', "\x01\xfe"]) {
    my ($what, $unit) = @$case;
    my $value = $unit x 6000;
    my $headers = join '', map { "X-H$_: $value\r\n" } 1 .. 25;
    my $query = join '&', map { "q$_=" . ('%01' x 600) } 1 .. 30;
    $t->mock_reset;
    my $r = $t->request("GET /p?mock_action=block&$query HTTP/1.1\r\nHost: a\r\nUser-Agent: $value\r\n"
        . "Cookie: c=" . ("\x01" x 3000) . "\r\n$headers" . "Connection: close\r\n\r\n");
    is($r->{status}, 403, "$what: decided");
    my $call = $t->last_call;
    is(ref $call->{body}, 'HASH', "$what: valid JSON");
    cmp_ok($call->{bytes}, '<=', $MAX_PAYLOAD_BYTES, "$what: body of $call->{bytes} bytes within the bound");
    my $ua = $json->encode([$call->{body}{request}{user_agent}]);
    cmp_ok(length($ua) - 4, '<=', $MAX_VALUE_BYTES, "$what: the user agent's serialized value within $MAX_VALUE_BYTES bytes");
    for my $h (grep { /^x-h/ } keys %{$call->{body}{request}{headers}}) {
        my $v = $json->encode([$call->{body}{request}{headers}{$h}]);
        cmp_ok(length($v) - 4, '<=', $MAX_VALUE_BYTES, "$what: header $h within bounds") or last;
    }
}

# 2. Pass cookies: only the first few well-formed candidates are checked.
my $pass = ($t->get('/none/p?esper_challenge_proof=valid-1')->{headers}{'set-cookie'} // '') =~ /^([^;]+)/ ? $1 : '';
like($pass, qr/^esper_challenge=v2\./, 'a pass cookie');
my $now = time;
my $future = $now + 600;
my @decoys = map { "esper_challenge=v2.$now.$future." . ('A' x 43) } 1 .. 4;
is($t->get('/p?mock_action=block', headers => [['Cookie', join('; ', $pass, @decoys)]])->{status}, 200, 'valid first: passes');
is($t->get('/p?mock_action=block', headers => [['Cookie', join('; ', @decoys, $pass)]])->{status}, 403,
    'after four well-formed decoys the valid one is not looked at');
my @many = map { "esper_challenge=v2.$now.$future." . ('B' x 43) } 1 .. 500;
my $r = $t->get('/p?mock_action=allow', headers => [['Cookie', join('; ', @many)]]);
is($r->{status}, 200, '500 candidates: decided normally');
my @junk = (map({ "esper_challenge=v2.$now.$future.short" } 1 .. 10), map({ "esper_challenge=v2.1.2.$_" . ('C' x 42) } 1 .. 9));
is($t->get('/p?mock_action=block', headers => [['Cookie', join('; ', @junk, $pass)]])->{status}, 200,
    'malformed and expired values are not candidates');

# 3. The verify call names the redeeming client; the mock binds proofs to
# the client that was challenged.
$r = $t->get('/p?mock_action=challenge', headers => [['User-Agent', 'agent-one']]);
my $challenge = $r->{headers}{location};
(my $solve = $challenge) =~ s{^http://[^/]+/challenge\?}{/challenge/solve?};
my $back = $t->request("GET $solve HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n", port => $t->mock_port)->{headers}{location};
(my $back_path = $back) =~ s{^http://[^/]+}{};
$r = $t->get($back_path, headers => [['User-Agent', 'agent-two']]);
my $verify = (grep { $_->{path} =~ /verify/ } @{$t->mock_requests})[-1];
is($verify->{body}{client_ip}, '127.0.0.1', 'verify sends client_ip');
is($verify->{body}{user_agent}, 'agent-two', 'and the redeeming user agent');
is($r->{status}, 302, 'another client redeeming the proof');
unlike($r->{headers}{'set-cookie'} // '', qr/esper_challenge=/, 'gets no pass: Esper refused the proof');
$r = $t->get($back_path, headers => [['User-Agent', 'agent-one']]);
like($r->{headers}{'set-cookie'} // '', qr/^esper_challenge=v2\./, 'the challenged client redeems it');

is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;
done_testing;
