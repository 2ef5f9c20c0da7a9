#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# sync=always, two workers: a worker that leaves a 17th segment while a
# sync round runs syncs the one it leaves in its own event loop, and so
# waits for the disk; the other worker must not wait with it.  That sync
# runs after the journal's lock is released: the other worker still
# writes the journal and answers.  An LD_PRELOAD shim
# (t/shim/hold_sync.c) holds every fdatasync() while small segments (64
# KB, 20 KB records) roll over.  The sync rounds sync the journal's
# directory too, which keeps the new segments' names.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use Cio::Test qw(wait_until);
use Cio::Load qw(open_track open_tracks_until);

my $t = Cio::Test->new(workers => 2);
my $dir = $t->dir;

$t->preload('hold_sync');
local $ENV{CIO_HOLD_SYNC} = "$dir/hold";

my $cio = $t->standin(workspaces => ['site1:key1']);
$t->config(http => Cio::Test::ingest_http(endpoint => $cio->url,
    server => 'location = /ping { return 200 pong; }',
    http => <<'END'))->run;
cio_flush_interval 20ms;
client_body_buffer_size 64k;
cio_journal %%TESTDIR%%/journal max_size=256k sync=always;
END

# 20 KB records: string values are cut at Customer.io's 1,000 bytes
my %pad = map { ("p$_" => 'x' x 950) } 1 .. 20;

# a request left open: its answer is read later
sub send_event { return open_track($t, $_[0], \%pad) }

# its answer, within a deadline: '' if none came
sub answer {
    my ($s, $secs) = @_;
    my $got = '';
    my $end = time + $secs;
    $s->blocking(0);
    while (time < $end) {
        my $r = sysread($s, $got, 4096, length $got);
        last if defined $r && $r == 0;
        sleep 0.02;
    }
    return $got;
}

sub ping {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $t->port) or die "connect: $!";
    print $s "GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    return answer($s, 5) =~ /\r\n\r\npong\z/;
}

$t->write_file('hold', '');

my @waiting = [ 'first', send_event('first') ];
ok(wait_until(sub { -e "$dir/hold.held" }, 10),
    'a round\'s fdatasync() is held in the thread pool');

# paced, so that the journal has room to roll over 17 times
push @waiting, open_tracks_until($t, \%pad, "$dir/hold.main");
ok(-e "$dir/hold.main", 'segments rolled over until a worker\'s event '
    . 'loop synced one itself, and waits for it, after '
    . scalar(@waiting) . ' requests');

# the waiting worker accepts nothing: the other takes these, small, so
# that it does not leave 16 segments of its own meanwhile
my @more = map { [ "more$_", open_track($t, "more$_", { n => $_ }) ] }
    1 .. 3;
ok(ping(), 'the other worker answers meanwhile');
ok(ping() && ping(), 'after writing the journal for three more events');
is(join('', map { answer($_->[1], 0.2) } @more), '',
    'which wait for their sync');

unlink "$dir/hold";

# a slow machine may have filled the small journal (503, retry later)
my %by;
for my $w (@waiting, @more) {
    my $got = answer($w->[1], 10);
    my ($st) = $got =~ m{^HTTP/1\.\d (\d+)};
    $st = 'full' if ($st // 0) == 503
        && $got =~ /journal cannot take it, retry later/;
    push @{ $by{$st // 0} }, $w->[0];
}
is_deeply([ grep { $_ ne 'full' } sort keys %by ], [ 200 ],
    'once the disk is back: every answer 200 (or full, retry later)')
    or diag(explain({ map { $_ => scalar @{ $by{$_} } } keys %by }));
is_deeply([ grep { /^more/ } @{ $by{200} } ], [ map { "more$_" } 1 .. 3 ],
    'the three more among them');
is_deeply($cio->wait_names($by{200}, 30), [], 'and all delivered');

# a new segment's name is kept once its directory is synced (POSIX)
ok(-e "$dir/hold.dir", 'the journal\'s directory was synced (fsync) too');

$t->done;
