#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The request rate: cio_rate is one token bucket per workspace in the zone,
# shared by every worker, so a burst of events makes fuller batches, not
# more requests; and when Customer.io answers 429 past its own rate, the
# events wait and arrive, without counting against cio_retry_max.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time sleep);
use Cio::Test qw(wait_until);
use Cio::Load qw(post_events post_batch dead_letters);

sub conf {
    my ($url, $rate) = @_;
    my $max = $rate =~ /cio_retry_max/ ? '' : 'cio_retry_max 0;';
    return Cio::Test::ingest_http(endpoint => $url, http => <<"END");
cio_flush_interval 5ms;
cio_retry_backoff 50ms 200ms;
$max
cio_max_inflight 4;
$rate
cio_dead_letter %%TESTDIR%%/dead.jsonl;
END
}

# a steady 75 events a second for 2 s, one request each
sub steady {
    my ($t, $prefix) = @_;
    my @names;
    my $start = time;
    for my $i (1 .. 150) {
        my $due = $start + $i / 75;
        sleep($due - time) if $due > time;
        push @names, post_events($t, '/cio', "$prefix-$i", 1);
    }
    return @names;
}

# --- the shared bucket -------------------------------------------------------

# One run, measured against its own clock: the requests Customer.io saw,
# as a ratio of what 5r/s with a burst of 5 allows over the span they
# took; no comparison with another, differently loaded, run.
{
    my $t = Cio::Test->new(workers => 4);
    # the stand-in allows a little more than the module may send
    my $cio = $t->standin(workspaces => ['site1:key1'], rate => 5,
        burst => 8);

    $t->config(http => conf($cio->url, 'cio_rate 5r/s;'))->run;

    # the span from before the first take: a stand-in slow to answer the
    # first requests would shorten it, not the count
    my $start = time;
    my @names = steady($t, 'rate');
    is(scalar @names, 150, 'cio_rate 5r/s: 150 events accepted in 2 s');
    is_deeply($cio->wait_names(\@names, 30), [],
        'cio_rate 5r/s: all of them were recorded by the stand-in');

    my @r = sort { $a->{received_ms} <=> $b->{received_ms} }
        @{ $cio->requests };
    my $span = $r[-1]{received_ms} / 1000 - $start;
    my $allowed = 5 + 5 * $span + 1;
    my $events = 0;
    $events += $_->{accepted} for @r;

    is(scalar(grep { $_->{status} == 429 } @r), 0,
        'Customer.io never had to answer 429');
    ok(@r / $allowed <= 1, sprintf('%d requests in %.1f s from 4 workers: '
        . '%.2f of what 5r/s with a burst of 5 allows', scalar @r, $span,
        @r / $allowed));
    is($events, 150, 'every event went in one of them, once');
    ok($events / @r >= 150 / $allowed, sprintf('batches filled up: %.1f '
        . 'events a request', $events / @r));

    $t->done_part;
}

# --- Customer.io's own limit: 429, then the events arrive ------------------

{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1'], rate => 4,
        burst => 2);

    $t->config(http => conf($cio->url, 'cio_rate 1000r/s;'))->run;

    my @names = post_events($t, '/cio', 'over', 100);
    is(scalar @names, 100, '100 events accepted');
    is_deeply($cio->wait_names(\@names, 30), [],
        'all of them were recorded by the stand-in');
    my @r = grep { $_->{status} == 429 } @{ $cio->requests };
    ok(@r >= 1, scalar(@r) . ' requests were answered 429 past the '
        . 'stand-in\'s rate');
    is_deeply(dead_letters($t->dir . '/dead.jsonl'), [],
        'and none of their events counted against cio_retry_max 0');

    $t->done_part;
}

# --- a split batch's pieces take tokens like any batch ----------------------

# A batch Customer.io rejects whole for one bad item is sent again in
# pieces (t/46-refusals.t): each piece is a request, and the bucket
# counts it.
{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1']);
    $t->allow_log(qr/\[error\].*cio: the batch of 16 events for site "site1" rejected with 400 was sent again in \d+ pieces: 15 delivered, 1 dead-lettered to /);

    $t->config(http => conf($cio->url, 'cio_rate 4r/s burst=2;'))->run;
    $cio->mode({ poison_match => '^poison-' });

    my @names = map { $_ == 9 ? 'poison-1' : "piece-$_" } 1 .. 16;
    is(scalar(post_batch($t, '/cio', \@names)), 16,
        'a batch of 16 with one bad event accepted');
    my @good = grep { /^piece-/ } @names;
    is_deeply($cio->wait_names(\@good, 20), [],
        'the 15 good ones delivered');
    ok(wait_until(sub { @{ dead_letters($t->dir . '/dead.jsonl') } }, 10),
        'the bad one dead-lettered');

    my @r = sort { $a->{received_ms} <=> $b->{received_ms} }
        @{ $cio->requests };
    my $span = ($r[-1]{received_ms} - $r[0]{received_ms}) / 1000;
    cmp_ok(scalar @r, '>=', 5, scalar(@r) . ' requests: the batch and its '
        . 'pieces');
    ok(@r <= 2 + 4 * $span + 1, sprintf('%d requests in %.2f s: within '
        . 'what 4r/s with a burst of 2 allows', scalar @r, $span));

    $t->done_part;
}

# --- the directive ---------------------------------------------------------

{
    my $t = Cio::Test->new;

    for my $case (
        [ 'cio_rate off;', 0, qr/test is successful/ ],
        [ 'cio_rate 6000r/m burst=20;', 0, qr/test is successful/ ],
        [ 'cio_rate 10r/h;', 1, qr/invalid rate "10r\/h"/ ],
        [ 'cio_rate 0r/s;', 1, qr/invalid rate "0r\/s"/ ],
        [ 'cio_rate 5r/s burst=0;', 1, qr/invalid burst "burst=0"/ ],
        [ 'cio_rate 5r/s; cio_rate 6r/s;', 1, qr/"cio_rate" directive is duplicate/ ],
        [ 'cio_retry_max 1001;', 1, qr/value must be between 0 and 1000/ ],
        [ 'cio_spool %%TESTDIR%%/s;'
          . ' cio_drain_timeout 1s; cio_lease 1m;', 0,
          qr/test is successful/ ],
        [ 'cio_lease 1s;', 0, qr/"cio_lease" is shorter than/ ],
    ) {
        my ($directive, $rc, $re) = @$case;
        $t->config(http => conf('http://127.0.0.1:1', $directive));
        my ($code, $out) = $t->check_config;
        is($code, $rc, "nginx -t with $directive: exit $rc");
        like($out, $re, '... ' . ($rc ? 'says why' : 'passes'));
    }
}

done_testing();
