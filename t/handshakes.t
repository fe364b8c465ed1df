# TLS handshakes at a distance: behind a relay that adds 300 ms of round
# trip, a call whose new connection is still in its TLS handshake at the
# call's 500 ms deadline fails, but the connection, once its handshake
# completes, joins the pool: the next call uses it (one round trip, within
# its deadline) and no new connection is made. A connection made after the
# server closed the old one resumes the TLS session. Over HTTP/1.1 and
# HTTP/2. A worker reports its handshakes as it exits (per reload).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use EsperTest;

my $t = EsperTest->new;
my $dir = $t->dir;
$t->start_mock;
$t->write_file('html/index.html', "ok\n");
$t->make_certificates;
my $front = EsperTest::free_port();

my %relay;
END { kill 'TERM', $_->{pid} for values %relay }
for my $kind ('h1', 'h2') {
    my $pid = open(my $out, '-|', 'python3', "$EsperTest::ROOT/t/tools/relay.py", '--to', "127.0.0.1:$front",
        '--rtt-ms', '300', '--accepts', "$dir/accepts-$kind") // die "relay: $!";
    my $line = <$out>;
    die "relay did not start\n" unless $line && $line =~ /listening on 127\.0\.0\.1:(\d+)/;
    $relay{$kind} = { pid => $pid, out => $out, port => $1 };
}

my $conf = <<'EOF_CONF';
    esper_api_key test-key;
    esper_timeout 500ms;
    esper_failure_action block;
    esper_circuit_breaker off;
    esper_ssl_trusted_certificate ca.pem;
    log_format tls "$ssl_session_reused $server_protocol";
    server {
        listen 127.0.0.1:%%FRONT%% ssl;
        http2 on;
        ssl_certificate %%DIR%%/leaf.pem;
        ssl_certificate_key %%DIR%%/leaf.key;
        keepalive_timeout 3s;
        access_log %%DIR%%/logs/front.log tls;
        location / { proxy_pass http://%%MOCK%%; }
    }
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location /h1/ { esper on; esper_http2 off; esper_api_url https://127.0.0.1:%%H1%%; alias %%DIR%%/html/; }
        location /h2/ { esper on; esper_http2 on; esper_api_url https://127.0.0.1:%%H2%%; alias %%DIR%%/html/; }
    }
EOF_CONF
$conf =~ s/%%FRONT%%/$front/g;
$conf =~ s/%%H1%%/$relay{h1}{port}/g;
$conf =~ s/%%H2%%/$relay{h2}{port}/g;
$t->start_nginx($conf);

sub accepts { my $n = $t->read_file("accepts-$_[0]"); return $n eq '' ? 0 : $n }
sub front_lines { return [grep { /\Q$_[0]\E/ } split /\n/, $t->read_file('logs/front.log')] }

for my $kind ('h1', 'h2') {
    my $version = $kind eq 'h1' ? 'HTTP/1.1' : 'HTTP/2.0';
    my $r = $t->get("/$kind/index.html?mock_action=allow");
    is($r->{status}, 403, "$kind: the first call's deadline passes during the TLS handshake (failure action)");
    sleep 0.6;
    $r = $t->get("/$kind/index.html?mock_action=allow");
    is($r->{status}, 200, "$kind: the next call is decided on the connection that call opened");
    cmp_ok($r->{elapsed}, '<', 0.5, sprintf("$kind: in one round trip (%.2f s)", $r->{elapsed}));
    is(accepts($kind), 1, "$kind: one connection made");

    # The front closes the idle connection after 3 s; the next one resumes.
    sleep 4;
    $t->get("/$kind/index.html?mock_action=allow");
    sleep 0.6;
    $r = $t->get("/$kind/index.html?mock_action=allow");
    is($r->{status}, 200, "$kind: decided on a new connection");
    is(accepts($kind), 2, "$kind: the second connection");
    my @lines = @{front_lines($version)};
    like($lines[0] // '', qr/^\. /, "$kind: the first handshake was a full one");
    like($lines[-1] // '', qr/^r /, "$kind: the second resumed the TLS session");
}

# A reload: the old worker reports its connections and handshakes.
kill 'HUP', $t->nginx_pid;
ok($t->wait_for_log('logs/error.log', qr/esper: \d+ calls to Esper from this worker/, 10), 'the old worker reports as it exits');
like($t->error_log, qr/\[notice\].*esper: 8 calls to Esper from this worker over 4 new connections; 2 full and 2 resumed TLS handshakes \(25000 and 25000 per 100,000 calls\)/,
    'eight calls, four connections, two full and two resumed handshakes');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
