#!/usr/bin/perl
# The shape of src/ (make layers; not yet part of make test: src/ still has
# the import cycle it reports, issue 25):  no import cycle among its top-level modules
# (a folder counts as one module; lib.rs, the crate root that only
# registers the module, is left out), read from the code's own `crate::`
# paths; and no source file over 500 lines.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Find;
use EsperTest;

my $src = "$EsperTest::ROOT/src";
my (%edges, %modules, @long);
find({ no_chdir => 1, wanted => sub {
    return unless /\.rs$/;
    my ($module) = $File::Find::name =~ m{^\Q$src\E/([^/.]+)};
    my $text = EsperTest::slurp($File::Find::name);
    my $lines = () = $text =~ /\n/g;
    push @long, "$File::Find::name ($lines lines)" if $lines > 500;
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
is(scalar @cycles, 0, 'no import cycle among the modules of src/')
    or diag join '', map { cycle_text($_) } @cycles;
sub cycle_text {
    my ($members) = @_;
    my %in = map { $_ => 1 } @$members;
    my @lines = map { my $m = $_; "  $m -> " . join(', ', sort grep { $in{$_} } keys %{$edges{$m}}) } @$members;
    return "cycle among @$members:\n" . join("\n", @lines) . "\n";
}
is(scalar @long, 0, 'no file in src/ over 500 lines') or diag join "\n", @long;
done_testing;
