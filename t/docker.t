# The Docker image's parts without an image: the build steps the Dockerfile
# runs (scripts/docker-build-steps.sh, here with the nginx source fetched over
# HTTP as the image does for a version that is not vendored), the entrypoint
# check of the environment, and the site template rendered the way the image
# renders it, then served by nginx with the module those steps built.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Path qw(make_path);
use EsperTest;

my $root = $EsperTest::ROOT;
my $nginx = EsperTest::nginx_binary();
my $envsh = "$root/nginx-conf/docker/docker-entrypoint.d/10-esper-environment.envsh";
my $render = "$root/t/tools/standin/20-envsubst-on-templates.sh";
my $template = "$root/nginx-conf/docker/templates/default.conf.template";

my $t = EsperTest->new;
my $dir = $t->dir;
$t->start_mock;

# The nginx source as a release tarball on a local file server.
my ($version) = `$nginx -v 2>&1` =~ m{nginx/([\d.]+)};
chomp(my $source = `$root/scripts/vendored-nginx-source.sh`);
make_path("$dir/dl");
system('tar', '-czf', "$dir/dl/nginx-$version.tar.gz", '-C', "$source/..", 'nginx') == 0
    or die "tar failed\n";
my $files = EsperTest->new(name => 'docker-files');
$files->start_nginx(<<"EOF");
    server {
        listen 127.0.0.1:%%PORT%%;
        root $dir/dl;
    }
EOF

# The module step.
my $out = "$dir/out";
my $url = "http://127.0.0.1:" . $files->port . "/nginx-$version.tar.gz";
my $log = `NGINX=$nginx NGINX_SOURCE_URL=$url MODULE_WORK_DIR=$root/target/docker-steps \\
    NGX_ESPER_TARGET_DIR=\${NGX_ESPER_TARGET_DIR:-$root/target/external/target} \\
    $root/scripts/docker-build-steps.sh module $out 2>&1`;
is($? >> 8, 0, 'the module step succeeds') or diag $log;
like($log, qr/downloading \Q$url\E/, 'the source came from the URL');
like($files->access_log, qr{"GET /nginx-\Q$version\E\.tar\.gz HTTP/1\.1" 200}, 'the tarball was fetched');
like($log, qr/built for nginx \Q$version\E/, 'built for the target version');
ok(-s "$out/ngx_http_esper_module.so", 'the step leaves the module in its output directory');
my $sections = `readelf -SW $out/ngx_http_esper_module.so`;
like($sections, qr/\.dynsym/, 'an ELF shared object');
unlike($sections, qr/\.debug_info/, 'without debug information');
make_path("$dir/modules");
system('cp', "$out/ngx_http_esper_module.so", "$dir/modules/") == 0 or die "cp failed\n";

