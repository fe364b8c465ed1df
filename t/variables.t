# $esper_action, $esper_result, $esper_decision_id and $esper_latency in an
# access log, in the module's own expressions (read while the request is
# being judged), and how settings inherit from http to server to location.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock('--api-key', 'server-key');
$t->write_file('html/index.html', "ok\n");
$t->start_nginx(<<'EOF');
    esper on;
    esper_api_url http://%%MOCK%%;
    esper_api_key http-key;
    log_format esper '$uri|$status|$esper_action|$esper_result|$esper_decision_id|$esper_latency';
    access_log %%DIR%%/logs/esper.log esper;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        esper_api_key server-key;
        location / { }
        location /monitor/ { esper_mode monitor; alias %%DIR%%/html/; }
        location /static/ { esper off; alias %%DIR%%/html/; }
        location /header/ {
            proxy_set_header X-Esper-Result $esper_result;
            proxy_set_header X-Esper-Action $esper_action;
            proxy_pass http://127.0.0.1:%%PORT%%/echo/;
        }
        location /echo/ { esper off; return 200 "$http_x_esper_result $http_x_esper_action\n"; }
        location /inside/ {
            esper_bypass $esper_result;
            esper_field seen "[$esper_result|$esper_action|$esper_decision_id]";
            esper_hybrid_key "$esper_result:$esper_action:$esper_decision_id:$esper_latency";
            proxy_pass http://127.0.0.1:%%PORT%%/key/;
        }
        location /key/ { esper off; return 200 "$http_x_esper_hybrid_key\n"; }
    }
EOF

sub logged {
    my ($uri) = @_;
    $t->wait_for_log('logs/esper.log', qr/^\Q$uri\E\|/m) or return;
    my ($line) = grep { /^\Q$uri\E\|/ } split /\n/, $t->read_file('logs/esper.log');
    return [split /\|/, $line, -1];
}

$t->get('/index.html?mock_decision_id=d-777');
my $v = logged('/index.html');
is($v->[1], 200, 'server-level key overrides the http one (the mock accepts only it)');
is_deeply([@$v[2 .. 4]], ['allow', 'decided', 'd-777'], 'allow: action, result, decision id');
like($v->[5], qr/^\d+\.\d{3}$/, 'latency in seconds with millisecond resolution');

$t->get('/monitor/index.html?mock_action=block&mock_decision_id=h-9&mock_id_in_header=1');
$v = logged('/monitor/index.html');
is_deeply([@$v[1 .. 4]], [200, 'block', 'monitor', 'h-9'], 'monitor: action recorded, not applied; id from the header');

$t->get('/static/index.html');
$v = logged('/static/index.html');
is_deeply([@$v[1 .. 5]], [200, '-', 'skipped', '-', '-'], 'esper off: skipped, no decision');

my $r = $t->get('/header/x?mock_action=allow');
is($r->{body}, "decided allow\n", 'variables usable in proxy_set_header');

# A decision id is kept whole up to 128 bytes, and a longer one not at all.
$t->write_file("html/$_.html", "ok\n") for qw(longest longer);
my $longest = 'i' x 128;
$t->get("/longest.html?mock_decision_id=$longest");
is(logged('/longest.html')->[4], $longest, 'a 128-byte decision id, whole');
$t->get("/longer.html?mock_decision_id=${longest}x");
is(logged('/longer.html')->[4], '-', 'a 129-byte decision id is dropped, not cut');

# The module's own expressions read $esper_* while it judges the request:
# esper_bypass before anything is known, esper_field when the payload is
# built, esper_hybrid_key once the decision is applied.
$t->mock_reset;
$r = $t->get('/inside/x?mock_action=allow&mock_decision_id=in-1');
like($r->{body}, qr/^decided:allow:in-1:\d+\.\d{3}$/m,
    'esper_hybrid_key sees the decision it follows');
my $call = $t->last_call;
is($call && $call->{body}{fields}{seen}, '[||]',
    'esper_field is built before the decision: $esper_* empty');
$v = logged('/inside/x');
is_deeply([@$v[1 .. 4]], [200, 'allow', 'decided', 'in-1'], 'esper_bypass naming $esper_result: judged (empty is false)');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
