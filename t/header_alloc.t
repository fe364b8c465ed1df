# A header the module adds never joins a header list half made, and a
# request whose esper_hybrid_key cannot be made is not passed on without it:
# when the allocation fails, the list is left as it was and the request gets
# 500. The failure is
# made real with a malloc that refuses one chosen allocation of the nginx
# thread, and glibc's MALLOC_PERTURB_ makes uninitialised memory visible.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
my $shim_c = $t->write_file('failmalloc.c', <<'EOF');
#define _GNU_SOURCE
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>

extern void *__libc_malloc(size_t size);

static size_t fail_size;
static long fail_nth, seen;

__attribute__((constructor)) static void init(void)
{
    const char *size = getenv("FAIL_MALLOC_SIZE"), *nth = getenv("FAIL_MALLOC_NTH");
    fail_size = size ? strtoul(size, NULL, 10) : 0;
    fail_nth = nth ? strtol(nth, NULL, 10) : 1;
}

/* Refuses the nth allocation of exactly fail_size bytes on a process's main
   thread (nginx's), counted per process. */
void *malloc(size_t size)
{
    if (fail_size && size == fail_size && syscall(SYS_gettid) == getpid() && ++seen == fail_nth)
        return NULL;
    return __libc_malloc(size);
}
EOF
my $shim = $t->dir . '/failmalloc.so';
my ($rc, $out) = EsperTest::capture('cc', '-shared', '-fPIC', '-O2', '-o', $shim, $shim_c);
is($rc, 0, 'shim built') or diag $out;

$t->start_mock('--api-key', 'k');
my $app = EsperTest::free_port();
my $conf = <<'EOF';
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    log_format seen '$status|$http_x_esper_hybrid_key|$esper_result';
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/logs/seen.log seen;
        location / {
            esper on;
            esper_hybrid_key $http_x_big;
            proxy_pass http://127.0.0.1:%%APP%%;
        }
    }
    server {
        listen 127.0.0.1:%%APP%%;
        access_log off;
        location / { return 200 "hybrid=$http_x_esper_hybrid_key\n"; }
    }
EOF
$conf =~ s/%%APP%%/$app/g;

# A value above nginx's pool limit (4 KiB) is allocated with malloc: the first
# such allocation evaluates esper_hybrid_key, whose value the header the
# module adds then keeps without a copy.
my $size = 6000;
{
    local $ENV{LD_PRELOAD} = $shim;
    local $ENV{FAIL_MALLOC_SIZE} = $size;
    local $ENV{FAIL_MALLOC_NTH} = 1;
    local $ENV{MALLOC_PERTURB_} = 165;
    $t->start_nginx($conf);
}
my @workers = $t->worker_pids;
my $big = 'h' x $size;
my $r = $t->get('/x?mock_action=allow', headers => [['X-Big', $big]]);
is($r->{status}, 500, 'the header cannot be made: 500');
$r = $t->get('/y?mock_action=allow', headers => [['X-Big', $big]]);
is($r->{status}, 200, 'the next request is served');
is($r->{body}, "hybrid=$big\n", 'with its header whole');
is_deeply([$t->worker_pids], \@workers, 'the worker did not crash');
$t->stop_nginx;
is($t->read_file('logs/seen.log'), "500|-|decided\n200|$big|decided\n",
    'the log of the failed request reads no half-made header');
unlike($t->error_log, qr/exited on signal/, 'no crash');

# The challenge proof is taken out of a request line above the pool limit: the
# copy without it is made with malloc. When that fails, the request is not
# served and its query is cut off where it is, so the proof reaches neither
# the application nor the access log.
my $t2 = EsperTest->new(name => 'header_alloc-proof');
$t2->start_mock('--api-key', 'k');
my $path = '/' . ('p' x 5000);
my $clean_line = "GET $path HTTP/1.1";
my $conf2 = <<'EOF';
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    log_format line '$status|$request|$request_uri|$args|$esper_result';
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/logs/line.log line;
        location / { esper on; proxy_pass http://127.0.0.1:%%APP%%; }
    }
    server {
        listen 127.0.0.1:%%APP%%;
        access_log %%DIR%%/logs/app.log;
        location / { return 200 "app\n"; }
    }
EOF
$conf2 =~ s/%%APP%%/$app/g;
{
    local $ENV{LD_PRELOAD} = $shim;
    # The first allocation of that size is the module's own copy of the
    # line (Rust's heap), the second the request pool's.
    local $ENV{FAIL_MALLOC_SIZE} = length $clean_line;
    local $ENV{FAIL_MALLOC_NTH} = 2;
    local $ENV{MALLOC_PERTURB_} = 165;
    $t2->start_nginx($conf2);
}
$r = $t2->get("$path?esper_challenge_proof=proof-1");
is($r->{status}, 500, 'the request without its proof cannot be made: 500');
is($t2->get("$path?mock_action=allow")->{status}, 200, 'the next request is served');
$t2->stop_nginx;
my @lines = split /\n/, $t2->read_file('logs/line.log');
is($lines[0], "500|GET $path|$path||", 'the failed request is logged without its query');
unlike($t2->read_file('logs/line.log'), qr/esper_challenge_proof|proof-1/, 'the proof is in no log line');
unlike($t2->read_file('logs/app.log') // '', qr/proof/, 'the application never saw it');
is($t2->mock_count, 1, 'Esper was asked only for the next request');
unlike($t2->error_log, qr/exited on signal/, 'no crash');
done_testing;
