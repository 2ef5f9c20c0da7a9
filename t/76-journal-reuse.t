#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# cio_journal reuses a settled segment's file (PATH/spare) for a new
# segment, writing over what it held.  After a crash, a start reads such
# a file up to the new records' end, marked or, when the mark was torn,
# up to the first record of the file's past: nothing of that is sent
# again, and every event answered 200 arrives.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test;
use Cio::Load qw(batches journal_spare batches_over_spare);

my $t = Cio::Test->new(workers => 1);
my $port = Cio::Test::free_port();
my $dir = $t->dir . '/journal';

my $cio = journal_spare($t, $port);

# Customer.io away: what comes now stays in the journal
$cio->stop;

# batches until the spare is a segment again, then two more: the new
# records fill its first part only, and what it held lies after them
my @new = batches_over_spare($t);
ok(!-e "$dir/spare", 'the spare became a new segment');
push @new, batches($t, 'more', 2);
is(scalar @new % 20, 0, scalar(@new) . ' more answered 200, Customer.io away');

my ($reused) = grep {
    open my $fh, '<:raw', $_ or die "$_: $!";
    my $data = do { local $/; <$fh> };
    $data =~ /"old-\d+-\d+"/;
} glob "$dir/*.seg";
ok($reused, 'a segment written over a file that held delivered events');

ok($t->kill_all, 'master and worker SIGKILLed');

# the last write torn at its end mark: with no mark, a start reads on
# into the file's past, and must stop at its first record of another
# segment
open my $fh, '+<:raw', $reused or die "$reused: $!";
my $data = do { local $/; <$fh> };
my $off = 0;
while (substr($data, $off, 4) eq 'CIOJ') {
    $off += 16 + unpack('V', substr($data, $off + 4, 4));
}
is(substr($data, $off, 4), 'CIOE', 'the new records end with the end mark');
seek $fh, $off, 0;
print $fh join '', map { chr int rand 256 } 1 .. 16;
close $fh;

$cio = $t->standin(workspaces => ['site1:key1'], port => $port);
$t->run;

my $missing = $cio->wait_names(\@new, 30);
diag(sprintf 'journal reusing a segment, a SIGKILL: accepted %d, '
    . 'delivered %d, lost %d', scalar @new, @new - @$missing,
    scalar @$missing);
is_deeply($missing, [], 'every event answered 200 delivered');

# nothing of the reused file's past is sent again, every event once
$t->delivered_exactly($cio, \@new, 'after the restart');
my @torn = $t->log_lines(qr/damaged|torn/);
is(scalar @torn, 1, 'one damage logged, the torn end mark');
like($torn[0] // '', qr/torn or damaged tail of \d+ bytes at offset $off /,
    'at its offset');

$t->done;
