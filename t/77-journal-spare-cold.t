#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# cio_journal reuses a settled segment's file (PATH/spare) only while the
# page cache holds all of it: writing part of a page it does not hold
# would make the kernel read the page first, in the event loop, at every
# write.  Here the spare's pages are dropped (as memory pressure would),
# and the next segment is a new file, with a line that says so; every
# event answered 200 arrives.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test;
use Cio::Load qw(journal_spare batches_over_spare);

my $t = Cio::Test->new(workers => 1);
my $port = Cio::Test::free_port();
my $dir = $t->dir . '/journal';

# a tmpfs holds its pages whatever is asked: nothing to drop there
chomp(my $fs = `stat -f -c %T '${\ $t->dir}' 2>/dev/null` // '');
my ($fincore) = grep { -x "$_/fincore" } split /:/, $ENV{PATH};
Cio::Test::prerequisite($fs ne '' && $fs ne 'tmpfs' && $fincore,
    "a test directory on a disk file system ($fs), and fincore");

sub resident {
    my ($file) = @_;
    my $out = `fincore --bytes --noheadings --output RES '$file' 2>/dev/null`;
    return $out =~ /(\d+)/ ? $1 : -1;
}

my $cio = journal_spare($t, $port);

# what memory pressure does to a file nobody reads: its clean pages go
system('sync', "$dir/spare") == 0 or die "sync: $?";
system('dd', "if=$dir/spare", 'iflag=nocache', 'count=0', 'status=none')
    == 0 or die "dd: $?";
my $size = -s "$dir/spare";
cmp_ok(resident("$dir/spare"), '<', $size,
    "the spare's pages left the page cache ($size bytes)");

# Customer.io away: what comes now stays in the journal
$cio->stop;

my @new = batches_over_spare($t);
ok(!-e "$dir/spare", 'the spare is gone');
is(scalar @new % 20, 0,
    scalar(@new) . ' more answered 200, Customer.io away');

my @cold = $t->log_lines(qr/spare segment's pages left the page cache/);
is(scalar @cold, 1, 'one line says so');
like($cold[0] // '', qr/\[info\] .*cio: journal "\Q$dir\E": the spare /,
    'an info line naming the journal');

my @past = grep {
    open my $fh, '<:raw', $_ or die "$_: $!";
    my $data = do { local $/; <$fh> };
    $data =~ /"old-\d+-\d+"/;
} glob "$dir/*.seg";
is_deeply(\@past, [], 'no segment was written over the old file');

$cio = $t->standin(workspaces => ['site1:key1'], port => $port);

my $missing = $cio->wait_names(\@new, 30);
is_deeply($missing, [], 'every event answered 200 delivered');
$t->delivered_exactly($cio, \@new, 'once each');

$t->done;
