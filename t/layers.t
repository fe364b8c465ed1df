# The shape of src/, read from the code's own `crate::` paths (a folder
# counts as one module; lib.rs, the crate root that only registers the
# module, is left out): every module sits in one of the layers below and
# imports only from its own layer or lower ones; no import cycle among the
# modules; no source file over 500 lines; `unsafe` within its budget, each
# use under a `SAFETY:` comment. CONTRIBUTING.md draws the same layers.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Find;
use EsperTest;

# Top to bottom; a module may import from its own layer and those below.
my @LAYERS = (
    [entry   => qw(handler variables metrics_page)],
    [steps   => qw(steps state request response)],
    [runtime => qw(worker runtime breakers enforcement metrics)],
    [conf    => qw(conf)],
    [glue    => qw(ffi log headers nginx_conf shm)],
);
my $UNSAFE_BUDGET = 52;

my %layer_of;
for my $i (0 .. $#LAYERS) {
    my ($name, @members) = @{$LAYERS[$i]};
    $layer_of{$_} = [$i, $name] for @members;
}

my $src = "$EsperTest::ROOT/src";
my (%edges, %modules, @long, @unsafe, @unexplained);
find({ no_chdir => 1, wanted => sub {
    return unless /\.rs$/;
    my ($module) = $File::Find::name =~ m{^\Q$src\E/([^/.]+)};
    my $text = EsperTest::slurp($File::Find::name);
    my $lines = () = $text =~ /\n/g;
    push @long, "$File::Find::name ($lines lines)" if $lines > 500;
    my @lines = split /\n/, $text;
    for my $n (0 .. $#lines) {
        my $code = $lines[$n] =~ s{//.*}{}r;
        next unless $code =~ /\bunsafe\b/;
        push @unsafe, "$File::Find::name:" . ($n + 1);
        # In a function pointer's type it is no operation.
        next if $code =~ /\bunsafe\s+extern\b/ && $code !~ /\bunsafe\s*\{/;
        # The comment above the statement: up through lines that continue it.
        my ($k, $seen) = ($n - 1, $lines[$n] =~ m{//\s*SAFETY:});
        while (!$seen && $k >= 0 && $n - $k <= 12) {
            last if $lines[$k] =~ /^\s*$/;
            $seen = $lines[$k] =~ m{//\s*SAFETY:};
            last if $lines[$k] =~ /;\s*$/ && $lines[$k] !~ m{^\s*//};
            $k--;
        }
        push @unexplained, "$File::Find::name:" . ($n + 1) unless $seen;
    }
    return if $module eq 'lib';
    $modules{$module} = 1;
    $text =~ s{//[^\n]*}{}g;    # comments, doc comments included
    my @used;
    # `use crate::{a, b::c, d::{e, f}}`: the first name of each item.
    while ($text =~ /\bcrate::\{/g) {
        my ($depth, $item, $start) = (1, '', pos $text);
        for my $c (split //, substr($text, $start)) {
            $depth++ if $c eq '{';
            $depth-- if $c eq '}';
            last if $depth == 0;
            $item .= $c;
        }
        $item =~ s/\{[^{}]*\}//g while $item =~ /\{/;
        push @used, map { /^\s*(\w+)/ ? $1 : () } split /,/, $item;
    }
    push @used, $text =~ /\bcrate::(\w+)/g;
    $edges{$module}{$_} = 1 for grep { $_ ne $module } @used;
} }, $src);
# Names lib.rs itself defines (`crate::Module`) are the root's, not a module's.
for my $from (keys %edges) {
    delete $edges{$from}{$_} for grep { !$modules{$_} } keys %{$edges{$from}};
}

# Tarjan's strongly connected components: any with two or more modules is
# a cycle.
my ($index, @stack, %on, %idx, %low, @cycles) = (0);
my $visit;
$visit = sub {
    my ($v) = @_;
    $idx{$v} = $low{$v} = $index++;
    push @stack, $v;
    $on{$v} = 1;
    for my $w (sort keys %{$edges{$v} || {}}) {
        if (!exists $idx{$w}) { $visit->($w); $low{$v} = $low{$w} if $low{$w} < $low{$v} }
        elsif ($on{$w}) { $low{$v} = $idx{$w} if $idx{$w} < $low{$v} }
    }
    return unless $low{$v} == $idx{$v};
    my @scc;
    while (1) { my $w = pop @stack; delete $on{$w}; push @scc, $w; last if $w eq $v }
    push @cycles, [sort @scc] if @scc > 1;
};
$visit->($_) for grep { !exists $idx{$_} } sort keys %modules;

cmp_ok(scalar keys %modules, '>=', 10, 'the modules of src/ were read (' . join(', ', sort keys %modules) . ')');
my @unplaced = grep { !$layer_of{$_} } sort keys %modules;
is("@unplaced", '', 'every module of src/ has its layer in t/layers.t');
my @upward;
for my $from (sort keys %edges) {
    next unless $layer_of{$from};
    for my $to (sort keys %{$edges{$from}}) {
        next unless $layer_of{$to} && $layer_of{$to}[0] < $layer_of{$from}[0];
        push @upward, "$from ($layer_of{$from}[1]) -> $to ($layer_of{$to}[1])";
    }
}
is(scalar @upward, 0, 'imports point down the layers: ' . join(' > ', map { $_->[0] } @LAYERS))
    or diag join "\n", @upward;
is(scalar @cycles, 0, 'no import cycle among the modules of src/')
    or diag join '', map { cycle_text($_) } @cycles;
sub cycle_text {
    my ($members) = @_;
    my %in = map { $_ => 1 } @$members;
    my @lines = map { my $m = $_; "  $m -> " . join(', ', sort grep { $in{$_} } keys %{$edges{$m}}) } @$members;
    return "cycle among @$members:\n" . join("\n", @lines) . "\n";
}
is(scalar @long, 0, 'no file in src/ over 500 lines') or diag join "\n", @long;
cmp_ok(scalar @unsafe, '<=', $UNSAFE_BUDGET, "unsafe in src/: " . scalar(@unsafe) . " of a budget of $UNSAFE_BUDGET");
is(scalar @unexplained, 0, 'every unsafe under a SAFETY: comment') or diag join "\n", @unexplained;

# The client crate knows no nginx and needs no unsafe.
my (@client_files, @client_nginx, @client_unsafe, @client_long);
find({ no_chdir => 1, wanted => sub {
    return unless /\.rs$/;
    push @client_files, $File::Find::name;
    my $code = EsperTest::slurp($File::Find::name) =~ s{//[^\n]*}{}gr;
    push @client_nginx, $File::Find::name if $code =~ /\b(?:ngx|nginx_sys)::/;
    push @client_unsafe, $File::Find::name if $code =~ /\bunsafe\b/;
    my $lines = () = $code =~ /\n/g;
    push @client_long, $File::Find::name if $lines > 500;
} }, "$EsperTest::ROOT/esper-client/src");
cmp_ok(scalar @client_files, '>=', 8, 'the files of esper-client/src were read');
is("@client_nginx", '', 'esper-client names no nginx type');
is("@client_unsafe", '', 'esper-client has no unsafe');
is("@client_long", '', 'no file in esper-client/src over 500 lines');

# CONTRIBUTING.md draws these layers and names, per directive, the file that
# parses it and the file that acts on it.
my $guide = EsperTest::slurp("$EsperTest::ROOT/CONTRIBUTING.md");
my ($drawing) = $guide =~ /## The module's layers\n(.*?)\n## /s;
my @undrawn = grep { ($drawing // '') !~ /\b\Q$_\E(?:\.rs|\/)/ } sort keys %modules;
is("@undrawn", '', "CONTRIBUTING.md's layers name every module");
my @directives = EsperTest::slurp("$src/conf/table.rs") =~ /ngx_string!\("(esper\w*)"\)/g;
my ($row_text) = join "\n", ($drawing // '') =~ /^(\|.*)$/mg;
my @missing = grep { $row_text !~ /`\Q$_\E`/ } @directives;
cmp_ok(scalar @directives, '>=', 25, 'the directive table was read');
is("@missing", '', "CONTRIBUTING.md says where each directive is parsed and acted on");
done_testing;
