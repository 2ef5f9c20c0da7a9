#!/usr/bin/perl

# cio_status: the counters an operator reads, in JSON and in Prometheus'
# text format, the same whichever worker answers, and kept over a reload.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(basic wait_until);

my $t = Cio::Test->new;
my $cio = $t->standin(workspaces => ['site1:key1', 'site2:key2']);
my $json = $t->json;
my $url = $cio->url;

$t->config(http => <<"END")->run;
    %%ZONE:4m%%
    cio_flush_interval 20ms;
    cio_retry_backoff 50ms 200ms;
    cio_endpoint $url;
    cio_write_key wk;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /one/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_events_deny Hidden;
        }

        location /two/ {
            cio_ingest segment;
            cio_site_id site2;
            cio_api_key key2;
        }

        location = /cio-status {
            cio_status;
            add_header X-Worker \$pid always;
            allow 127.0.0.1;
            deny all;
        }
    }
END

my %auth = (Authorization => basic('wk'));

sub status {
    my ($st, $h, $r) = $t->http('GET', '/cio-status');
    return ($st, $h, eval { $json->decode($r) });
}

sub ws {
    my ($s, $site) = @_;
    my ($w) = grep { $_->{site_id} eq $site } @{ $s->{workspaces} };
    return $w->{stats};
}

# one failed request first, so there is a last error
$cio->control({ status => 500, count => 1 });

$t->post('/one/v1/track', { userId => 'u', event => "E$_" }, %auth)
    for 1 .. 3;
$t->post('/one/v1/batch', { batch => [
    { type => 'track', userId => 'u', event => 'B1' },
    { type => 'track', userId => 'u' },
    { type => 'track', userId => 'u', event => 'Hidden' } ] }, %auth);
$t->post('/one/v1/track', { userId => 'u' }, %auth);
$t->post('/one/v1/track', { userId => 'u', event => 'E' },
         Authorization => basic('nope'));
$t->post('/two/v1/identify', { userId => 'u', traits => { a => 1 } }, %auth);

my $s;
wait_until(sub {
    (undef, undef, $s) = status();
    return $s && $s->{total}{delivered} == 5;
}, 10);

my ($st, $h) = status();
is($st, 200, 'status: 200');
is($h->{'content-type'}, 'application/json', 'status: JSON');

my $one = ws($s, 'site1');
is($one->{accepted}, 4, 'accepted: the queued items of site1');
is($one->{delivered}, 4, 'delivered');
is($one->{filtered}, 1, 'filtered: the denied event');
is_deeply($one->{rejected}, { invalid => 2, unauthorized => 1,
    too_large => 0, full => 0, other => 0 }, 'rejected, by reason');
is($one->{queued}, 0, 'nothing queued any more');
is($one->{in_flight}, 0, 'nothing in flight');
# the 500 hit whichever workspace was flushed first: look at the total
my $tot = $s->{total};
ok($tot->{retried} >= 1, 'the 500 was retried');
ok($tot->{requests}{'5xx'} == 1 && $tot->{requests}{'2xx'} >= 2,
    'upstream requests by class');
like($tot->{last_error}{message} // '', qr/^500: .*injected fault 500/,
    'the last error, with Customer.io\'s answer');
my $n = 0;
$n += $_->{count} for @{ $tot->{latency_ms}{buckets} };
is($n, $tot->{requests}{'2xx'} + $tot->{requests}{'5xx'},
    'every answer is in the latency histogram');

is(ws($s, 'site2')->{delivered}, 1, 'the other workspace counts its own');
is($s->{total}{accepted}, 5, 'total: accepted');
is($s->{total}{rejected}{invalid}, 2, 'total: rejected');
is($s->{zone}{name}, 'cio', 'the zone');
ok($s->{zone}{used} > 0 && $s->{zone}{used} <= $s->{zone}{size},
    'its use');

# the same numbers from every worker: ask until each has answered (bounded
# in count and time), knowing which one did from X-Worker
my (%seen, %by);
my $deadline = time + 10;
for (1 .. 400) {
    my (undef, $xh, $x) = status();
    $by{ $xh->{'x-worker'} // '?' }++;
    $seen{ $json->encode($x->{total}) }++;
    last if keys %by >= 2 || time > $deadline;
}
is_deeply([ sort { $a <=> $b } keys %by ], [ $t->worker_pids ],
    'both workers answered the status page');
is(scalar keys %seen, 1, 'every worker reports the same totals');

# Prometheus
my ($pst, $ph, $prom) = $t->http('GET', '/cio-status?format=prometheus');
is($pst, 200, 'prometheus: 200');
like($ph->{'content-type'}, qr{^text/plain}, 'prometheus: text/plain');
like($prom, qr/^cio_events_delivered_total\{site_id="site1"\} 4$/m,
    'prometheus: delivered');
like($prom, qr/^cio_rejected_total\{site_id="site1",reason="invalid"\} 2$/m,
    'prometheus: rejected by reason');
like($prom, qr/^cio_upstream_latency_seconds_bucket\{site_id="site1",le="\+Inf"\} \d+$/m,
    'prometheus: latency histogram');
my @types = $prom =~ /^# TYPE (\S+)/mg;
my %t;
is(scalar(grep { $t{$_}++ } @types), 0, 'each family is declared once');
(undef, undef, my $prom2) = $t->http('GET', '/cio-status',
    '', Accept => 'text/plain');
like($prom2, qr/^# TYPE/m, 'Accept: text/plain gets the text format');
unlike($prom . $json->encode($s), qr/key1|key2/, 'no API key in the report');

# a reload keeps the zone and its counters
$t->reload;
(undef, undef, my $after) = status();
is($after->{total}{delivered}, 5, 'the counters survive a reload');

($st) = $t->post('/cio-status', { });
is($st, 405, 'POST to the status location: 405');

$t->done;
