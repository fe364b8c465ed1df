# The key that signs pass cookies: without esper_pass_secret_file, one random
# key per configuration is shared by all workers and changes on reload; with a
# secret file, cookies stay valid across reloads.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(sleep);
use EsperTest;

my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "ok\n");
$t->write_file('pass.key', ('s3cr3t' x 8) . "\n");
$t->start_nginx(<<'EOF', workers => 2);
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location /random/ { esper on; alias %%DIR%%/html/; }
        location /file/ { esper on; esper_pass_secret_file pass.key; alias %%DIR%%/html/; }
    }
EOF

sub pass_for {
    my ($where) = @_;
    my $r = $t->get("/$where/index.html?esper_challenge_proof=valid-$where");
    return ($r->{headers}{'set-cookie'} // '') =~ /^([^;]+)/ ? $1 : '';
}
sub passes {
    my ($where, $cookie) = @_;
    return $t->get("/$where/index.html?mock_action=block", headers => [['Cookie', $cookie]])->{status} == 200;
}

my %cookie = map { $_ => pass_for($_) } qw(random file);
ok($cookie{$_}, "$_: a pass cookie is issued") for qw(random file);

my $passed = grep { passes('random', $cookie{random}) } 1 .. 20;
is($passed, 20, 'the random key is shared by both workers');

my @workers = $t->worker_pids;
kill 'HUP', $t->nginx_pid;
my $deadline = time + 10;
sleep 0.05 while grep({ kill 0, $_ } @workers) && time < $deadline;

ok(!passes('random', $cookie{random}), 'after a reload, cookies signed by the random key are refused');
ok(passes('file', $cookie{file}), 'cookies signed by esper_pass_secret_file survive the reload');

is(scalar $t->serious_errors, 0, 'no alerts or crashes');
done_testing;
