# esper_api_key_file: the key read from a file when the configuration is
# loaded (its first line, trimmed), so that neither nginx.conf nor `nginx -T`
# holds it; `nginx -t` refuses a missing, unreadable or empty file, or a key
# set twice at one level, with the file and line, and never shows the key.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
my $dir = $t->dir;
$t->write_file('html/index.html', "ok\n");
$t->write_file('secrets/esper.key', "  sk_from_file_1 \r\nsecond line ignored\n");
$t->write_file('secrets/other.key', "sk_from_file_2");

sub in_location { "server { listen 127.0.0.1:%%PORT%%; location / { $_[0] } }" }

sub check_fails {
    my ($http, $message, $what) = @_;
    my ($status, $output, $file) = $t->test_config($http);
    isnt($status, 0, "$what: nginx -t fails");
    like($output, qr/\[emerg\] .*\Q$message\E.* in \Q$file\E:\d+/, "$what: says why, with file and line")
        or diag $output;
    return $output;
}

check_fails(in_location('esper_api_key_file secrets/missing.key;'),
            qq{cannot read "$dir/secrets/missing.key"}, 'a missing file');
# Root reads any file: a directory is what cannot be read here.
check_fails(in_location('esper_api_key_file secrets;'), qq{cannot read "$dir/secrets"}, 'an unreadable file');
$t->write_file('secrets/empty.key', '');
check_fails(in_location('esper_api_key_file secrets/empty.key;'),
            qq{no API key in "$dir/secrets/empty.key"}, 'an empty file');
$t->write_file('secrets/blank.key', "\n  \nsk_on_the_second_line\n");
check_fails(in_location('esper_api_key_file secrets/blank.key;'),
            qq{no API key in "$dir/secrets/blank.key"}, 'an empty first line');
$t->write_file('secrets/spaced.key', "sk_secret part\n");
my $output = check_fails(in_location('esper_api_key_file secrets/spaced.key;'),
                         'invalid API key: it must be non-empty visible ASCII', 'a key with a space');
unlike($output, qr/sk_secret/, 'the refusal does not show the key');
check_fails(in_location('esper_api_key k; esper_api_key_file secrets/esper.key;'),
            '"esper_api_key_file" and "esper_api_key" cannot both be set here', 'both at one level');
check_fails(in_location('esper_api_key_file secrets/esper.key; esper_api_key k;'),
            '"esper_api_key" and "esper_api_key_file" cannot both be set here', 'both, the other order');
check_fails(in_location('esper_api_key_file secrets/esper.key; esper_api_key_file secrets/other.key;'),
            '"esper_api_key_file" directive is duplicate', 'the file twice');
check_fails(in_location('esper on;'), '"esper on" needs "esper_api_key" or "esper_api_key_file"', 'no key at all');

# The file at http level, a key of another kind below it, and another file.
$t->start_nginx(<<"EOF");
    esper_api_url http://%%MOCK%%;
    esper_api_key_file $dir/secrets/esper.key;
    server {
        listen 127.0.0.1:%%PORT%%;
        root $dir/html;
        esper on;
        location / { }
        location /inline/ { esper_api_key sk_inline; alias $dir/html/; }
        location /other/ { esper_api_key_file secrets/other.key; alias $dir/html/; }
    }
EOF
my $r = $t->get('/index.html');
is($r->{status}, 200, 'allowed with the key from the file');
is($t->last_call->{headers}{'x-esper-api-key'}, 'sk_from_file_1', 'Esper gets the first line, trimmed');
$t->get('/inline/index.html');
is($t->last_call->{headers}{'x-esper-api-key'}, 'sk_inline', 'a location may set its own key');
$t->get('/other/index.html');
is($t->last_call->{headers}{'x-esper-api-key'}, 'sk_from_file_2', 'or its own file, relative to the prefix');
is($t->get('/index.html?mock_action=block')->{status}, 403, 'decisions apply');

my $nginx = EsperTest::nginx_binary();
my $dump = `$nginx -p $dir/ -c $dir/nginx.conf -T 2>&1`;
is($? >> 8, 0, 'nginx -T succeeds');
like($dump, qr/esper_api_key_file \Q$dir\E\/secrets\/esper\.key;/, 'nginx -T shows the file');
unlike($dump, qr/sk_from_file/, 'but not the key');
unlike($t->error_log . $t->access_log, qr/sk_from_file/, 'no log shows the key');
is(scalar(grep { !/\[emerg\]/ } $t->serious_errors), 0, 'no alert or crash (the emerg lines are nginx -t\'s refusals)');

done_testing;
