package EsperTest;

# Test harness of ngx_http_esper_module: each test gets its own directory, a
# real mock Esper process, and a real nginx (the binary the module was built
# against) on loopback ports. Perl core modules only.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);

# Test results are known before global destruction, where DESTROY may run.
our $PASSING = 1;
END { $PASSING = Test::More->builder->is_passing }

our $ROOT = abs_path(dirname(__FILE__) . '/../..');

sub target_dir { $ENV{CARGO_TARGET_DIR} || "$ROOT/target" }

sub nginx_binary {
    return $ENV{TEST_NGINX_BINARY} if $ENV{TEST_NGINX_BINARY};
    my $file = target_dir() . '/release/nginx-build-dir';
    open(my $fh, '<', $file) or die "cannot read $file: build the module first (make build)\n";
    chomp(my $dir = <$fh>);
    return "$dir/nginx";
}

# The nginx under test must have been configured with `$flag`. The project's
# own nginx always is (.cargo/config.toml): there a missing flag fails the
# test. Only another nginx given by TEST_NGINX_BINARY (a distribution's, the
# sanitizer's) may lack it, and then the test is skipped.
sub require_nginx_flag {
    my ($flag) = @_;
    my $bin = nginx_binary();
    my $v = `$bin -V 2>&1`;
    return if $v =~ /\Q$flag\E/;
    Test::More::plan(skip_all => "$bin is built without $flag") if $ENV{TEST_NGINX_BINARY};
    Test::More::BAIL_OUT("the project's nginx ($bin) is built without $flag: see .cargo/config.toml");
}

sub module_path {
    $ENV{TEST_ESPER_MODULE} || target_dir() . '/release/libngx_http_esper_module.so';
}

sub mock_binary { target_dir() . '/release/esper-mock' }

# Test objects made in this process: each gets a directory of its own, so
# that one never removes another's (and the pid file of its nginx).
my $made = 0;

sub new {
    my ($class, %args) = @_;
    my $name = $args{name} || ($0 =~ m{([^/]+)\.t$})[0] || 'test';
    my $dir = "$ROOT/t/tmp/$name-$$" . ($made++ ? "-$made" : '');
    remove_tree($dir);
    make_path("$dir/html", "$dir/logs");
    my $self = bless { dir => $dir, pids => [] }, $class;
    return $self;
}

sub dir { $_[0]{dir} }

sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0, ReuseAddr => 1)
        or die "cannot bind: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

# Starts the mock Esper; returns its port.
sub start_mock {
    my ($self, @args) = @_;
    my $pid = open(my $out, '-|', mock_binary(), '--listen', '127.0.0.1:0', @args)
        // die "cannot start the mock: $!";
    my $line = <$out>;
    die "mock did not start\n" unless defined $line && $line =~ /listening on 127\.0\.0\.1:(\d+)/;
    push @{$self->{pids}}, $pid;
    # Kept open: closing a piped open waits for the mock to exit.
    push @{$self->{mock_outs}}, $out;
    $self->{mock_port} = $1;
    return $1;
}

sub mock_port { $_[0]{mock_port} }

# Writes a file below the test directory.
sub write_file {
    my ($self, $name, $content) = @_;
    my $path = "$self->{dir}/$name";
    make_path(dirname($path));
    open(my $fh, '>', $path) or die "cannot write $path: $!";
    print $fh $content;
    close $fh;
    return $path;
}

# The full nginx.conf around the test's http{} body. In the body, %%MOCK%% is
# the mock's address, %%PORT%% the nginx port, %%DIR%% the test directory.
# Options: workers, log_level, and main (lines for the main context).
sub config {
    my ($self, $http, %opt) = @_;
    my $module = module_path();
    my $dir = $self->{dir};
    my $level = $opt{log_level} || 'info';
    my $workers = $opt{workers} || 1;
    my $main = $opt{main} // '';
    my $conf = <<"EOF";
load_module $module;
worker_processes $workers;
pid $dir/logs/nginx.pid;
error_log $dir/logs/error.log $level;
$main
events { worker_connections 4096; }
http {
    access_log $dir/logs/access.log;
    default_type text/plain;
$http
}
EOF
    $conf =~ s/%%MOCK%%/127.0.0.1:$self->{mock_port}/g if $self->{mock_port};
    $conf =~ s/%%PORT%%/$self->{port}/g if $self->{port};
    $conf =~ s/%%DIR%%/$dir/g;
    return $conf;
}

