# How Esper's actions combine with nginx's other access checks, as the
# README says: allow and a pass are "no objection" (never a grant), a 401 or
# 403 block yields to another module that grants access under `satisfy any`,
# any other block status and a challenge always stop the request, and a JSON
# answer is the module's own. Also after a wait for Esper and from the
# enforcement zone's hold, where the phases run again.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use MIME::Base64 qw(encode_base64);
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "protected\n");
$t->write_file('htpasswd', "alice:{PLAIN}secret\n");
$t->start_nginx(<<'EOF');
    esper_api_url http://%%MOCK%%;
    esper_api_key test-key;
    esper_enforcement_zone zone=satisfy:1m;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        esper on;
        location /all-deny/ { deny all; alias %%DIR%%/html/; }
        location /any-allow/ { satisfy any; allow 127.0.0.1; deny all; alias %%DIR%%/html/; }
        location /any-deny/ { satisfy any; deny all; alias %%DIR%%/html/; }
        location /any-429/ {
            satisfy any;
            esper_block_status 429;
            allow 127.0.0.1;
            deny all;
            alias %%DIR%%/html/;
        }
        location /any-json/ {
            satisfy any;
            esper_json_response on;
            allow 127.0.0.1;
            deny all;
            alias %%DIR%%/html/;
        }
        location /any-zone/ {
            satisfy any;
            esper_enforcement satisfy;
            allow 127.0.0.1;
            deny all;
            alias %%DIR%%/html/;
        }
        location /any-failure/ {
            satisfy any;
            esper_api_url http://127.0.0.1:1;
            esper_failure_action block;
            allow 127.0.0.1;
            deny all;
            alias %%DIR%%/html/;
        }
        location /any-basic/ {
            satisfy any;
            auth_basic "esper test";
            auth_basic_user_file %%DIR%%/htpasswd;
            alias %%DIR%%/html/;
        }
        location /all-basic/ {
            auth_basic "esper test";
            auth_basic_user_file %%DIR%%/htpasswd;
            alias %%DIR%%/html/;
        }
    }
EOF

my $good = [['Authorization', 'Basic ' . encode_base64('alice:secret', '')]];
my $bad = [['Authorization', 'Basic ' . encode_base64('alice:wrong', '')]];

sub check {
    my ($uri, $status, $what, %opt) = @_;
    my $r = $t->get($uri, %opt);
    is($r->{status}, $status, $what);
    return $r;
}

# satisfy all (nginx's default): every check must pass.
check('/all-deny/index.html', 403, 'satisfy all: Esper allows, deny all refuses');
is($t->mock_count, 1, 'satisfy all: Esper was asked first');
check('/all-basic/index.html', 401, 'satisfy all: Esper allows, auth_basic still asks');
my $r = check('/all-basic/index.html', 200, 'satisfy all: Esper allows, good credentials', headers => $good);
is($r->{body}, "protected\n", 'satisfy all: the application answers');
check('/all-basic/index.html?mock_action=block', 403, 'satisfy all: a block stands against good credentials',
    headers => $good);

# satisfy any: one grant is enough; Esper's allow is not a grant.
$r = check('/any-allow/index.html?mock_action=block', 200, 'satisfy any: an allow rule overrides a 403 block');
is($r->{body}, "protected\n", 'satisfy any: the application answers');
check('/any-deny/index.html', 403, 'satisfy any: Esper\'s allow grants nothing on its own');
check('/any-deny/index.html?mock_action=block', 403, 'satisfy any: block and deny all');
check('/any-429/index.html?mock_action=block', 429, 'satisfy any: a 429 block is not overridden');
$r = check('/any-allow/index.html?mock_action=challenge&mock_redirect=https://challenge.esperr.test/c',
    302, 'satisfy any: a challenge always redirects');
is($r->{headers}{location}, 'https://challenge.esperr.test/c', 'satisfy any: to Esper\'s page');
$r = check('/any-json/index.html?mock_action=block', 403, 'satisfy any: a JSON block is the module\'s own answer');
like($r->{body}, qr/"action":"block"/, 'satisfy any: the JSON body is sent');
unlike($r->{body}, qr/protected/, 'satisfy any: the application is not reached by a JSON block');

# Credentials under satisfy any.
check('/any-basic/index.html?mock_action=block', 200, 'satisfy any: good credentials override a block',
    headers => $good);
$r = check('/any-basic/index.html?mock_action=block', 401, 'satisfy any: bad credentials and a block: 401',
    headers => $bad);
like($r->{headers}{'www-authenticate'} // '', qr/Basic realm="esper test"/, 'satisfy any: auth_basic asks again');
check('/any-basic/index.html', 401, 'satisfy any: Esper allows, no credentials: 401');

# Esper unreachable, failure action block: a 403 like any other.
check('/any-failure/index.html', 200, 'satisfy any: an allow rule overrides the failure action\'s block');

# The enforcement zone replays the block after its hold (the phases run
# again); the allow rule still overrides it, and Esper is not asked again.
$t->mock_reset;
check('/any-zone/index.html?mock_action=block', 200, 'satisfy any: a decided block, overridden');
check('/any-zone/index.html?mock_action=block', 200, 'satisfy any: the zone\'s block after its hold, overridden');
is($t->mock_count, 1, 'satisfy any: the second block came from the zone');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
