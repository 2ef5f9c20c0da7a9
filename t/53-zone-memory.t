#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# What a zone holds while Customer.io is away: a cio_zone of 4 MB takes
# events until it answers 503, and by then it holds every event in at
# most 1.25 times the item's bytes (the item: the Track API JSON that
# cio_status counts in queued_bytes).  Items of 266 bytes (the bench's
# batch mix) and 292 (its single tracks): the slab's power-of-two slots
# took 512 bytes for either, header included.  And a workspace on hold
# among one that delivers keeps no more of the zone than its own events
# need (with one run for all workspaces, the held one's events pinned
# every run, and the zone filled up with live's delivered events).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(wait_until);

my $ZONE = 4 * 1024 * 1024;
my $RATIO = 1.25;

sub event {
    my ($n, $pad) = @_;
    my $name = sprintf 'e-%06d', $n;
    return { type => 'track', userId => 'u1', event => $name,
             messageId => "m-$name", properties => { pad => 'x' x $pad } };
}

for my $want (266, 292) {
    my $t = Cio::Test->new(workers => 1);
    my $port = Cio::Test::free_port();

    # stopped with the zone full, and no spool: expected
    $t->allow_log(
        qr/\[alert\].*cio: \d+ undelivered events are lost with the zone/);

    # nobody listens on $port; the first failure holds the rest a minute
    $t->config(http => Cio::Test::ingest_http(
        endpoint => "http://127.0.0.1:$port", zone => '4m',
        http => "cio_flush_interval 20ms;\n"
            . "cio_retry_backoff 60s 60s;\n"
            . "cio_retry_max 1000;",
        server => 'location = /status { cio_status; }'))->run;

    my $ws = sub { $t->ws_stats('/status', 'site1') };

    # one event to learn the item's size from its padding, then the rest
    # padded to the size wanted
    my ($st) = $t->post('/cio/v1/track', event(0, 100));
    is($st, 200, "$want: a first event accepted");
    my $w;
    ok(wait_until(sub {
        $w = $ws->();
        ($w->{requests}{failed} // 0) >= 1 && ($w->{queued} // 0) == 1
    }, 10), "$want: and queued after a failed attempt, Customer.io away");
    my $pad = 100 + $want - $w->{queued_bytes};

    my ($n, $accepted, $full) = (0, 1, 0);

    # 100 a request until one does not fit, then one a request: bounded,
    # 4 MB hold far fewer than 40,000 events of 266 bytes
    for my $per (100, 1) {
        for (1 .. 40000 / $per) {
            my @batch = map { event(++$n, $pad) } 1 .. $per;
            ($st) = $t->post('/cio/v1/batch', { batch => \@batch });
            if ($st == 200) {
                $accepted += $per;
                next;
            }
            $full = $st;
            last;
        }
    }

    is($full, 503, "$want: the full zone answers 503");

    $w = $ws->();
    my $queued = ($w->{queued} // 0) + ($w->{in_flight} // 0);
    is($queued, $accepted, "$want: every event answered 200 is queued");

    my $item = $w->{queued_bytes} / ($w->{queued} || 1);
    ok(abs($item - $want) < 1, "$want: items of $want bytes")
        or diag("items of $item bytes on average");

    my $need = int($ZONE / ($RATIO * $item));
    ok($accepted >= $need,
        "$want: at least $need events in the zone ($accepted)")
        or diag(sprintf '%.0f zone bytes per event of %.0f bytes: +%.0f%%',
                $ZONE / $accepted, $item,
                100 * ($ZONE / $accepted / $item - 1));
    note(sprintf '%d events, %.0f zone bytes each for %.0f-byte items '
         . '(+%.0f%%)', $accepted, $ZONE / $accepted, $item,
         100 * ($ZONE / $accepted / $item - 1));

    $t->done_part;
}

# --- a workspace on hold among one that delivers ---------------------------
#
# Site "held" cannot reach Customer.io, site "live" can; their events come
# in mixed, 20 of live's to one of held's.  Live's are delivered and their
# memory comes back: what held keeps costs the zone no more than its own
# events (its runs are its own, not ones that live's events shared).

{
    my $t = Cio::Test->new(workers => 1);
    my $cio = $t->standin(workspaces => ['live:key2']);
    my $port = Cio::Test::free_port();
    my $json = $t->json;
    my $url = $cio->url;

    $t->allow_log(
        qr/\[alert\].*cio: \d+ undelivered events are lost with the zone/);

    $t->config(http => <<"END")->run;
    %%ZONE:1m%%
    cio_flush_interval 20ms;
    cio_retry_backoff 60s 60s;
    cio_retry_max 1000;

    server {
        listen 127.0.0.1:%%PORT%%;
        location /held/ {
            cio_ingest segment;
            cio_site_id held;
            cio_api_key key1;
            cio_endpoint http://127.0.0.1:$port;
        }
        location /live/ {
            cio_ingest segment;
            cio_site_id live;
            cio_api_key key2;
            cio_endpoint $url;
        }
        location = /status {
            cio_status;
        }
    }
END

    my $status = sub {
        my ($st, undef, $body) = $t->http('GET', '/status');
        my $s = $st == 200 ? eval { $json->decode($body) } : undef;
        return $s || {};
    };
    my $ws = sub { $t->ws_stats('/status', $_[0]) };

    my $base = $status->()->{zone}{used};

    # a 1 MB zone holds some 3,000 such events: 8,000 go through it
    my ($n, $held, $live, $refused) = (0, 0, 0, 0);
    for my $round (1 .. 400) {
        my ($st) = $t->post('/live/v1/batch',
                            { batch => [ map { event(++$n, 150) } 1 .. 20 ] });
        if ($st == 200) {
            $live += 20;
        } else {
            $refused++;
        }
        ($st) = $t->post('/held/v1/track', event(++$n, 150));
        if ($st == 200) {
            $held++;
        } else {
            $refused++;
        }

        # at the stand-in's pace: live's backlog stays small
        next if $round % 10;
        wait_until(sub {
            my $w = $ws->('live');
            ($w->{queued} // 0) + ($w->{in_flight} // 0) <= 100
        }, 30);
    }

    is($refused, 0, "no 503: $live events of live, $held of held accepted");
    ok(wait_until(sub {
        my $w = $ws->('live');
        ($w->{delivered} // 0) == $live
            && $w->{queued} == 0 && $w->{in_flight} == 0
    }, 60), "every event of live delivered");

    my $h = $ws->('held');
    is(($h->{queued} // 0) + ($h->{in_flight} // 0), $held,
       'every event of held kept');

    # held's runs: the last one partly filled
    my $used = $status->()->{zone}{used} - $base;
    my $bound = $RATIO * $h->{queued_bytes} + 16384;
    ok($used <= $bound, "held's $held events take $used bytes of the zone, "
       . "at most $bound")
        or diag(sprintf '%.0f bytes per event of %.0f bytes', $used / $held,
                $h->{queued_bytes} / $held);

    $t->done_part;
}

done_testing();
