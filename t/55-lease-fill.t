#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The sender thread copies a batch's items out of the zone when it takes
# the batch, not the event loop when it leases them.  A sender that takes
# a batch only after its lease expired (here: held by gdb at that copy,
# while another worker takes the events back and delivers them) finds the
# nodes' ids changed and sends nothing: every event arrives once, and the
# line says why the batch was not sent.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep);
use Cio::Test qw(wait_until);
use Cio::Load qw(post_events);
use Cio::Gdb qw($GDB attach_error stop_at stopped release);

Cio::Test::prerequisite($GDB,
    'gdb is needed to hold a sender thread (scripts/deps.sh)');
plan(skip_all => 'not under Valgrind') if $ENV{CIO_VALGRIND};

my $t = Cio::Test->new(workers => 2);
my $cio = $t->standin(workspaces => ['site1:key1']);

$t->config(http => Cio::Test::ingest_http(endpoint => $cio->url,
    http => <<'END'))->run;
cio_flush_interval 20ms;
cio_retry_backoff 50ms 200ms;
cio_lease 1s;
END

my ($held) = $t->worker_pids;
my $err = attach_error($held);
plan(skip_all => "gdb cannot attach to a worker here: $err") if $err;

my $gdb = stop_at($t, $held, 'ngx_http_cio_queue_fill');

# one event at a time until the held worker's sender takes a batch; the
# other worker delivers the rest meanwhile
my @names;
for my $i (1 .. 200) {
    push @names, post_events($t, '/cio', "lease-$i", 1);
    last if -e $t->dir . "/gdb.stopped.$held";
    sleep 0.05;
}
ok(stopped($t, $gdb, 10), 'a sender held where it copies a batch');

is_deeply($cio->wait_names(\@names, 15), [],
    'the other worker took its events back after cio_lease and '
    . 'delivered them');
ok($t->log_lines(qr/\[warn\].*cio: \d+ events taken back after their lease expired/),
    'the take-back is logged');

release($t, $gdb);

ok(wait_until(sub { $t->log_lines(qr/\[warn\].*cio: a batch of \d+ events for site "site1" was not sent: its lease expired before the sender took it \(cio_lease\), 0 of them went back to the queue/) }, 10),
    'the held sender sent nothing, and says why');
$t->delivered_exactly($cio, \@names, 'every event');

$t->done;
