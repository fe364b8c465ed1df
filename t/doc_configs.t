# Every nginx configuration the documentation shows (each ```nginx block of
# README.md, CONTRIBUTING.md and docs/*.md) passes `nginx -t` with this
# module, taken from the files as written. A block is a whole nginx.conf
# (it has `events`), an `http { }` block, what goes in http (it has a
# `server`, or directives of http only), what goes in a server (it has a
# `location`), or what goes in a location; the test puts it there, with the
# module loaded. Placeholders the text explains are filled in: files under
# /etc/nginx/ and /var/log/nginx/ exist, and an upstream named in
# `proxy_pass http://NAME` (app, api) is defined. nginx-conf/ is
# t/configs.t's.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Basename qw(basename);
use EsperTest;

my $root = $EsperTest::ROOT;
my $t = EsperTest->new;
my $dir = $t->dir;
my (undef, $cert, $key) = $t->make_certificates;
$t->write_file('etc/esper-pass.key', ('0123456789abcdef' x 4) . "\n");
$t->write_file('etc/esper-api.key', "YOUR_ESPER_API_KEY\n");
$t->write_file('etc/tls/site.pem', $t->read_file('leaf.pem'));
$t->write_file('etc/tls/site.key', $t->read_file('leaf.key'));
my $module = EsperTest::module_path();
my $nginx = EsperTest::nginx_binary();

# Where a fragment goes.
sub context {
    my ($block) = @_;
    # Only what is outside any braces decides.
    my $top = $block;
    1 while $top =~ s/\{[^{}]*\}/;/g;
    return 'main' if $top =~ /^\s*(events|load_module|worker_processes)\b/m;
    return 'http block' if $top =~ /^\s*http\s*;/m;
    return 'http' if $top =~ /^\s*(server|upstream|geo|map|log_format|esper_enforcement_zone|limit_req_zone)\b/m;
    return 'server' if $top =~ /^\s*(location|listen|server_name)\b/m;
    return 'location';
}

sub whole {
    my ($block) = @_;
    my $context = context($block);
    my $key = $block =~ /\besper_api_key(_file)?\b/ ? '' : "esper_api_key YOUR_ESPER_API_KEY;\n";
    my %named = map { $_ => 1 } $block =~ m{proxy_pass http://([a-z]+)[;/]}g;
    delete $named{$_} for $block =~ /\bupstream (\w+)/g;
    my $app = join '', map { "upstream $_ { server 127.0.0.1:3000; }\n" } sort keys %named;
    my $conf = $context eq 'main' ? $block
        : $context eq 'http block' ? "events {}\n$block"
        : $context eq 'http' ? "events {}\nhttp {\n$key$app$block\n}\n"
        : $context eq 'server' ? "events {}\nhttp {\n$key$app" . "server {\nlisten 80;\n$block\n}\n}\n"
        : "events {}\nhttp {\n$key$app" . "server {\nlisten 80;\nlocation / {\n$block\n}\n}\n}\n";
    $conf =~ s/^(\s*http\s*\{\n)/$1$key$app/m if $context eq 'http block';
    $conf =~ s/^(\s*http\s*\{\n)/$1$app/m if $context eq 'main';
    $conf = "load_module modules/ngx_http_esper_module.so;\n$conf" unless $conf =~ /load_module/;
    $conf =~ s{load_module modules/ngx_http_esper_module\.so;}{load_module $module;};
    $conf =~ s{/etc/nginx/}{$dir/etc/}g;
    $conf =~ s{/var/log/nginx/}{$dir/logs/}g;
    return ($context, $conf);
}

my @docs = grep { -f } ("$root/README.md", "$root/CONTRIBUTING.md", sort glob("$root/docs/*.md"));
my $count = 0;
my %found;
for my $doc (@docs) {
    my $name = basename($doc);
    my $text = EsperTest::slurp($doc);
    my $n = 0;
    while ($text =~ /^```nginx\n(.*?)^```$/msg) {
        my $block = $1;
        my $line = 1 + (substr($text, 0, $-[0]) =~ tr/\n//);
        $n++;
        $count++;
        $found{$name}++;
        my ($context, $conf) = whole($block);
        my $file = $t->write_file("conf/$name-$n.conf", $conf);
        my $output = `$nginx -p $dir/ -c $file -t 2>&1`;
        is($? >> 8, 0, "$name line $line (in $context) passes nginx -t") or diag "$output\n$conf";
    }
}
# Each document's examples are found where they are: the README's
# configuration; docs/exceptions.md's example (the one t/bypass.t runs) and
# its CORS preflight; the metrics, the zone and the JSON API of
# docs/directives.md; and those of challenge.md and install.md.
my %least = ('README.md' => 1, 'exceptions.md' => 2, 'directives.md' => 3, 'challenge.md' => 1,
             'install.md' => 1);
cmp_ok($found{$_} // 0, '>=', $least{$_}, "$_: its configurations are found") for sort keys %least;
cmp_ok($count, '>=', 8, "the documentation's configurations are found ($count)");

done_testing;
