# A main request is decided once: internal redirects, named locations and
# subrequests of a decided request never call Esper again.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "index\n");
$t->write_file('html/app.html', "app\n");
$t->write_file('html/404.html', "not here\n");
$t->start_nginx(<<'EOF');
    esper_api_url http://%%MOCK%%;
    esper_api_key test-key;
    log_format esper '$request_uri $status $esper_result $esper_action $esper_decision_id';
    access_log %%DIR%%/logs/esper.log esper;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        esper on;
        error_page 404 /404.html;
        location / { try_files $uri /app.html; }
        location /old/ { rewrite ^/old/(.*)$ /$1 last; }
        location /named/ { try_files /nothing @app; }
        location @app { rewrite ^ /app.html break; }
        location /ssi/ { ssi on; ssi_types text/plain; alias %%DIR%%/html/; }
    }
EOF
$t->write_file('html/page.shtml', "<!--# include virtual=\"/app.html\" -->|<!--# include virtual=\"/index.html\" -->\n");

my @cases = (
    ['/missing'            => 200, "app\n",      'try_files fallback'],
    ['/nothing.html?x=404' => 200, "app\n",      'try_files to another location'],
    ['/old/index.html'     => 200, "index\n",    'rewrite ... last'],
    ['/named/x'            => 200, "app\n",      'named location'],
    ['/ssi/page.shtml'     => 200, "app\n|index\n\n", 'subrequests of an allowed request'],
);
for my $case (@cases) {
    my ($uri, $status, $body, $what) = @$case;
    $t->mock_reset;
    my $r = $t->get($uri);
    is($r->{status}, $status, "$what: status");
    is($r->{body}, $body, "$what: body");
    is($t->mock_count, 1, "$what: decided once");
}

# error_page after a 404: the redirect to the error page is not judged again.
$t->mock_reset;
my $r = $t->get('/ssi/missing.html');
is($r->{status}, 404, 'error_page 404 status');
is($r->{body}, "not here\n", 'error_page 404 body');
is($t->mock_count, 1, 'error_page: decided once');

# A block is not undone by the error page's internal redirect either.
$t->mock_reset;
$r = $t->get('/old/index.html?mock_action=block');
is($r->{status}, 403, 'block after rewrite');
is($t->mock_count, 1, 'block: decided once');

# Variables still describe the decision after internal redirects.
ok($t->wait_for_log('logs/esper.log', qr{^/named/x 200 decided allow dec-\d+$}m),
    'variables survive the redirect to a named location');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
