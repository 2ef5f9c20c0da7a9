#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# cio_journal on a damaged disk: a record torn at the end of a segment (a
# write cut by a crash) and a record with flipped bytes are found by their
# crc, logged with the file and offset, and skipped; nginx starts and
# every other event arrives, and nothing that was not sent to nginx, nor
# a record of another segment that the file held before.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(wait_until);
use Cio::Load qw(post_events journal_records);
use Compress::Zlib qw(crc32);

my $seed = $ENV{CIO_SEED} // (time ^ $$);
srand($seed);
note("CIO_SEED=$seed");

sub conf {
    my ($url) = @_;
    return Cio::Test::ingest_http(endpoint => $url, http => <<"END");
cio_flush_interval 20ms;
cio_retry_backoff 50ms 200ms;
cio_connect_timeout 1s;
cio_journal %%TESTDIR%%/journal sync=off;
END
}

sub slurp { local (@ARGV, $/) = @_; return <> }

sub spit {
    my ($file, $data) = @_;
    open my $fh, '>', $file or die "$file: $!";
    binmode $fh;
    print $fh $data;
    close $fh;
}

# 20 events journaled while Customer.io is away, then every process killed;
# returns the test, the stand-in's port, the names and the segment
sub journaled {
    my $t = Cio::Test->new(workers => 1);
    my $port = Cio::Test::free_port();
    $t->config(http => conf("http://127.0.0.1:$port"))->run;

    my @names = post_events($t, '/cio', 'dmg', 20);
    is(scalar @names, 20, '20 events answered 200');
    ok($t->kill_all, 'master and worker SIGKILLed');

    my @segs = glob($t->dir . '/journal/*.seg');
    is(scalar @segs, 1, 'one segment');

    return ($t, $port, \@names, $segs[0]);
}

sub delivered_except {
    my ($t, $port, $names, $lost) = @_;

    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
    $t->run;

    my @want = grep { $_ ne $lost } @$names;
    is_deeply($cio->wait_names(\@want, 15), [], 'the 19 others delivered');

    # what was delivered is settled, the replayed segment deleted
    ok(wait_until(sub { !glob($t->dir . '/journal/*.seg') }, 10),
        'then the segment was deleted');
    is_deeply([ sort map { $_->{name} } @{ $cio->items } ],
        [ sort @want ], 'nothing else arrived, nothing twice');
}

# --- a torn tail -------------------------------------------------------------

{
    my ($t, $port, $names, $seg) = journaled();

    my $data = slurp($seg);
    my @r = journal_records($data);
    is(scalar @r, 20, '20 records');

    # the last one cut somewhere inside, and garbage after it
    my ($off, $len) = @{ $r[-1] };
    my $cut = $off + 1 + int(rand($len - 1));
    my $junk = join '', map { chr int rand 256 } 1 .. 1 + int rand 64;
    spit($seg, substr($data, 0, $cut) . $junk);
    note("cut at $cut inside the record at $off ($len bytes), "
        . length($junk) . ' bytes of garbage');

    delivered_except($t, $port, $names, 'dmg-20');

    my $torn = $cut - $off + length $junk;
    ok($t->log_lines(qr/\[warn\].*cio: journal "\Q$seg\E": a torn or damaged tail of $torn bytes at offset $off skipped/),
        'the torn tail is logged with its file, offset and size');
    ok($t->log_lines(qr/cio: journal ".*": 19 records in 1 segments, 0 settled, 19 queued again/),
        '19 records queued again');

    $t->done_part;
}

# --- bytes flipped inside a record -------------------------------------------

{
    my ($t, $port, $names, $seg) = journaled();

    my $data = slurp($seg);
    my @r = journal_records($data);

    my ($off, $len) = @{ $r[6] };
    my @at = map { $off + int rand $len } 1 .. 3;
    for my $at (@at) {
        substr($data, $at, 1) = chr(ord(substr($data, $at, 1)) ^ (1 + int rand 255));
    }
    spit($seg, $data);
    note("flipped bytes at @at in the record at $off ($len bytes)");

    delivered_except($t, $port, $names, 'dmg-7');

    ok($t->log_lines(qr/\[warn\].*cio: journal "\Q$seg\E": $len damaged bytes at offset $off skipped/),
        'the damaged record is logged with its file, offset and size');

    $t->done_part;
}

# --- another segment's records after a torn end mark ------------------------

# What a file an earlier version wrote a new segment over holds after the
# new records: records of the segment it was before.  A start stops at
# the first of them, as at an end mark, and never sends them.
{
    my ($t, $port, $names, $seg) = journaled();

    my $data = slurp($seg);
    my @r = journal_records($data);
    my $end = $r[-1][0] + $r[-1][1];
    is(substr($data, $end, 4), 'CIOE', 'the end mark after the 20th');

    my $past = '';
    for my $r (@r[0 .. 9]) {
        my $rec = substr($data, $r->[0], $r->[1]);
        my $no = unpack 'V', substr($rec, -4);
        substr($rec, -4) = pack 'V', $no + 1;
        substr($rec, 8, 4) = pack 'V', crc32(substr($rec, 12));
        $past .= $rec;
    }
    my $junk = join '', map { chr int rand 256 } 1 .. 16;
    spit($seg, substr($data, 0, $end) . $junk . $past);

    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
    $t->run;
    is_deeply($cio->wait_names($names, 15), [], 'the 20 delivered');
    $t->delivered_exactly($cio, $names, 'with records of another past');
    ok($t->log_lines(qr/\[warn\].*cio: journal "\Q$seg\E": a torn or damaged tail of 16 bytes at offset $end skipped/),
        'the torn end mark is logged, and nothing after it');

    $t->done_part;
}

done_testing();
