# The answers that deny: every one is kept out of shared caches
# (Cache-Control: no-store), in its plain and JSON forms, from a decision,
# from the enforcement zone, from the failure action and through error_page;
# and esper_block_status 444 always closes the connection, as nginx's own
# `return 444` does, whatever form the client would take.
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
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        esper on;
        esper_enforcement bots;
        location /json/ { esper_json_response on; }
        location /failing/ { esper_api_url http://127.0.0.1:1; esper_failure_action block; }
        location /rate/ { esper_block_status 429; }
        location /page/ { error_page 403 /blocked.html; }
        location = /blocked.html { esper off; }
        location /close/ {
            esper_block_status 444;
            location /close/json/ { esper_json_response on; }
            location /close/failing/ { esper_api_url http://127.0.0.1:1; esper_failure_action block; }
        }
    }
EOF2
$t->write_file("html/$_", "ok\n") for qw(p json/p failing/p rate/p page/p close/p close/json/p close/failing/p);
$t->write_file('html/blocked.html', "blocked here\n");
$t->start_nginx($conf);

sub get { my ($uri, $ua, @h) = @_; $t->get($uri, headers => [['User-Agent', $ua], @h]) }
my @json = (['Accept', 'application/json'], ['Sec-Fetch-Mode', 'cors']);

# 1. no-store on every denial.
for my $case (
    ['/p?mock_action=block', 'u1', [], 403, 'a block'],
    ['/p?mock_action=allow', 'u1', [], 403, 'a block from the zone'],
    ['/p?mock_action=block', 'u2', \@json, 403, 'a JSON block (auto, a script client)'],
    ['/json/p?mock_action=block', 'u3', [], 403, 'a JSON block (on)'],
    ['/json/p?mock_action=allow', 'u3', [], 403, 'a JSON block from the zone'],
    ['/rate/p?mock_action=block', 'u4', [], 429, 'a block with esper_block_status 429'],
    ['/rate/p?mock_action=allow', 'u4', [], 429, 'the same from the zone'],
    ['/failing/p', 'u5', [], 403, 'the failure action block'],
    ['/page/p?mock_action=block', 'u6', [], 403, 'a block through error_page'],
    ['/p?mock_action=challenge', 'u7', [], 302, 'a challenge'],
    ['/p?mock_action=challenge', 'u7', [], 302, 'a challenge from the zone'],
) {
    my ($uri, $ua, $h, $status, $what) = @$case;
    my $r = get($uri, $ua, @$h);
    is($r->{status}, $status, "$what: $status");
    is($r->{headers}{'cache-control'}, 'no-store', "$what: Cache-Control: no-store");
    like($r->{body}, qr/blocked here/, "$what: the operator's page") if $what =~ /error_page/;
}

# 2. 444 closes in every form.
for my $case (
    ['/close/p?mock_action=block', 'c1', [], 'a block'],
    ['/close/p?mock_action=allow', 'c1', [], 'a block from the zone'],
    ['/close/p?mock_action=block', 'c2', \@json, 'a block for a JSON client (auto)'],
    ['/close/json/p?mock_action=block', 'c3', [], 'a block with esper_json_response on'],
    ['/close/json/p?mock_action=allow', 'c3', [], 'the same from the zone'],
    ['/close/failing/p', 'c4', [], 'the failure action'],
) {
    my ($uri, $ua, $h, $what) = @$case;
    my $r = get($uri, $ua, @$h);
    is($r->{raw}, '', "$what: the connection is closed without an answer");
}
is(get('/close/p?mock_action=allow', 'c9')->{status}, 200, 'an allowed request is served');

is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;
done_testing;