# A test CA and a certificate for 127.0.0.1 signed by it, in the test
# directory: returns the paths of (ca.pem, leaf.pem, leaf.key).
sub make_certificates {
    my ($self) = @_;
    my $dir = $self->{dir};
    $self->write_file('leaf.ext', "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n");
    for my $cmd (
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=esper-test-ca -keyout $dir/ca.key -out $dir/ca.pem",
        "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout $dir/leaf.key -out $dir/leaf.csr",
        "openssl x509 -req -in $dir/leaf.csr -CA $dir/ca.pem -CAkey $dir/ca.key -CAcreateserial -days 2 -extfile $dir/leaf.ext -out $dir/leaf.pem",
    ) {
        system("$cmd >/dev/null 2>&1") == 0 or die "openssl failed: $cmd\n";
    }
    return ("$dir/ca.pem", "$dir/leaf.pem", "$dir/leaf.key");
}

# Runs `nginx -t` on a configuration; returns (exit status, output, file).
sub test_config {
    my ($self, $http) = @_;
    $self->{port} ||= free_port();
    my $file = $self->write_file('nginx-t.conf', $self->config($http));
    my $bin = nginx_binary();
    my $output = `$bin -p $self->{dir}/ -c $file -t 2>&1`;
    return ($? >> 8, $output, $file);
}

# Starts nginx with the test's http{} body and waits until it answers.
sub start_nginx {
    my ($self, $http, %opt) = @_;
    $self->{port} ||= free_port();
    return $self->start_nginx_file($self->write_file('nginx.conf', $self->config($http, %opt)));
}

# Starts nginx with a whole configuration file whose pid file is
# logs/nginx.pid and which listens on port(); waits until it answers.
sub start_nginx_file {
    my ($self, $file) = @_;
    $self->{port} ||= free_port();
    my $bin = nginx_binary();
    my $output = `$bin -p $self->{dir}/ -c $file 2>&1`;
    die "nginx did not start: $output" if $?;
    $self->{nginx} = 1;
    my $single = slurp($file) =~ /^\s*master_process\s+off/m;
    my $deadline = time + 5;
    while (time < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port});
        next unless $s;
        # The master's pid is kept, so that it is stopped even if its pid
        # file goes away.
        $self->{nginx} = $self->nginx_pid || 1;
        # The master listens before it forks its workers: wait for them, so
        # that worker_pids() sees them.
        sleep 0.02 while !$single && !$self->worker_pids && time < $deadline;
        return $self->{port};
    } continue {
        sleep 0.02;
    }
    die "nginx does not listen on $self->{port}\n";
}

sub port { $_[0]{port} }

sub nginx_pid {
    my ($self) = @_;
    open(my $fh, '<', "$self->{dir}/logs/nginx.pid") or return;
    chomp(my $pid = <$fh>);
    return $pid;
}

# Pids of the worker processes of the running nginx.
sub worker_pids {
    my ($self) = @_;
    my $master = $self->nginx_pid or return ();
    my @pids = `pgrep -P $master`;
    chomp @pids;
    return @pids;
}

sub stop_nginx {
    my ($self) = @_;
    return unless $self->{nginx};
    my $pid = $self->nginx_pid;
    $pid = $self->{nginx} if !$pid && $self->{nginx} > 1;
    delete $self->{nginx};
    return unless $pid;
    kill 'QUIT', $pid;
    my $deadline = time + 10;
    while (kill(0, $pid) && time < $deadline) { sleep 0.02 }
    kill 'KILL', $pid if kill 0, $pid;
}

# Sends one raw request and reads the whole answer (the connection closes).
# Returns { status, headers (lower-case names), body, elapsed }.
sub request {
    my ($self, $raw, %opt) = @_;
    my $started = time;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $opt{port} || $self->{port}, Timeout => 10)
        or die "cannot connect: $!";
    binmode $s;
    print $s $raw;
    my $r = read_all($s, $opt{timeout});
    close $s;
    $r->{elapsed} = time - $started;
    return $r;
}

sub read_all {
    my ($s, $timeout) = @_;
    my $answer = '';
    my $sel = IO::Select->new($s);
    my $limit = time + ($timeout || 10);
    while (time < $limit) {
        last unless $sel->can_read($limit - time);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $answer .= $buf;
    }
    return parse_response($answer);
}

