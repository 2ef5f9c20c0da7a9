#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The wall clock steps back an hour (NTP, "date -s", a VM resumed) while
# events flow under cio_rate: delivery goes on.  Leases, backoffs, the
# rate's bucket and the drain's deadline count on the monotonic clock.
# Before, the bucket refilled only once the wall clock had come back to
# where it was, an hour later: the queue stopped, then filled, then 503s.
# A shim (t/shim/clock_step.c) moves the wall clock of every nginx process
# and leaves the monotonic one alone.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep);
use Time::Local qw(timegm);
use Cio::Test;
use Cio::Load qw(post_events);

my $t = Cio::Test->new;
my $cio = $t->standin(workspaces => ['site1:key1']);
$t->write_file('clock-step', "0\n");

local $ENV{CIO_CLOCK_STEP} = $t->dir . '/clock-step';
$t->preload('clock_step');

$t->config(http => Cio::Test::ingest_http(endpoint => $cio->url,
    http => <<'END'))->run;
cio_flush_interval 20ms;
cio_rate 5r/s burst=5;
END

my @before = post_events($t, '/cio', 'before', 5);
is(scalar @before, 5, '5 events before the step: 200');
is_deeply($cio->wait_names(\@before, 10), [], 'and delivered');

$t->write_file('clock-step', "-3600\n");
sleep 0.2;

# nginx's Date header says the shim moved its clock
my ($st, $h) = $t->post('/cio/v1/track', { userId => 'u', event => 'Now' });
my %mon = (Jan => 0, Feb => 1, Mar => 2, Apr => 3, May => 4, Jun => 5,
           Jul => 6, Aug => 7, Sep => 8, Oct => 9, Nov => 10, Dec => 11);
my ($d, $m, $y, $hh, $mm, $ss) = ($h->{date} // '')
    =~ /(\d+) (\w{3}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT/;
my $behind = defined $y ? time() - timegm($ss, $mm, $hh, $d, $mon{$m}, $y)
                        : 0;
ok($behind > 3500 && $behind < 3700,
    "nginx's clock is an hour behind ($behind s)");

my @after;
for my $i (1 .. 12) {
    push @after, post_events($t, '/cio', "after-$i", 1);
    sleep 0.1;
}
is(scalar @after, 12, '12 events after the wall clock went back an hour: '
    . '200');
is_deeply($cio->wait_names(\@after, 15), [],
    'and delivered at cio_rate, not an hour later');
$t->write_file('clock-step', "0\n");
$t->done;
