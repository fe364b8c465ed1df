# Which nginx processes run the module's background runtime: workers and the
# single process of `master_process off`, never the cache manager and loader.
# A runtime that cannot start leaves the worker serving with the failure
# action.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use EsperTest;

# Threads of a process and whether it holds an eventfd.
sub threads_of { scalar(() = glob("/proc/$_[0]/task/*")) }
sub eventfds {
    my ($pid) = @_;
    return scalar grep { (readlink($_) // '') =~ /eventfd/ } glob("/proc/$pid/fd/*");
}
sub processes_titled {
    my ($t, $title) = @_;
    return grep { EsperTest::slurp("/proc/$_/cmdline") =~ /\Q$title\E/ } $t->worker_pids;
}

# 1. Cache helper processes start nothing.
{
    my $t = EsperTest->new(name => 'processes-helpers');
    $t->start_mock('--api-key', 'k');
    $t->start_nginx(<<'EOF');
    proxy_cache_path %%DIR%%/cache keys_zone=c:1m;
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { esper on; root %%DIR%%/html; }
    }
EOF
    $t->write_file('html/index.html', "ok\n");
    is($t->get('/index.html?mock_action=block')->{status}, 403, 'the worker decides');
    my ($worker) = processes_titled($t, 'worker process');
    my @helpers = (processes_titled($t, 'cache manager'), processes_titled($t, 'cache loader'));
    is(scalar @helpers, 2, 'cache manager and loader run');
    cmp_ok(threads_of($worker), '>=', 2, 'the worker has its runtime thread');
    for my $pid (@helpers) {
        is(threads_of($pid), 1, "helper $pid: one thread, no runtime");
        # nginx's own event module may open an eventfd in any process.
        cmp_ok(eventfds($pid), '<', eventfds($worker), "helper $pid: not the module's eventfd");
    }
}

# 2. Single-process mode runs it.
{
    my $t = EsperTest->new(name => 'processes-single');
    $t->start_mock('--api-key', 'k');
    $t->start_nginx(<<'EOF', main => 'master_process off;');
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { esper on; root %%DIR%%/html; }
    }
EOF
    $t->write_file('html/index.html', "ok\n");
    is($t->get('/index.html?mock_action=block')->{status}, 403, 'master_process off: decided');
    is($t->get('/index.html?mock_action=allow')->{status}, 200, 'master_process off: allowed');
    cmp_ok(threads_of($t->nginx_pid), '>=', 2, 'the single process has the runtime thread');
}

# 3. An HTTP client that cannot start: one alert, the worker stays, every
# request to an https Esper URL gets the failure action. Here the TLS client
# cannot load the system's trust store (a certificate file that holds no
# certificate); an http Esper URL does not need it.
{
    my $t = EsperTest->new(name => 'processes-nostart');
    $t->start_mock('--api-key', 'k');
    my $bad = $t->write_file('bad-roots.pem',
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n");
    mkdir $t->dir . '/no-certs';
    my $dir = $t->dir;
    $t->make_certificates;
    my $tls = EsperTest::free_port();
    (my $conf = <<'EOF') =~ s/%%TLS%%/$tls/g;
    esper_api_url https://%%MOCK%%;
    esper_api_key k;
    log_format r '$esper_result';
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/logs/result.log r;
        root %%DIR%%/html;
        location /closed/ { esper on; esper_failure_action block; }
        location /open/ { esper on; }
        location /plain/ { esper on; esper_api_url http://%%MOCK%%; access_log off; }
        location /noverify/ {
            esper on; esper_ssl_verify off; esper_failure_action block; access_log off;
            esper_api_url https://127.0.0.1:%%TLS%%;
        }
    }
    server {
        listen 127.0.0.1:%%TLS%% ssl;
        ssl_certificate %%DIR%%/leaf.pem;
        ssl_certificate_key %%DIR%%/leaf.key;
        location / { proxy_pass http://%%MOCK%%; }
    }
EOF
    $t->start_nginx($conf, main => "env SSL_CERT_FILE=$bad;\nenv SSL_CERT_DIR=$dir/no-certs;");
    $t->write_file("html/$_", "ok\n") for qw(closed/x closed/y open/x plain/x noverify/x);
    my @before = $t->worker_pids;
    is($t->get('/closed/x?mock_action=allow')->{status}, 403, 'failure action block');
    is($t->get('/open/x?mock_action=block')->{status}, 200, 'failure action allow');
    is($t->get('/closed/y')->{status}, 403, 'and again');
    is_deeply([$t->worker_pids], \@before, 'the worker stays');
    my @alerts = grep { /\[alert\]/ } split /\n/, $t->error_log;
    is(scalar @alerts, 1, 'one alert') or diag join "\n", @alerts;
    like($alerts[0] // '', qr/esper: cannot make the HTTP clients in this worker process: .*every request gets the failure action/, 'saying why');
    unlike($t->error_log, qr/exited|internal error/, 'no worker exit, no panic');
    is($t->mock_count, 0, 'Esper not asked');
    # Plain http never depends on the trust store.
    is($t->get('/plain/x?mock_action=block')->{status}, 403, 'an http Esper URL is still asked');
    is($t->mock_count, 1, 'once');
    # No certificate is checked with esper_ssl_verify off: no trust store needed.
    is($t->get('/noverify/x?mock_action=allow')->{status}, 200, 'esper_ssl_verify off is asked');
    is($t->mock_count, 2, 'over https');
    $t->stop_nginx;
    like($t->read_file('logs/result.log'), qr/^error\nerror\nerror\n$/, '$esper_result is error');
}

done_testing;