sub parse_response {
    my ($answer) = @_;
    my ($head, $body) = split /\r\n\r\n/, $answer, 2;
    my ($status_line, @lines) = split /\r\n/, $head // '';
    my ($status) = ($status_line // '') =~ m{^HTTP/\d\.\d (\d{3})};
    my %headers;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $k = lc $k;
        $headers{$k} = exists $headers{$k} ? "$headers{$k}, $v" : $v;
    }
    $body = dechunk($body) if ($headers{'transfer-encoding'} // '') =~ /chunked/i;
    return { status => $status // 0, headers => \%headers, body => $body // '', raw => $answer };
}

sub dechunk {
    my ($data) = @_;
    my $body = '';
    while ($data =~ s/^([0-9a-fA-F]+)[^\r]*\r\n//) {
        my $size = hex $1;
        last if $size == 0;
        $body .= substr($data, 0, $size, '');
        $data =~ s/^\r\n//;
    }
    return $body;
}

# GET with optional extra headers (array ref of [name, value] pairs).
sub get {
    my ($self, $uri, %opt) = @_;
    my $raw = "GET $uri HTTP/1.1\r\nHost: " . ($opt{host} // 'localhost') . "\r\n";
    $raw .= "$_->[0]: $_->[1]\r\n" for @{$opt{headers} || []};
    $raw .= "Connection: close\r\n\r\n";
    return $self->request($raw, %opt);
}

# Starts a GET without reading the answer; returns the socket.
sub open_request {
    my ($self, $uri) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Timeout => 10)
        or die "cannot connect: $!";
    print $s "GET $uri HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    return $s;
}

# A plain HTTP request to the mock's control endpoints; returns decoded JSON.
sub mock_call {
    my ($self, $method, $path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{mock_port}, Timeout => 5)
        or die "cannot reach the mock: $!";
    print $s "$method $path HTTP/1.1\r\nHost: mock\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    my $r = read_all($s, 5);
    return decode_json($r->{body});
}

sub mock_requests { $_[0]->mock_call('GET', '/__mock/requests') }
sub mock_count { $_[0]->mock_call('GET', '/__mock/count')->{runtime} }
sub mock_reset { $_[0]->mock_call('POST', '/__mock/reset') }

# The last call the mock received: { headers, body, ... }.
sub last_call {
    my ($self) = @_;
    my $all = $self->mock_requests;
    return @$all ? $all->[-1] : undef;
}

# Runs a command (a list, no shell); returns (exit status, stdout and stderr).
sub capture {
    my @cmd = @_;
    my $pid = open(my $fh, '-|') // die "cannot fork: $!";
    if (!$pid) {
        open(STDERR, '>&', \*STDOUT) or die "cannot redirect stderr: $!";
        exec(@cmd) or exit 127;
    }
    local $/;
    my $output = <$fh> // '';
    close $fh;
    return ($? >> 8, $output);
}

# A whole file, empty when it cannot be read.
sub slurp {
    my ($path) = @_;
    open(my $fh, '<', $path) or return '';
    local $/;
    return <$fh>;
}

# Resident memory of a process, in kB (0 when it is gone).
sub rss_kb {
    my ($pid) = @_;
    return (slurp("/proc/$pid/status") =~ /VmRSS:\s+(\d+)/)[0] // 0;
}

sub read_file {
    my ($self, $name) = @_;
    return slurp("$self->{dir}/$name");
}

sub error_log { $_[0]->read_file('logs/error.log') }
sub access_log { $_[0]->read_file('logs/access.log') }

# Waits until the log `$name` matches `$re`, for up to `$timeout` seconds.
sub wait_for_log {
    my ($self, $name, $re, $timeout) = @_;
    my $deadline = time + ($timeout || 5);
    while (time < $deadline) {
        return 1 if $self->read_file($name) =~ $re;
        sleep 0.02;
    }
    return 0;
}

# Error-log lines more severe than `error`, and worker crashes.
sub serious_errors {
    my ($self) = @_;
    return grep { /\[(alert|crit|emerg)\]/ || /exited on signal/ } split /\n/, $self->error_log;
}

sub DESTROY {
    my ($self) = @_;
    $self->stop_nginx;
    for my $pid (@{$self->{pids}}) {
        kill 'TERM', $pid;
        waitpid($pid, 0);
    }
    remove_tree($self->{dir}) if $self->{dir} && !$ENV{TEST_KEEP} && $PASSING;
}


1;
