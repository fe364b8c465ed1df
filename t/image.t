# The Docker image itself: the Dockerfile built with buildah on stand-in base
# images (t/tools/docker-image.sh), both variants, each run as a container in
# front of the mock Esper. buildah's chroot isolation shares the host's
# network and process table, so the container's nginx is reached on loopback
# and stopped with a signal like any nginx.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use EsperTest;

my $root = $EsperTest::ROOT;
my $image = 'localhost/nginx-esper';
my $key = 'sk_image_test_key';
my @containers;

sub buildah { EsperTest::capture('buildah', '--storage-driver', 'vfs', @_) }

END {
    buildah('rm', @containers) if @containers;
    system("$root/t/tools/docker-image.sh", 'clean');
}

my ($status, $output) = EsperTest::capture("$root/t/tools/docker-image.sh", 'build');
if (!is($status, 0, 'both variants build')) {
    diag $output;
    done_testing;
    exit;
}

my $t = EsperTest->new;
my $dir = $t->dir;
$t->start_mock;

# What the image holds before it runs: no key, the module loaded.
my $env;
($status, $env) = buildah('inspect', '--type', 'image', '--format', '{{.OCIv1.Config.Env}}', "$image:check");
is($status, 0, 'the image can be inspected');
unlike($env, qr/ESPER_API_KEY/, 'no key in the image\'s environment');

sub container {
    my ($tag) = @_;
    my ($status, $id) = buildah('from', '--pull=never', "$image:$tag");
    die "buildah from failed: $id" if $status;
    chomp $id;
    push @containers, $id;
    return $id;
}

my $ctr = container('check');
($status, $output) = buildah('run', '--isolation', 'chroot', $ctr, '--', 'sh', '-c',
    'nginx -V 2>&1; head -1 /etc/nginx/nginx.conf; ls /usr/lib/nginx/modules; cat /etc/nginx/templates/default.conf.template');
is($status, 0, 'commands run in the image');
my ($version) = `${\ EsperTest::nginx_binary()} -v 2>&1` =~ m{nginx/([\d.]+)};
like($output, qr{nginx version: nginx/\Q$version\E}, 'the base\'s nginx, of the vendored version');
like($output, qr{^load_module modules/ngx_http_esper_module\.so;$}m, 'nginx.conf loads the module first');
like($output, qr{^ngx_http_esper_module\.so$}m, 'the module is in the modules directory');
like($output, qr/esper_api_key_file \$\{ESPER_API_KEY_FILE\};/, 'the key is read from a file named at start');

# Where the container's root file system is on the host.
sub root_of {
    my ($ctr) = @_;
    my ($status, $mnt) = buildah('mount', $ctr);
    die "buildah mount failed: $mnt" if $status;
    chomp $mnt;
    return $mnt;
}

# Starts the container's entrypoint in the background; returns the pid of
# `buildah run`, whose output goes to $out.
sub start {
    my ($ctr, $out, @opts) = @_;
    my $pid = fork // die "cannot fork: $!";
    if (!$pid) {
        setpgrp(0, 0);
        open(STDOUT, '>', $out) or die "$out: $!";
        open(STDERR, '>&', \*STDOUT) or die "stderr: $!";
        exec('buildah', '--storage-driver', 'vfs', 'run', '--isolation', 'chroot', @opts, $ctr, '--',
             '/docker-entrypoint.sh', 'nginx', '-g', 'daemon off;') or exit 127;
    }
    return $pid;
}

sub wait_port {
    my ($port) = @_;
    my $deadline = time + 20;
    while (time < $deadline) {
        return 1 if IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port);
        sleep 0.05;
    }
    return 0;
}

# Stops the container's nginx as `docker stop` would (the image's STOPSIGNAL
# is QUIT); returns the exit status of `buildah run`.
sub stop {
    my ($ctr, $pid, $pid_file) = @_;
    my $master = EsperTest::slurp(root_of($ctr) . $pid_file) or die "no pid file $pid_file";
    chomp $master;
    kill 'QUIT', $master;
    return wait_exit($pid);
}