# The conf step, on a main configuration shaped like the official image's.
$t->write_file('etc/nginx.conf', <<"EOF");
worker_processes 1;
error_log $dir/logs/error.log notice;
pid $dir/logs/nginx.pid;
events { worker_connections 1024; }
http {
    default_type application/octet-stream;
    access_log $dir/logs/access.log;
    include $dir/etc/conf.d/*.conf;
}
EOF
system("$root/scripts/docker-build-steps.sh", 'conf', "$dir/etc/nginx.conf", "$dir/etc/loaded.conf") == 0
    or die "conf step failed\n";
my $loaded = $t->read_file('etc/loaded.conf');
like($loaded, qr/\Aload_module modules\/ngx_http_esper_module\.so;\n/, 'conf step loads the module first');
like($loaded, qr/\Q$dir\E\/etc\/conf\.d\/\*\.conf/, 'and keeps the image\'s configuration');
system("$root/scripts/docker-build-steps.sh", 'conf', "$dir/etc/loaded.conf", "$dir/etc/again.conf") == 0
    or die "conf step failed\n";
is($t->read_file('etc/again.conf'), $loaded, 'the conf step is idempotent');

# The template with the image's directories and welcome port mapped into the test.
my $site = EsperTest::free_port();
my $port = $t->{port} = EsperTest::free_port();
my $text = EsperTest::slurp($template);
$text =~ s{/var/log/nginx/}{$dir/logs/}g;
$text =~ s{/usr/share/nginx/html}{$dir/html}g;
$text =~ s{127\.0\.0\.1:8081}{127.0.0.1:$site}g;
$t->write_file('templates/default.conf.template', $text);
$t->write_file('html/index.html', "welcome\n");
make_path("$dir/etc/conf.d");

# Runs the entrypoint's two steps (the Esper check, then the rendering) with
# exactly the given environment; returns (exit status, output).
sub entrypoint {
    my (%env) = @_;
    my $uid = delete $env{uid};
    my @cmd = ('env', '-i', "PATH=$ENV{PATH}", map({ "$_=$env{$_}" } sort keys %env),
               'sh', '-c', 'set -e; . "$0"; "$1"', $envsh, $render);
    unshift @cmd, 'setpriv', "--reuid=$uid", "--regid=$uid", '--clear-groups' if defined $uid;
    return EsperTest::capture(@cmd);
}

my %dirs = (NGINX_ENVSUBST_TEMPLATE_DIR => "$dir/templates", NGINX_ENVSUBST_OUTPUT_DIR => "$dir/etc/conf.d");
my $rendered = "$dir/etc/conf.d/default.conf";

# The defaults, with nothing but a key.
my ($status, $output) = entrypoint(%dirs, ESPER_API_KEY => 'sk_docker_1');
is($status, 0, 'a key is all the image needs') or diag $output;
my $conf = $t->read_file('etc/conf.d/default.conf');
like($conf, qr/^\s*listen 80;/m, 'root listens on 80 by default');
like($conf, qr{esper_api_url https://api\.esperr\.com;}, 'Esper\'s API by default');
like($conf, qr{proxy_pass http://127\.0\.0\.1:8081;}, 'the welcome page is the default upstream');
like($conf, qr/esper_timeout 300ms;\s+esper_failure_action allow;\s+esper_mode enforce;\s+esper_enforcement esper;/, 'decision defaults');
like($conf, qr/esper_enforcement_zone zone=esper:10m ttl=60s;/, 'an enforcement zone by default');
like($conf, qr/set_real_ip_from 127\.0\.0\.1;\s+real_ip_header X-Forwarded-For;/, 'realip believes no one outside the container by default');
like($conf, qr{esper_api_key_file \Q$dir\E/etc/conf\.d/esper-api\.key;}, 'the key from the environment is read from a file');
unlike($conf, qr/sk_docker_1/, 'which keeps it out of the configuration');
is($t->read_file('etc/conf.d/esper-api.key'), "sk_docker_1\n", 'the file holds the key');
is((stat "$dir/etc/conf.d/esper-api.key")[2] & 0777, 0600, 'readable by its owner only');
like($conf, qr{esper_pass_secret_file \Q$dir\E/etc/conf\.d/esper-pass\.key;}, 'a pass secret made at start without ESPER_PASS_SECRET_FILE');
like($t->read_file('etc/conf.d/esper-pass.key'), qr/\A[0-9a-f]{64}\z/, '32 random bytes');
unlike($conf, qr/\$\{/, 'no variable is left unfilled');
like($conf, qr/proxy_set_header Host \$host;/, 'nginx\'s own variables stay');

# Unprivileged containers cannot bind 80.
my $unprivileged = "$dir/unprivileged";
make_path($unprivileged);
chmod 0777, $unprivileged;
($status, $output) = entrypoint(%dirs, NGINX_ENVSUBST_OUTPUT_DIR => $unprivileged,
                                ESPER_API_KEY => 'sk_docker_1', uid => 65534);
is($status, 0, 'renders as an unprivileged user') or diag $output;
like($t->read_file('unprivileged/default.conf'), qr/^\s*listen 8080;/m, 'which listens on 8080 by default');

# Refusals: each says why, none shows the key, nothing is rendered.
unlink $rendered;
($status, $output) = entrypoint(%dirs);
isnt($status, 0, 'no key: the container does not start');
like($output, qr/set ESPER_API_KEY_FILE \(a mounted secret\) or ESPER_API_KEY/, 'and says what to set');
($status, $output) = entrypoint(%dirs, ESPER_API_KEY => 'sk_1; esper off');
isnt($status, 0, 'a key that would end the directive is refused');
unlike($output, qr/sk_1/, 'without showing the key');
($status, $output) = entrypoint(%dirs, ESPER_API_KEY_FILE => "$dir/missing");
isnt($status, 0, 'an unreadable key file is refused');
like($output, qr{ESPER_API_KEY_FILE=\Q$dir\E/missing cannot be read}, 'naming the file');
($status, $output) = entrypoint(%dirs, ESPER_API_KEY => 'sk_docker_1', ESPER_PASS_SECRET_FILE => "$dir/missing");
isnt($status, 0, 'an unreadable pass secret file is refused');
like($output, qr{ESPER_PASS_SECRET_FILE=\Q$dir\E/missing cannot be read}, 'naming the file');
chmod 0555, "$dir/etc/conf.d";
($status, $output) = entrypoint(%dirs, ESPER_API_KEY => 'sk_docker_1', uid => 65534);
isnt($status, 0, 'an unwritable configuration directory is refused');
like($output, qr/not writable/, 'saying so');
chmod 0755, "$dir/etc/conf.d";
ok(!-e $rendered, 'no refusal rendered the site');

# The real run: key and pass secret from files (as Docker secrets give
# them), the mock as Esper.
$t->write_file('secrets/esper_api_key', "sk_docker_secret\n");
$t->write_file('secrets/esper_pass', ('5ecret' x 8) . "\n");
unlink "$dir/etc/conf.d/esper-api.key", "$dir/etc/conf.d/esper-pass.key";
($status, $output) = entrypoint(%dirs, ESPER_API_KEY_FILE => "$dir/secrets/esper_api_key",
    ESPER_PASS_SECRET_FILE => "$dir/secrets/esper_pass", ESPER_REAL_IP_FROM => '127.0.0.0/8',
    ESPER_API_URL => 'http://127.0.0.1:' . $t->mock_port, ESPER_UPSTREAM => "http://127.0.0.1:$site",
    ESPER_LISTEN_PORT => "127.0.0.1:$port", ESPER_FAILURE_ACTION => 'block', ESPER_TIMEOUT => '500ms');
is($status, 0, 'renders with every variable set') or diag $output;
$conf = $t->read_file('etc/conf.d/default.conf');
like($conf, qr{esper_api_key_file \Q$dir\E/secrets/esper_api_key;\n}, 'nginx reads the mounted key file');
like($conf, qr{esper_pass_secret_file \Q$dir\E/secrets/esper_pass;\n}, 'and the mounted pass secret');
ok(!-e "$dir/etc/conf.d/esper-api.key" && !-e "$dir/etc/conf.d/esper-pass.key", 'no key written beside them');
$output = `$nginx -p $dir/ -c $dir/etc/loaded.conf -t 2>&1`;
is($? >> 8, 0, 'the rendered site passes nginx -t') or diag $output;
$t->start_nginx_file("$dir/etc/loaded.conf");

my $r = $t->get('/');
is($r->{status}, 200, 'allow reaches the upstream');
is($r->{body}, "welcome\n", 'the welcome page through the proxy');
is($t->last_call->{headers}{'x-esper-api-key'}, 'sk_docker_secret', 'Esper is asked with the key, without its newline');
$t->get('/', headers => [['X-Forwarded-For', '203.0.113.9']]);
is($t->last_call->{body}{request}{client_ip}, '203.0.113.9', 'realip: Esper judges the client the proxy names');
$t->mock_reset;
$r = $t->get('/healthz?mock_action=block');
is($r->{status}, 200, 'the health check answers when Esper would block');
is($r->{body}, "ok\n", 'with its body');
$r = $t->get('/healthz?mock_status=500');
is($r->{status}, 200, 'and when Esper fails with failure action block');
is($t->mock_count, 0, 'a probe is never sent to Esper');
$r = $t->get('/?mock_action=block', headers => [['X-Forwarded-For', '203.0.113.66']]);
is($r->{status}, 403, 'a blocked client');
$r = $t->get('/', headers => [['X-Forwarded-For', '203.0.113.66']]);
is($r->{status}, 403, 'stays blocked from the enforcement zone');
is($t->mock_count, 1, 'without another call to Esper');
$r = $t->get('/?esper_challenge_proof=valid-1');
like($r->{headers}{'set-cookie'}, qr/^esper_challenge=v\d+\./, 'a verified proof gets a pass cookie');
my ($pass) = $r->{headers}{'set-cookie'} =~ /^(esper_challenge=[^;]+)/;
$t->mock_reset;
is($t->get('/', headers => [['Cookie', $pass]])->{status}, 200, 'which lets the visitor through');
is($t->mock_count, 0, 'without asking Esper');
# Another client each: the zone remembers a blocked one.
$r = $t->get('/?mock_action=block', headers => [['X-Forwarded-For', '203.0.113.10']]);
is($r->{status}, 403, 'block');
$r = $t->get('/?mock_action=challenge&mock_redirect=https://challenge.esperr.test/c',
            headers => [['X-Forwarded-For', '203.0.113.11']]);
is($r->{status}, 302, 'challenge');
is($r->{headers}{location}, 'https://challenge.esperr.test/c', 'to the challenge page');
$r = $t->get('/?mock_status=500');
is($r->{status}, 403, 'ESPER_FAILURE_ACTION applies');
ok($t->wait_for_log('logs/access.log', qr/esper=error /), 'the failure is in the access log');
like($t->access_log, qr/esper=enforced action=block /, 'the zone\'s answer too');
like($t->access_log, qr{"GET / HTTP/1\.1" 200 \d+ .* esper=decided action=allow decision=\S+ latency=\d}, 'each line shows the decision');
unlike($t->error_log . $t->access_log, qr/sk_docker_secret/, 'no log shows the key');
is(scalar($t->serious_errors), 0, 'no alert or crash');

done_testing;
