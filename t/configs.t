# Every ready configuration in nginx-conf/ passes `nginx -t` with this module.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Basename qw(basename);
use EsperTest;

my $t = EsperTest->new;
my $dir = $t->dir;
my (undef, $cert, $key) = $t->make_certificates;
$t->write_file('etc/esper-pass.key', ('0123456789abcdef' x 4) . "\n");
$t->write_file('etc/esper-api.key', "YOUR_ESPER_API_KEY\n");
$t->write_file('etc/tls/site.pem', $t->read_file('leaf.pem'));
$t->write_file('etc/tls/site.key', $t->read_file('leaf.key'));
my $module = EsperTest::module_path();
my $nginx = EsperTest::nginx_binary();

my @configs = sort glob("$EsperTest::ROOT/nginx-conf/*.conf");
cmp_ok(scalar @configs, '>=', 10, 'the ready configurations are there');
for my $path (@configs) {
    my $name = basename($path);
    my $conf = EsperTest::slurp($path) or die "cannot read $path\n";
    $conf =~ s{load_module modules/ngx_http_esper_module\.so;}{load_module $module;};
    $conf =~ s{/etc/nginx/}{$dir/etc/}g;
    # The demo's placeholders, as scripts/run-demo.sh fills them.
    my %demo = (MODULE => $module, RUN_DIR => $dir, ESPER_API_URL => 'http://127.0.0.1:8090',
                ESPER_API_KEY => 'demo-key', PORT => 8080, APP_PORT => 8081);
    $conf =~ s/\@\@(\w+)\@\@/$demo{$1}/g;
    my $file = $t->write_file("conf/$name", $conf);
    my $output = `$nginx -p $dir/ -c $file -t 2>&1`;
    is($? >> 8, 0, "$name passes nginx -t") or diag $output;
}

done_testing;
