# The documents point into the code as `src/file.rs` `name`: every file so
# named exists, and holds every name given after it, so that a refactor
# that moves or renames an item also moves the documents' pointer.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $root = $EsperTest::ROOT;
my @documents = ("$root/README.md", "$root/CONTRIBUTING.md", "$root/bench/README.md", glob("$root/docs/*.md"));
my ($pointers, @broken) = (0);
for my $document (@documents) {
    my $n = 0;
    for my $line (split /\n/, EsperTest::slurp($document)) {
        $n++;
        while ($line =~ /`((?:src|esper-protocol\/src|esper-client\/src|esper-mock\/src)\/[\w\/]+\.rs)`((?:[\s,()]*(?:and\s+)?`[\w:]+`)*)/g) {
            my ($file, $names) = ($1, $2);
            my $where = ($document =~ s{^\Q$root\E/}{}r) . ":$n";
            $pointers++;
            if (!-f "$root/$file") {
                push @broken, "$where: no $file";
                next;
            }
            my $code = EsperTest::slurp("$root/$file");
            for my $name ($names =~ /`([\w:]+)`/g) {
                my $last = (split /::/, $name)[-1];
                push @broken, "$where: $file has no $name" unless $code =~ /\b\Q$last\E\b/;
            }
        }
    }
}
cmp_ok($pointers, '>=', 20, "the documents' pointers into the code were read ($pointers)");
is(scalar @broken, 0, 'each names a file that exists and holds the names given')
    or diag join "\n", @broken;
done_testing;
