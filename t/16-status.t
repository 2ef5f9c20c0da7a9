#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# cio_status: the counters an operator reads, in JSON and in Prometheus'
# text format, the same whichever worker answers, and kept over a reload.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Encode ();
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

        # the same site at another endpoint: a workspace of its own
        location /elsewhere/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_endpoint http://127.0.0.1:1;
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
    my ($w) = grep { $_->{site_id} eq $site && index($_->{url}, $url) == 0 }
        @{ $s->{workspaces} };
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
is($one->{invalid}, 2,
    'invalid: the calls refused, one in a batch and one alone');
is_deeply($one->{rejected}, { invalid => 1, unauthorized => 1,
    too_large => 0, full => 0, other => 0 },
    'rejected: the requests refused, by reason');
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
is($s->{total}{rejected}{invalid}, 1, 'total: rejected');
is($s->{total}{invalid}, 2, 'total: invalid');
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
like($prom, qr/^cio_events_delivered_total\{site_id="site1",url="\Q$url\E[^"]*"\} 4$/m,
    'prometheus: delivered');
like($prom,
    qr/^cio_requests_rejected_total\{site_id="site1",url="\Q$url\E[^"]*",reason="invalid"\} 1$/m,
    'prometheus: requests rejected, by reason');
like($prom, qr/^cio_events_invalid_total\{site_id="site1",url="\Q$url\E[^"]*"\} 2$/m,
    'prometheus: calls refused, in a family of their own');
like($prom, qr/^cio_upstream_latency_seconds_bucket\{site_id="site1",url="\Q$url\E[^"]*",le="\+Inf"\} \d+$/m,
    'prometheus: latency histogram');
exposition_ok($prom);
like($prom, qr{^cio_events_delivered_total\{site_id="site1",url="http://127\.0\.0\.1:1/[^"]*"\} 0$}m,
    'prometheus: the same site at another endpoint is a series of its own');
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

my ($vst, $vh) = status();
is($vh->{vary}, 'Accept', 'the status page varies with Accept');

# an answer cut inside a character, and one that is not UTF-8 at all
for my $case ([ ('x' x 194) . "\xc3\xa9" x 5, ('x' x 194) . '?' ],
              [ "caf\xe9 au lait", 'caf? au lait' ]) {
    my ($body, $want) = @$case;
    $cio->control({ status => 500, count => 1, body => $body });
    $t->post('/one/v1/track', { userId => 'u', event => 'Cut' }, %auth);
    my ($raw, $msg) = ('', '');
    wait_until(sub {
        (undef, undef, $raw) = $t->http('GET', '/cio-status');
        my $d = eval { $json->decode($raw) } or return 0;
        $msg = $d->{total}{last_error}{message} // '';
        return $msg eq "500: $want";
    }, 10);
    is($msg, "500: $want", 'the last error keeps what is UTF-8: '
        . substr($want, -12));
    ok(eval { Encode::decode('UTF-8', $raw, Encode::FB_CROAK); 1 },
        'and the status page is UTF-8 all through');
}

$t->done;


# The whole text as a scraper reads it (Prometheus' text format 0.0.4):
# every line a HELP, a TYPE or a sample; a family's HELP and TYPE once,
# before its samples, which follow each other; each name of one family
# only; counters end in _total; a histogram's le values are canonical
# floats, ascending to +Inf, with cumulative counts and a _count equal to
# the +Inf bucket.
sub exposition_ok {
    my ($text) = @_;
    my (%help, %type, %done, %series, %buckets, %count, @bad);
    my $cur = '';

    for my $line (split /\n/, $text) {
        if ($line =~ /^# HELP (\w+) (\S.*)$/) {
            push @bad, "second HELP for $1" if $help{$1}++;
            next;
        }
        if ($line =~ /^# TYPE (\w+) (counter|gauge|histogram)$/) {
            push @bad, "second TYPE for $1" if $type{$1};
            push @bad, "TYPE before HELP for $1" unless $help{$1};
            $type{$1} = $2;
            $done{$cur} = 1;
            $cur = $1;
            next;
        }
        my ($name, $labels, $value) =
            $line =~ /^(\w+)\{((?:\w+="(?:[^"\\]|\\.)*",?)*)\} (\S+)$/
            or do { push @bad, "not a sample: $line"; next };
        push @bad, "not a number: $line"
            unless $value =~ /^(?:\d+(?:\.\d+)?|\+Inf)$/;

        my $fam = $name;
        $fam =~ s/_(?:bucket|sum|count)$//
            if !$type{$name} && ($type{ $name =~ s/_(?:bucket|sum|count)$//r }
                // '') eq 'histogram';
        push @bad, "no HELP and TYPE before $name"
            unless $type{$fam} && $help{$fam};
        push @bad, "$name is not in its family's block" if $fam ne $cur;
        push @bad, "$name twice with {$labels}"
            if $series{"$name\{$labels}"}++;

        if ($name =~ /_bucket$/) {
            my ($le) = $labels =~ /le="([^"]*)"/;
            push @bad, "le=\"$le\" is not canonical"
                unless $le =~ /^(?:\+Inf|(?:0|[1-9]\d*)(?:\.\d*[1-9])?)$/;
            (my $ws = $labels) =~ s/,?le="[^"]*"//;
            push @{ $buckets{$ws} }, [ $le, $value ];
        }
        if ($name =~ /_count$/ && $type{$fam} eq 'histogram') {
            $count{$labels} = $value;
        }
    }

    for my $f (sort keys %type) {
        push @bad, "counter $f does not end in _total"
            if $type{$f} eq 'counter' && $f !~ /_total$/;
        push @bad, "$f ends in _total but is a $type{$f}"
            if $type{$f} ne 'counter' && $f =~ /_total$/;
        push @bad, "$f is also a sample of another family"
            if grep { $type{$_} eq 'histogram' && $f =~ /^\Q$_\E_/ }
                keys %type;
    }
    push @bad, 'HELP without TYPE' if grep { !$type{$_} } keys %help;

    ok(keys %buckets, 'prometheus: the histogram has buckets');
    for my $ws (sort keys %buckets) {
        my @b = @{ $buckets{$ws} };
        is_deeply([ map { $_->[0] } @b ],
            [ qw(0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf) ],
            "prometheus: le values of {$ws}");
        push @bad, "buckets of {$ws} are not cumulative"
            if grep { $b[$_][1] < $b[ $_ - 1 ][1] } 1 .. $#b;
        push @bad, "_count of {$ws} is not the +Inf bucket"
            unless defined $count{$ws} && $count{$ws} == $b[-1][1];
    }

    is_deeply(\@bad, [], 'prometheus: the exposition follows the format')
        or diag($text);
}
