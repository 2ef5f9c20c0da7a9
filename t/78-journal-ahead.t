#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# cio_journal allocates a busy segment's file ahead of its writes, in
# nginx's thread pool, so that the event loop writes into pages the page
# cache holds already: past its first megabyte, a segment's file is longer
# than its records, and what lies after them reads as zeros.  A sync drops
# the pages it made clean: the page cache holds what lies ahead.  After a
# crash a start reads the records to their end mark and stops there: the
# prepared region is neither damage nor events, and every event answered
# 200 arrives, once.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(wait_until);
use Cio::Load qw(journal_records);

my $t = Cio::Test->new(workers => 1);
my $port = Cio::Test::free_port();
my $dir = $t->dir . '/journal';

# segments of 8 MB (an eighth of max_size); Customer.io away meanwhile
$t->config(http => Cio::Test::ingest_http(zone => '32m',
    endpoint => "http://127.0.0.1:$port", http => <<'END'))->run;
cio_flush_interval 20ms;
cio_retry_backoff 50ms 200ms;
cio_connect_timeout 1s;
cio_journal %%TESTDIR%%/journal max_size=64m sync=1s;
END

my $pad = 'p' x 1500;
my @ok;
for my $b (1 .. 120) {
    my @names = map { "ahead-$b-$_" } 1 .. 20;
    my $i = 0;
    my ($st) = $t->post('/cio/v1/batch', { batch => [ map {
        { type => 'track', userId => 'u' . ++$i, event => $_,
          messageId => "m-$_", properties => { pad => $pad } } } @names ] });
    push @ok, @names if defined $st && $st == 200;
}
is(scalar @ok, 2400, '2,400 events of 1.6 KB answered 200');

my @segs = glob "$dir/*.seg";
is(scalar @segs, 1, 'one segment');
my $seg = $segs[0] // '';

# the file as the disk has it, read around the page cache (O_DIRECT): a
# plain read would bring its pages in
sub direct { return scalar `dd if='$seg' iflag=direct bs=1M status=none` }

# where the records end: their end mark
sub records_end {
    my @r = journal_records(@_);
    return @r ? $r[-1][0] + $r[-1][1] : 0;
}

# 2.9 MB of records, and the thread's megabyte ahead of them: a write
# that comes while the thread is still at the last one asks no more, the
# next one does
my $nudge = 0;
ok(wait_until(sub {
        return 1 if -s $seg >= 3_900_000;
        my $name = 'nudge-' . ++$nudge;
        my ($st) = $t->post('/cio/v1/track', { type => 'track',
            userId => 'u0', event => $name, messageId => "m-$name" });
        push @ok, $name if defined $st && $st == 200;
        return 0;
    }, 10), 'the file grows past what was written')
    or diag('file ' . (-s $seg) . ' bytes');

my $data = direct();
my $end = records_end($data);
my $size = length $data;
cmp_ok($end, '>', 2_000_000, "records of $end bytes");
cmp_ok($size, '>=', $end + 1_048_576, 'the file a megabyte or more past them');
is(substr($data, $end, 4), 'CIOE', 'the records end with the end mark');
my $tail = substr($data, $end + 16);
ok(length $tail > 0 && $tail !~ /[^\0]/, 'and nothing but zeros follows');
my @st = stat $seg;
cmp_ok($st[12] * 512, '>=', $size - 4096, 'its blocks allocated');

# in the page cache: what lies ahead, where the event loop's next writes
# go; not what a sync (sync=1s) has made clean
chomp(my $fs = `stat -f -c %T '${\ $t->dir}' 2>/dev/null` // '');
my ($fincore) = grep { -x "$_/fincore" } split /:/, $ENV{PATH};
SKIP: {
    skip "no fincore, or a tmpfs ($fs)", 2 if !$fincore || $fs eq 'tmpfs';
    my $res = sub {
        my $out = `fincore --bytes --noheadings --output RES '$seg'`;
        return $out =~ /(\d+)/ ? $1 : -1;
    };
    ok(wait_until(sub { $res->() <= $size - $end + 65536 }, 5),
        'the records leave the page cache once synced')
        or diag('resident ' . $res->() . ", file $size, records $end");
    cmp_ok($res->(), '>=', $size - $end - 65536,
        'what lies ahead of them stays in it');
}

ok($t->kill_all, 'master and worker SIGKILLed');

my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
$t->run;

my $missing = $cio->wait_names(\@ok, 60);
diag(sprintf 'journal allocated ahead, a SIGKILL: accepted %d, '
    . 'delivered %d, lost %d', scalar @ok, @ok - @$missing,
    scalar @$missing);
is_deeply($missing, [], 'every event answered 200 delivered');
$t->delivered_exactly($cio, \@ok, 'after the restart');
is_deeply([ $t->log_lines(qr/damaged|torn/) ], [],
    'the prepared region is not taken for damage');

$t->done;
