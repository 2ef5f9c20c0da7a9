#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# More workspaces with events waiting than cio_max_inflight lets go at
# once: each gets its turn.  One worker, one request in flight, a slow
# Customer.io; two workspaces hold ten batches each, a third one event,
# queued after them.  It is delivered while the first two still wait.
# Before, every round began at the head of the zone's list of
# workspaces: the first took the one place each time, the third waited
# until both others were empty.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(wait_until);

my $t = Cio::Test->new(workers => 1);
my $cio = $t->standin(workspaces => ['site1:key1', 'site2:key2',
                                     'site3:key3']);

$t->config(http => <<"END")->run;
    cio_zone zone=cio:8m;
    cio_flush_interval 20ms;
    cio_max_inflight 1;
    cio_batch_size 40000;

    server {
        listen 127.0.0.1:%%PORT%%;
        cio_endpoint ${\ $cio->url };

        location /a/ { cio_ingest segment; cio_site_id site1;
                       cio_api_key key1; }
        location /b/ { cio_ingest segment; cio_site_id site2;
                       cio_api_key key2; }
        location /c/ { cio_ingest segment; cio_site_id site3;
                       cio_api_key key3; }
    }
END

# Customer.io slow while the queue fills: the first batch holds the place
$cio->mode({ slow_rate => 1, slow_ms => 300 });

# nine properties of 900 bytes: Customer.io cuts a value at 1000 bytes
# (docs/mapping.md), and a single 9 KB one made items of 1 KB, ten to a
# batch: five batches in all, and on a loaded machine the third
# workspace's could come last
my %pad = map { ("p$_" => 'x' x 900) } 1 .. 9;
my $ok = 0;
for my $i (1 .. 40) {
    for my $loc ('a', 'b') {
        my ($st) = $t->post("/$loc/v1/track", { userId => "u$i",
            event => "$loc-$i", properties => \%pad });
        $ok++ if $st == 200;
    }
}
is($ok, 80, '40 events of 9 KB each to two workspaces: 200');

my ($st) = $t->post('/c/v1/track', { userId => 'u', event => 'c-1' });
is($st, 200, 'then one to a third: 200');

my $seen = {};
ok(wait_until(sub { $seen = $cio->names; $seen->{'c-1'} }, 30),
    "the third workspace's event is delivered");
my @a = grep { /^a-/ } keys %$seen;
my @b = grep { /^b-/ } keys %$seen;
cmp_ok(scalar(@a) + scalar(@b), '<', 80,
    'while the first two still had events waiting (' . scalar(@a)
    . ' and ' . scalar(@b) . ' of 40 delivered)');
ok(@b > 0 && @b < 40, 'the second one had its turns too');

$cio->mode({ slow_rate => undef, slow_ms => undef });
is_deeply($cio->wait_names([ (map { "a-$_" } 1 .. 40),
                             (map { "b-$_" } 1 .. 40) ], 30), [],
    'and then every event');

$t->done;
