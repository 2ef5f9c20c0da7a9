#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Two workers write one dead-letter file, through one file offset (the
# master opened it).  A write cut short (the disk has just filled up) is
# cut off again, back to where the line began: another worker's line
# written meanwhile must neither be glued to the broken one nor cut off
# in its place.  An LD_PRELOAD shim (t/shim/short_write.c) cuts one
# worker's write short and holds it while the other worker dead-letters
# an event of its own.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(wait_until);
use Cio::Load qw(post_events);

my $t = Cio::Test->new(workers => 2);
my $dir = $t->dir;
my $file = "$dir/dead.jsonl";

$t->preload('short_write');
local $ENV{CIO_SHORT_WRITE} = $file;

my $cio = $t->standin(workspaces => ['site1:key1']);

$t->allow_log(
    qr/\[error\].*cio: Customer\.io refused 1 of 1 events for site "site1" \(207\)/,
    qr/\[crit\].*cio: writing to the dead-letter file ".*" failed, site "site1" loses an event/);

$t->config(http => Cio::Test::ingest_http(endpoint => $cio->url,
    http => <<"END"))->run;
cio_flush_interval 20ms;
cio_dead_letter $file;
END

$cio->mode({ refuse_match => '^[ab]-' });
$t->write_file('dead.jsonl.short', '');

is_deeply([ post_events($t, '/cio', 'a', 1) ], [ 'a-1' ], 'a-1 accepted');
ok(wait_until(sub { -e "$file.held" }, 10),
    'its refusal\'s line is cut short, and the write held');

# the worker that holds the write accepts nothing: the other takes it,
# another person's event, which a-1 does not hold back
my ($st) = $t->post('/cio/v1/track', { type => 'track', userId => 'u2',
    event => 'b-1', messageId => 'm-b-1' });
is($st, 200, 'b-1 accepted');

# the other worker has written its line, or waits to
my %workers = map { $_ => 1 } $t->worker_pids;
sub locks_waiting {
    open my $fh, '<', '/proc/locks' or return 0;
    return grep { /^\d+: -> POSIX +ADVISORY +WRITE +(\d+) / && $workers{$1} }
        <$fh>;
}
ok(wait_until(sub { $t->read_file($file) =~ /"b-1"/ || locks_waiting() },
              10),
    'the other worker dead-letters b-1 meanwhile');

$t->write_file('dead.jsonl.go', '');

ok(wait_until(sub { $t->log_lines(qr/\[crit\].*cio: writing to the dead-letter file "\Q$file\E" failed, site "site1" loses an event .*"a-1"/) }, 5),
    'the cut write fails: a-1 is in the log instead, whole');
ok(wait_until(sub { $t->read_file($file) =~ /"b-1".*\n\z/s }, 10),
    'b-1\'s line is written');

my @lines = split /(?<=\n)/, $t->read_file($file);
my @names = map { my $d = eval { $t->json->decode($_) };
                  $d ? $d->{item}{name} : 'broken' } @lines;
is_deeply(\@names, [ 'b-1' ], 'whole, and alone: a-1\'s half is gone');


$t->done;
