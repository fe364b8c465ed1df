# A decision made where esper_mode monitor let the request go on, after an
# internal redirect to an enforcing location: that location applies its own
# mode to the decision already made, without a second call. A denial that
# was already enforced is never applied twice (an error_page inside a
# protected location still shows the operator's page).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock('--api-key', 'k');
my $conf = <<'EOF2';
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    esper_enforcement_zone zone=bots:1m ttl=60s;
    log_format r '$uri|$status|$esper_result|$esper_action';
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/logs/r.log r;
        root %%DIR%%/html;
        # The enforcing location's own error_page after the monitoring one's.
        recursive_error_pages on;
        esper on;
        location /mon/ { esper_mode monitor; error_page 404 = /enf/fallback; }
        location /mon2/ { esper_mode monitor; error_page 404 = /mon/fallback; }
        location /enf/ { esper_enforcement bots; error_page 403 /enf/blocked.html; }
        location /open/ { esper off; }
        location /mon3/ { esper_mode monitor; error_page 404 = /open/fallback; }
    }
EOF2
$t->write_file("html/$_", "ok\n") for qw(mon/p enf/fallback open/fallback);
$t->write_file('html/mon/fallback', "monitor fallback\n");
$t->write_file('html/enf/blocked.html', "blocked page\n");
$t->start_nginx($conf);

sub get { $t->get($_[0], headers => [['User-Agent', $_[1] // 'v']]) }

my $before = $t->mock_count;
my $r = get('/mon/missing?mock_action=block', 'b1');
is($r->{status}, 403, 'monitor said block, the enforcing location it reached blocks');
like($r->{body}, qr/blocked page/, "through the enforcing location's error_page");
is($r->{headers}{'cache-control'}, 'no-store', 'not cacheable');
is($t->mock_count, $before + 1, 'one call: the decision already made');
ok($t->wait_for_log('logs/r.log', qr{^/enf/blocked\.html\|403\|decided\|block$}m), '$esper_result decided, $esper_action block');

$r = get('/mon/missing?mock_action=challenge', 'c1');
is($r->{status}, 302, 'monitor said challenge: the enforcing location challenges');
like($r->{headers}{location} // '', qr{/challenge\?return_url=}, "to Esper's page");

is(get('/mon/missing?mock_action=allow', 'a1')->{status}, 200, 'monitor said allow: served');
is(get('/mon/p?mock_action=block', 'b2')->{status}, 200, 'no redirect: monitor never enforces');
is(get('/mon2/missing?mock_action=block', 'b3')->{status}, 200, 'redirected to another monitoring location: not enforced');
like(get('/mon2/missing?mock_action=block', 'b3')->{body}, qr/monitor fallback/, 'its page is served');
is(get('/mon3/missing?mock_action=block', 'b4')->{status}, 200, 'redirected to a location with esper off: not enforced');

# A denial enforced in the first place is not applied again by its own
# error_page.
$before = $t->mock_count;
$r = get('/enf/p?mock_action=block', 'b5');
is($r->{status}, 403, 'an enforcing location blocks');
like($r->{body}, qr/blocked page/, 'and its error_page (in the same protected location) is shown, not blocked again');
is($t->mock_count, $before + 1, 'with one call');

is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;
done_testing;
