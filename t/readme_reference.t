# The README's reference against the code: its directives are exactly those
# of the module's table (src/conf/table.rs), each with a Syntax line that
# takes what the table lets it take and the table's contexts; its variables
# are exactly those the module registers (src/variables.rs), and
# $esper_result's values are those of the metrics (esper-protocol).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $root = $EsperTest::ROOT;
my $table = EsperTest::slurp("$root/src/conf/table.rs");
my $readme = EsperTest::slurp("$root/README.md");

# The table: name => { args, contexts }.
my ($commands) = $table =~ /COMMANDS: \[ngx_command_t; \d+\] = \[(.*)\];/s or BAIL_OUT('no COMMANDS in table.rs');
my %code;
for my $entry (split /(?=\bcommand\(|\bngx_command_t \{)/, $commands) {
    my ($name) = $entry =~ /ngx_string!\("(esper\w*)"\)/ or next;
    my ($args) = $entry =~ /\b(NGX_CONF_(?:FLAG|NOARGS|TAKE1|TAKE2|TAKE12|1MORE))\b/;
    my $contexts = $entry =~ /^command\(/ ? 'http, server, location'
        : join(', ', ($entry =~ /NGX_HTTP_MAIN_CONF\b/ ? 'http' : ()), ($entry =~ /NGX_HTTP_SRV_CONF\b/ ? 'server' : ()),
               ($entry =~ /NGX_HTTP_LOC_CONF\b/ ? 'location' : ()));
    $code{$name} = { args => $args, contexts => $contexts };
}
cmp_ok(scalar keys %code, '>=', 28, 'the table is read (' . scalar(keys %code) . ' directives)');

# The README's directive reference: "### name" with its Syntax and Context.
my ($reference) = $readme =~ /^## Directives\n(.*?)^## (?!#)/ms or BAIL_OUT('no "## Directives" in README.md');
my %doc;
while ($reference =~ /^### (\S+)\n(.*?)(?=^### |\z)/msg) {
    my ($name, $body) = ($1, $2);
    my ($syntax) = $body =~ /^\s*Syntax:\s+(.*?;)\s*$/m;
    my ($context) = $body =~ /^\s*Context:\s+(.*?)\s*$/m;
    $doc{$name} = { syntax => $syntax, context => $context };
}
is_deeply([sort keys %doc], [sort keys %code], 'the README describes exactly the directives of the table');

for my $name (sort keys %code) {
    my $d = $doc{$name} or next;
    my $args = $code{$name}{args};
    is($d->{context}, $code{$name}{contexts}, "$name: Context is the table's");
    my $syntax = $d->{syntax} // '';
    like($syntax, qr/^\Q$name\E[ ;]/, "$name: a Syntax line");
    # What the syntax asks for at least: without its optional [parts], the
    # first alternative.
    (my $required = $syntax) =~ s/\[[^\]]*\]//g;
    $required =~ s/^\Q$name\E\s*//;
    $required =~ s/\s*;$//;
    my @words = split ' ', (split /\s*\|\s*/, $required)[0] // '';
    if ($args eq 'NGX_CONF_FLAG') {
        like($syntax, qr/^\Q$name\E on \| off;$/, "$name: on | off");
    } elsif ($args eq 'NGX_CONF_NOARGS') {
        is($syntax, "$name;", "$name: no argument");
    } elsif ($args =~ /TAKE1|TAKE12|1MORE/) {
        cmp_ok(scalar @words, '>=', 1, "$name: the syntax asks for an argument, as nginx does") or diag $syntax;
    } elsif ($args eq 'NGX_CONF_TAKE2') {
        is(scalar @words, 2, "$name: two arguments") or diag $syntax;
    }
}

# Variables.
my ($registered) = EsperTest::slurp("$root/src/variables.rs") =~ /const VARIABLES: \[[^\]]*\] = \[(.*?)\];/s;
my @variables = sort $registered =~ /ngx_string!\("(\w+)"\)/g;
cmp_ok(scalar @variables, '>=', 5, 'the registered variables are read');
my ($section) = $readme =~ /^## (?:Embedded )?[Vv]ariables\n(.*?)^## /ms or BAIL_OUT('no variables section in README.md');
my %listed = map { $_ => 1 } $section =~ /^\| `\$(esper_\w+)`/mg;
is_deeply([sort keys %listed], \@variables, 'the README lists exactly the registered variables');
my ($results) = EsperTest::slurp("$root/esper-protocol/src/metrics.rs") =~ /pub const RESULTS: \[&str; \d+\] =\s*\[(.*?)\];/s;
my ($row) = $section =~ /^\| `\$esper_result`\s*\|(.*)$/m;
for my $result ($results =~ /"(\w+)"/g) {
    like($row // '', qr/`\Q$result\E`/, "\$esper_result: the README explains \"$result\"");
}

done_testing;
