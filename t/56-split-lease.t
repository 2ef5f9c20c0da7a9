#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# A batch Customer.io rejects whole is sent again in pieces, one after the
# other, for as long as they take: longer than cio_lease here (a slow
# Customer.io, 16 items, one at fault: nine pieces of 400 ms against a 2 s
# lease).  The split ends as it would in time: the item at fault
# dead-lettered once, every other delivered once.  Before, the lease ran
# out halfway, every item was taken back, delivered ones with them, and
# the batch was taken, refused and split again without end: the item at
# fault was never dead-lettered, some were delivered again and again.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(wait_until);
use Cio::Load qw(post_batch dead_letters);

my $t = Cio::Test->new;
my $cio = $t->standin(workspaces => ['site1:key1']);
my $file = $t->dir . '/dead.jsonl';

$t->allow_log(
    qr/\[error\].*cio: the batch of 16 events for site "site1" rejected with 400 was sent again in \d+ pieces: 15 delivered, 1 dead-lettered to /);

$t->config(http => Cio::Test::ingest_http(endpoint => $cio->url,
    http => <<"END"))->run;
cio_flush_interval 20ms;
cio_retry_backoff 20ms 100ms;
cio_retry_max 3;
cio_lease 2s;
cio_dead_letter $file;
END

$cio->mode({ poison_match => '^poison-', slow_rate => 1, slow_ms => 400 });

my @good = map { "good-$_" } 1 .. 15;
my @acc = post_batch($t, '/cio', [ @good[0 .. 7], 'poison-1',
                                   @good[8 .. 14] ]);
is(scalar @acc, 16, 'a batch of 16 accepted, one of them at fault');

ok(wait_until(sub { @{ dead_letters($file) } }, 30),
    'the item at fault is dead-lettered although the split outlived '
    . 'cio_lease');
my @dead = map { $_->{item}{name} } @{ dead_letters($file) };
is_deeply(\@dead, ['poison-1'], 'it alone, once');

$cio->mode({ slow_rate => undef, slow_ms => undef });
$t->delivered_exactly($cio, \@good, 'the 15 others');
ok($t->log_lines(qr/\[error\].*cio: the batch of 16 events for site "site1" rejected with 400 was sent again in \d+ pieces: 15 delivered, 1 dead-lettered to /),
    'one split, as the log says');
ok(!$t->log_lines(qr/taken back/), 'no item was taken back');

$t->done;
