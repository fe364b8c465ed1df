# A request with a body, judged by Esper on a keepalive connection. Whatever
# the action (block, challenge, their JSON forms, the failure action), the
# body is read off the connection and thrown away, never parsed as the next
# request, even when it is one (a smuggling attempt); the request pipelined
# after it gets its own answer. An allowed body, sent whole or chunked and
# held while Esper takes its time, reaches the application intact.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "plain\n");
$t->start_nginx(<<'EOF');
    esper_api_url http://%%MOCK%%;
    esper_api_key test-key;
    log_format body '$uri|$status|$request_body';
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location /html/ { esper on; alias %%DIR%%/html/; }
        location /json/ { esper on; esper_json_response on; alias %%DIR%%/html/; }
        location /down/ {
            esper on;
            esper_api_url http://127.0.0.1:1;
            esper_failure_action block;
            alias %%DIR%%/html/;
        }
        location /app/ {
            esper on;
            access_log %%DIR%%/logs/body.log body;
            proxy_pass http://127.0.0.1:%%PORT%%/sink/;
        }
        location /sink/ { return 200 "sunk\n"; }
        location /plain/ { alias %%DIR%%/html/; }
    }
EOF

# A body that is itself a request: parsed as one only if the module left it
# on the connection.
my $smuggled = "GET /plain/smuggled.html HTTP/1.1\r\nHost: localhost\r\n\r\n";
my $follow_up = "GET /plain/index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

sub whole {
    my ($uri, $body) = @_;
    return "POST $uri HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body";
}

sub chunked {
    my ($uri, $body) = @_;
    my $half = int(length($body) / 2);
    my $raw = "POST $uri HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n";
    $raw .= sprintf("%x\r\n%s\r\n", length($_), $_) for substr($body, 0, $half), substr($body, $half);
    return $raw . "0\r\n\r\n";
}

# Sends the POST and the follow-up GET on one connection; returns the status
# codes of every answer that came back, in order, and the whole text.
sub pipelined {
    my ($post) = @_;
    my $r = $t->request($post . $follow_up);
    # A JSON body ends without a line break: the next status line follows it.
    my @statuses = $r->{raw} =~ m{HTTP/1\.1 (\d{3}) }g;
    return (\@statuses, $r->{raw});
}

for my $form (['whole', \&whole], ['chunked', \&chunked]) {
    my ($name, $make) = @$form;
    for my $case (
        ['/html/index.html?mock_action=block',     403, 'block'],
        ['/html/index.html?mock_action=challenge', 302, 'challenge'],
        ['/json/index.html?mock_action=block',     403, 'JSON block'],
        ['/json/index.html?mock_action=challenge', 403, 'JSON challenge'],
        ['/down/index.html',                       403, 'failure action block'],
    ) {
        my ($uri, $status, $what) = @$case;
        my ($statuses, $raw) = pipelined($make->($uri, $smuggled));
        is_deeply($statuses, [$status, 200], "$name body, $what: its answer, then the next request's");
        like($raw, qr/plain\n\z/, "$name body, $what: the next request is served");
    }
}
unlike($t->access_log, qr{/plain/smuggled\.html}, 'no body was ever parsed as a request');

my $payload = join('', map { "line $_ of the body\n" } 1 .. 200);
for my $form (['whole', \&whole], ['chunked', \&chunked]) {
    my ($name, $make) = @$form;
    my ($statuses, $raw) = pipelined($make->("/app/$name?mock_delay_ms=150", $payload));
    is_deeply($statuses, [200, 200], "$name body, allowed after 150 ms: both answered");
    like($raw, qr/sunk\n/, "$name body, allowed: the application answered");
    ok($t->wait_for_log('logs/body.log', qr{^/app/$name\|}m), "$name body: logged");
    my ($line) = grep { m{^/app/$name\|} } split /\n(?=\/)/, $t->read_file('logs/body.log');
    my (undef, $logged_status, $logged_body) = split /\|/, $line // '', 3;
    is($logged_status, 200, "$name body: allowed");
    (my $expected = $payload) =~ s/\n/\\x0A/g;
    is($logged_body, "$expected\n", "$name body: reached the application whole");
}

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
