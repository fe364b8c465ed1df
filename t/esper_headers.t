# Esper-owned request headers (X-Esper-Hybrid-Key, X-Esper-Decision-ID) are
# set only by the module, whatever spelling a client uses: with
# `underscores_in_headers on`, nginx's $http_* and CGI-style backends read
# `X_Esper_Hybrid_Key` as the same header.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use EsperTest;

my $t = EsperTest->new;
$t->start_mock('--api-key', 'k');
my $app = EsperTest::free_port();
my $conf = <<'EOF';
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    underscores_in_headers on;
    log_format seen '$http_x_esper_hybrid_key|$http_x_esper_decision_id';
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%DIR%%/logs/seen.log seen;
        location /plain/ {
            esper on;
            proxy_pass http://127.0.0.1:%%APP%%;
        }
        location /module/ {
            esper on;
            esper_hybrid_key hk-$remote_addr;
            esper_forward_decision_id on;
            proxy_pass http://127.0.0.1:%%APP%%;
        }
    }
    server {
        listen 127.0.0.1:%%APP%%;
        access_log off;
        location / {
            return 200 "hybrid=$http_x_esper_hybrid_key|decision=$http_x_esper_decision_id|other=$http_x_other_header\n";
        }
    }
EOF
$conf =~ s/%%APP%%/$app/g;
$t->start_nginx($conf);

my @spellings = (
    ['X_Esper_Hybrid_Key', 'X_Esper_Decision_ID'],
    ['x_esper-hybrid_key', 'X-ESPER_DECISION-ID'],
    ['X-Esper-Hybrid-Key', 'x-esper-decision-id'],
);
for my $s (@spellings) {
    my ($hk, $id) = @$s;
    my @headers = ([$hk, 'forged'], ['X_Other_Header', 'kept'], [$id, 'forged']);
    my $r = $t->get('/plain/x', headers => \@headers);
    is($r->{body}, "hybrid=|decision=|other=kept\n", "$hk, $id: removed, other underscored headers kept");
    $r = $t->get('/module/x', headers => \@headers);
    like($r->{body}, qr/^hybrid=hk-127\.0\.0\.1\|decision=dec-\d+\|other=kept$/, "$hk, $id: only the module's values reach the application");
}
$t->stop_nginx;
unlike($t->read_file('logs/seen.log'), qr/forged/, 'no forged value in the front server\'s $http_* variables');
is(scalar $t->serious_errors, 0, 'no alerts or crashes') or diag join "\n", $t->serious_errors;
done_testing;
