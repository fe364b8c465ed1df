# monitoring/: the Grafana dashboard and the Prometheus alert rules name only
# metrics, labels and label values that esper_metrics really serves (read
# from a running nginx with an enforcement zone).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use JSON::PP;
use EsperTest;

my $root = $EsperTest::ROOT;
my $t = EsperTest->new;
$t->start_mock;
$t->write_file('html/index.html', "ok\n");
$t->start_nginx(<<'EOF');
    esper_api_url http://%%MOCK%%;
    esper_api_key k;
    esper_enforcement_zone zone=bots:1m;
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%DIR%%/html;
        location / { esper on; esper_enforcement bots; }
        location = /metrics { esper_metrics; }
    }
EOF
$t->get('/index.html');

# name => { label => { value => 1 } }
my %exported;
for (split /\n/, $t->get('/metrics')->{body}) {
    next if /^#/;
    my ($name, $labels) = /^(\w+)(?:\{(.*)\})? \S+$/ or next;
    $exported{$name} //= {};
    $exported{$name}{$1}{$2} = 1 while ($labels // '') =~ /(\w+)="((?:[^"\\]|\\.)*)"/g;
}
ok(exists $exported{esper_proof_verifications_total}, 'the scrape has the module\'s metrics');

# Every expression of the dashboard and of the rules, with where it is.
my @exprs;
my $dashboard = decode_json(EsperTest::slurp("$root/monitoring/grafana-dashboard.json"));
for my $panel (@{$dashboard->{panels}}) {
    push @exprs, map { ["dashboard panel \"$panel->{title}\"", $_->{expr}] } @{$panel->{targets}};
}
for my $var (@{$dashboard->{templating}{list}}) {
    push @exprs, ["dashboard variable $var->{name}", $var->{definition}] if $var->{definition};
}
my @rules = EsperTest::slurp("$root/monitoring/prometheus-alerts.yml") =~ /^\s*- alert: (\w+)\n\s*expr: (>-\n(?:\s{10,}.*\n)+|.*\n)/mg;
while (my ($alert, $expr) = splice(@rules, 0, 2)) {
    $expr =~ s/^>-\n//;
    push @exprs, ["alert $alert", $expr];
}
cmp_ok(scalar(grep { $_->[0] =~ /^dashboard panel/ } @exprs), '>=', 10, 'the dashboard\'s queries are read');
is(scalar(grep { $_->[0] =~ /^alert/ } @exprs), 5, 'the five alert rules are read');
my %alerted = map { ($_ => 1) } map { $_->[1] =~ /(esper_\w+)/g } grep { $_->[0] =~ /^alert/ } @exprs;
ok($alerted{$_}, "an alert watches $_") for qw(esper_circuit_breakers_open esper_requests_total
    esper_decision_duration_seconds_bucket esper_enforcement_evictions_total);

# Labels Prometheus adds, or a histogram's own.
my %outside = (instance => 1, job => 1, le => 1);
for (@exprs) {
    my ($where, $expr) = @$_;
    my @names = $expr =~ /\b(esper_\w+)/g;
    ok(@names, "$where names a metric");
    my %labels;
    for my $name (@names) {
        ok(exists $exported{$name}, "$where: $name is exported") or next;
        $labels{$_} = 1 for keys %{$exported{$name}};
    }
    while ($expr =~ /\b(esper_\w+)\{([^}]*)\}/g) {
        my ($name, $matchers) = ($1, $2);
        while ($matchers =~ /(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"/g) {
            my ($label, $op, $value) = ($1, $2, $3);
            next if $outside{$label};
            my $known = $exported{$name}{$label};
            ok($known, "$where: $name has the label $label") or next;
            for my $v ($op =~ /~/ ? split(/\|/, $value) : $value) {
                ok($known->{$v}, "$where: $name\{$label=\"$v\"} is exported");
            }
        }
    }
    while ($expr =~ /\bby \(([^)]*)\)/g) {
        for my $label (split /\s*,\s*/, $1) {
            ok($outside{$label} || $labels{$label}, "$where: grouped by $label, a label of its metrics");
        }
    }
}

done_testing;
