#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# An entry of a segment's .ack file cut short (the disk has just filled
# up) is cut off again: the entries written after it stay in step, and a
# start after a SIGKILL sends again only the event whose entry was torn,
# not every one settled since.  An LD_PRELOAD shim (t/shim/short_write.c)
# cuts the first write to the first segment's .ack in half.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(wait_until);
use Cio::Load qw(post_events);

my $t = Cio::Test->new(workers => 1);
my $dir = $t->dir;
my $ack = "$dir/journal/00000001.ack";

$t->preload('short_write');
local $ENV{CIO_SHORT_WRITE} = $ack;

my $cio = $t->standin(workspaces => ['site1:key1']);

$t->allow_log(qr/cio: settling in the journal ".*" failed, settled events may be sent again after a restart/);

$t->config(http => Cio::Test::ingest_http(endpoint => $cio->url,
    http => <<'END'))->run;
cio_flush_interval 20ms;
cio_journal %%TESTDIR%%/journal;
END

# cut short, and not held
$t->write_file('journal/00000001.ack.go', '');
$t->write_file('journal/00000001.ack.short', '');

is_deeply([ post_events($t, '/cio', 'torn', 1) ], [ 'torn-1' ],
    'an event accepted');
is_deeply($cio->wait_names([ 'torn-1' ], 10), [], 'and delivered');
ok(wait_until(sub { -e "$ack.held" }, 10), 'its .ack entry was cut short');

# one at a time: an .ack write each
for my $i (1 .. 4) {
    my @n = post_events($t, '/cio', "whole$i", 1);
    is_deeply($cio->wait_names([ "whole$i-1" ], 10), [],
        "whole$i-1 delivered");
}
ok(wait_until(sub { (-s $ack // 0) == 4 * 8 }, 10),
    'their four entries follow, whole, and the torn half is gone')
    or diag(-s $ack);

ok($t->kill_all, 'every process killed');
$t->run;

my ($line) = ($t->log_lines(qr/\[notice\].*cio: journal ".*": \d+ records in \d+ segments, \d+ settled, \d+ queued again/))[-1];
like($line // '', qr/5 records in 1 segments, 4 settled, 1 queued again/,
    'the start queues again only the event whose entry was torn');
ok(wait_until(sub { @{ $cio->names->{'torn-1'} // [] } == 2 }, 10),
    'it is sent again');
is_deeply([ grep { @{ $cio->names->{"whole$_-1"} } != 1 } 1 .. 4 ], [],
    'none of the others');

$t->done;
