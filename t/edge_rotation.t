# nginx itself as Esper's TLS edge, rotating its connections the way edges
# do: `keepalive_requests 40` (a GOAWAY, or Connection: close, after 40
# calls), 8 streams per HTTP/2 connection, `keepalive_timeout 1s`, and
# graceful reloads of the edge under load. The module's location fails
# closed (esper_failure_action block), so any call lost to a rotation shows
# as a 403: over HTTP/2 and HTTP/1.1 there are none, and the sockets to the
# edge are all closed once the edge stops.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX ();
use EsperTest;

my $t = EsperTest->new;
my $edge = EsperTest->new(name => 'edge_rotation_edge');
$t->start_mock('--no-record');
my ($ca) = $edge->make_certificates;
my $mock = $t->mock_port;
$edge->start_nginx(<<"EOF");
    access_log off;
    server {
        listen 127.0.0.1:%%PORT%% ssl;
        http2 on;
        ssl_certificate %%DIR%%/leaf.pem;
        ssl_certificate_key %%DIR%%/leaf.key;
        http2_max_concurrent_streams 8;
        keepalive_requests 40;
        keepalive_timeout 1s;
        location / { proxy_pass http://127.0.0.1:$mock; }
    }
EOF
my $edge_port = $edge->port;
$t->write_file("html/$_/index.html", "ok\n") for qw(h1 h2);
$t->start_nginx(<<"EOF", workers => 2);
    access_log off;
    esper_api_url https://127.0.0.1:$edge_port;
    esper_ssl_trusted_certificate $ca;
    esper_api_key k;
    esper_timeout 3s;
    esper_failure_action block;
    esper_circuit_breaker off;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location /h2/ { esper on; esper_http2 on; }
        location /h1/ { esper on; esper_http2 off; }
    }
EOF

# `clients` processes each asking for `path` one request after another for
# `seconds`, while the edge is reloaded `reloads` times: the statuses seen.
sub load {
    my ($path, %opt) = @_;
    my (@files, @children);
    for my $c (1 .. $opt{clients}) {
        my $file = $t->dir . "/statuses-$path-$c" =~ s{/}{_}gr;
        $file = $t->dir . '/' . ($file =~ s{^.*/}{}r);
        push @files, $file;
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            open(my $out, '>', $file) or die;
            my $until = time + $opt{seconds};
            while (time < $until) {
                my $r = eval { $t->get("$path?mock_action=allow&mock_delay_ms=20", timeout => 10) };
                print $out(($r ? $r->{status} : 'none') . "\n");
            }
            close $out;
            $_->{nginx} = 0, $_->{pids} = [] for $t, $edge;
            POSIX::_exit(0);
        }
        push @children, $pid;
    }
    for (1 .. $opt{reloads}) {
        sleep $opt{seconds} / ($opt{reloads} + 1);
        kill 'HUP', $edge->nginx_pid;
    }
    waitpid($_, 0) for @children;
    return map { split /\n/, EsperTest::slurp($_) } @files;
}

for my $version (qw(h2 h1)) {
    my $reloads_before = () = $edge->error_log =~ /SIGHUP\) received/g;
    my @got = load("/$version/index.html", clients => 24, seconds => 5, reloads => 3);
    my $failed = grep { $_ ne '200' } @got;
    cmp_ok(scalar @got, '>', 1000, "$version: the load ran (" . scalar(@got) . ' requests)');
    is($failed, 0, "$version: no call failed while the edge rotated its connections and reloaded");
    my $reloads = () = $edge->error_log =~ /SIGHUP\) received/g;
    is($reloads - $reloads_before, 3, "$version: the edge reloaded three times");
}
my @lost = grep { /\[error\]/ } split /\n/, $t->error_log;
is(scalar @lost, 0, 'no failed call logged') or diag join "\n", @lost[0 .. ($#lost < 4 ? $#lost : 4)];
is(scalar $t->serious_errors, 0, 'no alerts or crashes');

# With the edge gone, no socket of the module stays open to it.
my @workers = $t->worker_pids;
$edge->stop_nginx;
my $deadline = time + 10;
my @open;
while (time < $deadline) {
    my %worker = map { $_ => 1 } @workers;
    @open = grep { /\s127\.0\.0\.1:$edge_port\s/ && /pid=(\d+),/ && $worker{$1} } split /\n/, `ss -tanpH 2>/dev/null`;
    last if !@open;
    sleep 0.2;
}
is(scalar @open, 0, 'every connection to the edge closed after it stopped') or diag join "\n", @open;
done_testing;
