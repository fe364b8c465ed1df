#!/usr/bin/perl
# The licenses of what is linked into ngx_http_esper_module.so, read from
# cargo's metadata (Cargo.lock, each crate's own `license` field and license
# files): the crates the module depends on for its code (not build scripts,
# tests or procedural macros), and nginx's generated module file.
#
#   scripts/licenses.pl check              each crate and the license it is
#                                          used under; fails on one not allowed
#   scripts/licenses.pl copyright YEARS    the Debian copyright file (DEP-5)
#
# `make test` runs the check (`make licenses`); scripts/build-deb.sh writes
# the package's copyright file with the second.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP;

# What may be linked, most preferred first: an `OR` takes the first of these.
# LICENSES_ALLOWED replaces the list (t/licenses.t narrows it).
my @ALLOWED = split ' ', ($ENV{LICENSES_ALLOWED}
    // 'Apache-2.0 MIT ISC BSD-3-Clause BSD-2-Clause Unicode-3.0 Zlib');
my %allowed = map { $_ => 1 } @ALLOWED;

my ($mode, $years) = @ARGV;
$mode //= '';
die "usage: $0 check | copyright YEARS\n" unless $mode eq 'check' || ($mode eq 'copyright' && $years);

my $root = abs_path(dirname(__FILE__) . '/..');
chdir $root or die "cannot enter $root: $!\n";
chomp(my $host = `rustc -vV` =~ /^host: (\S+)/m ? $1 : '');
die "cannot read rustc's host target\n" unless $host;
my @cmd = ('cargo', 'metadata', '--format-version', '1', '--locked', '--filter-platform', $host);
my $json = `@cmd --offline 2>/dev/null`;
$json = `@cmd` if $?;
die "cargo metadata failed\n" if $?;
my $meta = decode_json($json);

my %package = map { $_->{id} => $_ } @{$meta->{packages}};
my %node = map { $_->{id} => $_ } @{$meta->{resolve}{nodes}};
my ($module) = grep { $package{$_}{name} eq 'ngx_http_esper_module' } keys %package;
my %workspace = map { $_ => 1 } @{$meta->{workspace_members}};

# The crates linked into the module: its normal dependencies, transitively.
my (%linked, @todo);
@todo = ($module);
while (defined(my $id = shift @todo)) {
    next if $linked{$id}++;
    for my $dep (@{$node{$id}{deps}}) {
        push @todo, $dep->{pkg} if grep { !defined $_->{kind} } @{$dep->{dep_kinds}};
    }
}
my @crates = sort { $package{$a}{name} cmp $package{$b}{name} || $package{$a}{version} cmp $package{$b}{version} }
    grep { !$workspace{$_} }
    grep { !grep { grep { $_ eq 'proc-macro' } @{$_->{kind}} } @{$package{$_}{targets}} } keys %linked;

# An SPDX expression (`AND`, `OR`, `WITH`, parentheses; the old `/` is `OR`)
# as the allowed licenses it can be used under, or undef.
sub choose {
    my ($expr) = @_;
    my @tokens = $expr =~ /\(|\)|[^\s()]+/g;
    @tokens = map { $_ eq '/' ? 'OR' : $_ } @tokens;
    my $pos = 0;
    my ($or, $and, $atom);
    $or = sub {
        my @alternatives = ($and->());
        while (($tokens[$pos] // '') eq 'OR') { $pos++; push @alternatives, $and->() }
        for my $name (@ALLOWED) {
            for (@alternatives) { return $_ if $_ && grep { $_ eq $name } @$_ }
        }
        return (grep { defined } @alternatives)[0];
    };
    $and = sub {
        my @all = ($atom->());
        while (($tokens[$pos] // '') eq 'AND') { $pos++; push @all, $atom->() }
        return undef if grep { !defined } @all;
        return [map { @$_ } @all];
    };
    $atom = sub {
        my $token = $tokens[$pos++] // '';
        if ($token eq '(') { my $r = $or->(); $pos++; return $r }
        my $id = $token;
        if (($tokens[$pos] // '') eq 'WITH') {
            $id .= " WITH $tokens[$pos + 1]";
            $pos += 2;
        }
        return $allowed{$id} ? [$id] : undef;
    };
    my $chosen = $or->();
    return $pos == @tokens ? $chosen : undef;
}

my (@refused, %used, @rows);
for my $id (@crates) {
    my $p = $package{$id};
    my $expr = $p->{license};
    my $chosen = defined $expr ? choose($expr) : undef;
    if (!$chosen) {
        push @refused, "$p->{name} $p->{version}: " . ($expr // 'no license field') . ' is not allowed';
        next;
    }
    $used{$_}++ for @$chosen;
    push @rows, [$p, join(' AND ', @$chosen)];
}

if ($mode eq 'check') {
    printf "%-28s %-10s %s\n", $_->[0]{name}, $_->[0]{version}, $_->[1] for @rows;
    if (@refused) {
        print STDERR "licenses not allowed (allowed: @ALLOWED):\n";
        print STDERR "  $_\n" for @refused;
        exit 1;
    }
    printf "%d crates linked, each under an allowed license (%s)\n", scalar @rows, join(', ', sort keys %used);
    exit 0;
}
die join("\n", 'licenses not allowed:', @refused) . "\n" if @refused;

# The copyright lines of a crate: from its license files, else its authors.
sub holders {
    my ($p) = @_;
    my $dir = dirname($p->{manifest_path});
    my %seen;
    my @lines;
    for my $file (sort glob("$dir/{LICENSE,LICENCE,COPYING,NOTICE}*")) {
        open(my $fh, '<', $file) or next;
        while (<$fh>) {
            s/^[\s\/#*]+//;
            s/\s+$//;
            next unless /^Copyright\b.*\d{4}/i;
            next if /\[yyyy\]|\{yyyy\}|<year>/i;
            s/^Copyright\s*(?:\(c\)|©)?\s*//i;
            push @lines, $_ unless $seen{lc $_}++;
        }
    }
    @lines = map { s/\s*<[^>]*>//r } @{$p->{authors}} unless @lines;
    @lines = ("the $p->{name} developers") unless @lines;
    return @lines;
}

sub field { my ($text) = @_; join("\n", map { length $_ ? " $_" : ' .' } split /\n/, $text) }

my %TEXT = (
    'Apache-2.0' => <<'EOF',
Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

https://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.

On Debian systems, the complete text of the Apache License version 2.0
can be found in "/usr/share/common-licenses/Apache-2.0".
EOF
    'MIT' => <<'EOF',
Permission is hereby granted, free of charge, to any person obtaining a
copy of this software and associated documentation files (the "Software"),
to deal in the Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, sublicense,
and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included
in all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS
OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT.
IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY
CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,
TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
EOF
    'ISC' => <<'EOF',
Permission to use, copy, modify, and/or distribute this software for any
purpose with or without fee is hereby granted, provided that the above
copyright notice and this permission notice appear in all copies.

THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES
WITH REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF
MERCHANTABILITY AND FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR
ANY SPECIAL, DIRECT, INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES
WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN AN
ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF
OR IN CONNECTION WITH THE USE OR PERFORMANCE OF THIS SOFTWARE.
EOF
    'BSD-2-Clause' => <<'EOF',
Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions
are met:
1. Redistributions of source code must retain the above copyright
   notice, this list of conditions and the following disclaimer.
2. Redistributions in binary form must reproduce the above copyright
   notice, this list of conditions and the following disclaimer in the
   documentation and/or other materials provided with the distribution.

THIS SOFTWARE IS PROVIDED BY THE AUTHOR AND CONTRIBUTORS ``AS IS'' AND
ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE
ARE DISCLAIMED.  IN NO EVENT SHALL THE AUTHOR OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS
OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION)
HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT
LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY
OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF
SUCH DAMAGE.
EOF
    'BSD-3-Clause' => <<'EOF',
Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are
met:

1. Redistributions of source code must retain the above copyright
notice, this list of conditions and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright
notice, this list of conditions and the following disclaimer in the
documentation and/or other materials provided with the distribution.

3. Neither the name of the copyright holder nor the names of its
contributors may be used to endorse or promote products derived from
this software without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS
IS" AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED
TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A
PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT
HOLDER OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL,
SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED
TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR
PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF
LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING
NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS
SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
EOF
    'Unicode-3.0' => <<'EOF',
UNICODE LICENSE V3

Permission is hereby granted, free of charge, to any person obtaining a
copy of data files and any associated documentation (the "Data Files") or
software and any associated documentation (the "Software") to deal in the
Data Files or Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, and/or sell
copies of the Data Files or Software, and to permit persons to whom the
Data Files or Software are furnished to do so, provided that either (a)
this copyright and permission notice appear with all copies of the Data
Files or Software, or (b) this copyright and permission notice appear in
associated Documentation.

THE DATA FILES AND SOFTWARE ARE PROVIDED "AS IS", WITHOUT WARRANTY OF ANY
KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT OF
THIRD PARTY RIGHTS.

IN NO EVENT SHALL THE COPYRIGHT HOLDER OR HOLDERS INCLUDED IN THIS NOTICE
BE LIABLE FOR ANY CLAIM, OR ANY SPECIAL INDIRECT OR CONSEQUENTIAL DAMAGES,
OR ANY DAMAGES WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS,
WHETHER IN AN ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION,
ARISING OUT OF OR IN CONNECTION WITH THE USE OR PERFORMANCE OF THE DATA
FILES OR SOFTWARE.

Except as contained in this notice, the name of a copyright holder shall
not be used in advertising or otherwise to promote the sale, use or other
dealings in these Data Files or Software without prior written
authorization of the copyright holder.
EOF
);
$used{'BSD-2-Clause'}++;
for (keys %used) { die "no license text for $_\n" unless $TEXT{$_} }
@ALLOWED = grep { $TEXT{$_} } @ALLOWED;

print <<"EOF";
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ngx_http_esper_module
Comment: The module is written in Rust. The Rust libraries (crates) it is
 built from, at the versions in the source's Cargo.lock, are linked into
 ngx_http_esper_module.so statically; each is listed below with the
 license it is used under (where a crate offers a choice, the first of
 @ALLOWED it offers). nginx's build links in a file of its own
 that lists the module. Generated by scripts/licenses.pl.

Files: *
Copyright: $years ngx_http_esper_module developers
License: Apache-2.0

Files: objs/ngx_http_esper_module_modules.c
Copyright: 2002-2021 Igor Sysoev
 2011-2025 Nginx, Inc.
License: BSD-2-Clause
Comment: Generated by nginx's build system (auto/module) from nginx's own
 templates, and linked into the module.
EOF
for (@rows) {
    my ($p, $license) = @$_;
    my @holders = holders($p);
    print "\nFiles: cargo-registry/$p->{name}-$p->{version}/*\n";
    print "Copyright: ", join("\n ", @holders), "\n";
    print "License: $license\n";
    print "Comment: the crate $p->{name} $p->{version}, licensed ", ($p->{license} // ''), "\n";
}
for my $name (grep { $used{$_} } @ALLOWED) {
    print "\nLicense: $name\n", field($TEXT{$name}), "\n";
}