# The exit status of `buildah run`, or -1 if it did not end within 20 seconds
# (then its whole process group is killed).
sub wait_exit {
    my ($pid) = @_;
    my $deadline = time + 20;
    while (time < $deadline) {
        return $? >> 8 if waitpid($pid, WNOHANG) == $pid;
        sleep 0.05;
    }
    kill 'KILL', -$pid;
    waitpid($pid, 0);
    return -1;
}


sub free_welcome_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 8081, ReuseAddr => 1);
    return $s ? 1 : 0;
}

# Without a key, the container refuses to start and says why.
my $pid = start($ctr, "$dir/nokey.out");
my $exit = wait_exit($pid);
ok($exit > 0, 'no key: the container exits with an error');
like($t->read_file('nokey.out'), qr/set ESPER_API_KEY_FILE \(a mounted secret\) or ESPER_API_KEY/, 'saying what to set');

# The image as built: Esper in front of the welcome page, logs on stdout.
# The containers share the host's network.
if (!ok(free_welcome_port(), 'the welcome page\'s port 8081 is free on this host')) {
    done_testing;
    exit;
}
my $port = $t->{port} = EsperTest::free_port();
$pid = start($ctr, "$dir/check.out", '-e', "ESPER_API_KEY=$key", '-e', 'ESPER_API_URL=http://127.0.0.1:' . $t->mock_port,
             '-e', "ESPER_LISTEN_PORT=127.0.0.1:$port");
ok(wait_port($port), 'the container listens') or diag $t->read_file('check.out');
my $r = $t->get('/');
is($r->{status}, 200, 'allow: the welcome page');
like($r->{body}, qr/nginx is running/, 'through the default upstream');
is($t->last_call->{headers}{'x-esper-api-key'}, $key, 'Esper is asked with the key from the environment');
# Another client (realip believes 127.0.0.1): the enforcement zone
# remembers a blocked one.
$r = $t->get('/?mock_action=block', headers => [['X-Forwarded-For', '203.0.113.10']]);
is($r->{status}, 403, 'block');
$r = $t->get('/?mock_action=challenge&mock_redirect=https://challenge.esperr.test/c');
is($r->{status}, 302, 'challenge');
is($r->{headers}{location}, 'https://challenge.esperr.test/c', 'to the challenge page');
is(stop($ctr, $pid, '/run/nginx.pid'), 0, 'QUIT stops the container cleanly');
my $logs = $t->read_file('check.out');
like($logs, qr{"GET / HTTP/1\.1" 200 .* esper=decided action=allow decision=\S+ latency=\d}, 'decisions in the container\'s output');
like($logs, qr{"GET /\?mock_action=block HTTP/1\.1" 403 .* action=block}, 'blocks too');
unlike($logs, qr/\Q$key\E/, 'the output never shows the key');

# The unprivileged variant: uid 101 all along. buildah gives the container
# output pipes that uid 101 cannot reopen, so its logs go to a directory here.
$ctr = container('check-unprivileged');
mkdir "$dir/logs-101";
chown 101, 0, "$dir/logs-101";
ok(free_welcome_port(), 'port 8081 is free again');
$port = $t->{port} = EsperTest::free_port();
$pid = start($ctr, "$dir/unprivileged.out", '-v', "$dir/logs-101:/var/log/nginx", '-e', "ESPER_API_KEY=$key",
             '-e', 'ESPER_API_URL=http://127.0.0.1:' . $t->mock_port, '-e', "ESPER_LISTEN_PORT=127.0.0.1:$port");
ok(wait_port($port), 'the unprivileged container listens') or diag $t->read_file('unprivileged.out');
my $master = EsperTest::slurp(root_of($ctr) . '/tmp/nginx.pid');
chomp $master;
like(EsperTest::slurp("/proc/$master/status"), qr/^Uid:\s+101\s/m, 'nginx runs as uid 101');
$r = $t->get('/');
is($r->{status}, 200, 'allow');
$r = $t->get('/?mock_action=block');
is($r->{status}, 403, 'block');
is(stop($ctr, $pid, '/tmp/nginx.pid'), 0, 'QUIT stops it cleanly');
like($t->read_file('logs-101/access.log'), qr{"GET / HTTP/1\.1" 200 .* esper=decided action=allow}, 'decisions logged');
unlike($t->read_file('logs-101/error.log'), qr/\[(alert|crit|emerg)\]|exited on signal/, 'no alert or crash');

done_testing;
