# scripts/licenses.pl: the licenses of every crate linked into the module,
# checked against the allowed list (`make licenses` in `make test`), and the
# package's copyright file made from them.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $script = "$EsperTest::ROOT/scripts/licenses.pl";
my ($status, $output) = EsperTest::capture($script, 'check');
is($status, 0, 'every linked crate is under an allowed license') or diag $output;
like($output, qr/^ring\s+\S+\s+Apache-2\.0 AND ISC$/m, 'ring: Apache-2.0 AND ISC');
like($output, qr/^untrusted\s+\S+\s+ISC$/m, 'untrusted: ISC');
like($output, qr/^subtle\s+\S+\s+BSD-3-Clause$/m, 'subtle: BSD-3-Clause');
like($output, qr/^zerovec\s+\S+\s+Unicode-3\.0$/m, 'zerovec: Unicode-3.0');
like($output, qr/^hyper\s+\S+\s+MIT$/m, 'hyper: MIT');
like($output, qr/^tokio\s+\S+\s+MIT$/m, 'tokio: MIT');
unlike($output, qr/^(bindgen|cc|proptest|serde_derive|esper-mock)\s/m,
       'build tools, test tools and procedural macros are not linked');

{
    local $ENV{LICENSES_ALLOWED} = 'Apache-2.0 MIT';
    ($status, $output) = EsperTest::capture($script, 'check');
}
isnt($status, 0, 'a license that is not allowed fails the check');
like($output, qr/^  ring \S+: Apache-2\.0 AND ISC is not allowed$/m, 'naming the crate and its license');

($status, $output) = EsperTest::capture($script, 'copyright', '2025-2026');
is($status, 0, 'the copyright file is made');
like($output, qr{\AFormat: https://www\.debian\.org/doc/packaging-manuals/copyright-format/1\.0/\n}, 'in Debian\'s format');
like($output, qr/^Files: \*\nCopyright: 2025-2026 ngx_http_esper_module developers\nLicense: Apache-2\.0$/m, 'the module itself');
like($output, qr{^Files: objs/ngx_http_esper_module_modules\.c\n(?:.*\n)*?License: BSD-2-Clause$}m, 'nginx\'s generated module file');
like($output, qr{^Files: cargo-registry/ring-\S+/\*\nCopyright: (?:.*\n)*?License: Apache-2\.0 AND ISC$}m, 'ring, with its copyright lines');
for my $license ('Apache-2.0', 'MIT', 'ISC', 'BSD-2-Clause', 'BSD-3-Clause', 'Unicode-3.0') {
    like($output, qr/^License: \Q$license\E\n /m, "the text of $license");
}
unlike($output, qr/^License: .*\bOR\b/m, 'a choice is resolved to what is used');

done_testing;
