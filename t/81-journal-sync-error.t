#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# sync=always when an fdatasync() outside the sync rounds fails.  A worker
# keeps the segments writing has left while a round runs (up to 16) for
# the next round; one more, and it syncs and closes the one it leaves at
# once, in the event loop.  The requests written there wait for the next
# round, which does not see that file again: if its sync failed, that
# round must fail them too (503), never answer 200 for records not known
# to be on the disk.  An LD_PRELOAD shim (t/shim/hold_sync.c) holds the
# round's fdatasync() in the thread pool while small segments (64 KB, 20
# KB records) roll over, and fails the event loop's with EIO.  Then a
# reload while a request waits for its sync: the old worker stays until
# it is answered.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use Cio::Test qw(wait_until);
use Cio::Load qw(open_track open_tracks_until);

my $t = Cio::Test->new(workers => 1);
my $dir = $t->dir;

$t->preload('hold_sync');
local $ENV{CIO_HOLD_SYNC} = "$dir/hold";

my $cio = $t->standin(workspaces => ['site1:key1']);
$t->config(http => Cio::Test::ingest_http(endpoint => $cio->url,
    http => <<'END'))->run;
cio_flush_interval 20ms;
client_body_buffer_size 64k;
cio_journal %%TESTDIR%%/journal max_size=256k sync=always;
END
$t->allow_log(qr/cio: syncing the journal ".*" failed, the events it waited for are not known to be on the disk/);

# 20 KB records: string values are cut at Customer.io's 1,000 bytes
my %pad = map { ("p$_" => 'x' x 950) } 1 .. 20;

# a request left open: its answer is read later
sub send_event { return open_track($t, $_[0], \%pad) }

# its status and the reason of a refusal
sub answer {
    my ($s) = @_;
    my $got = '';
    1 while sysread($s, $got, 4096, length $got);
    my ($st) = $got =~ m{^HTTP/1\.\d (\d+)};
    my ($body) = $got =~ /\r\n\r\n(.*)\z/s;
    my $why = eval { decode_json($body)->{error} } // '';
    return ($st // 0, $why);
}

$t->write_file('hold', '');
$t->write_file('hold.fail', '');

my $first = send_event('first');
ok(wait_until(sub { -e "$dir/hold.held" }, 10),
    'a round\'s fdatasync() is held in the thread pool');

# paced, so that the journal has room to roll over 17 times
my @waiting = open_tracks_until($t, \%pad, "$dir/hold.failed");
ok(-e "$dir/hold.failed", 'segments rolled over until the event loop '
    . 'synced one itself, and that failed (EIO), after '
    . scalar(@waiting) . ' requests');

unlink "$dir/hold.fail", "$dir/hold";

my ($st) = answer($first);
is($st, 200, 'the request of the held round: 200 once it is done');

my (%by, @refused);
for my $w (@waiting) {
    my ($name, $s) = @$w;
    my ($code, $why) = answer($s);
    push @{ $by{"$code $why"} }, $name;
}
my @unsynced = @{ delete $by{'503 journal cannot be synced, retry later'}
    // [] };
my @full = @{ delete $by{'503 journal cannot take it, retry later'} // [] };
note(scalar(@unsynced) . ' answered 503 as not synced, ' . scalar(@full)
    . ' refused while the journal was full');
ok(@unsynced >= 3, 'the requests that waited for the next round: 503, '
    . 'their sync failed');
is_deeply(\%by, {}, 'no other answer: none of them 200')
    or diag(explain({ map { $_ => scalar @{ $by{$_} } } keys %by }));
ok($t->log_lines(qr/\[alert\].*cio: syncing the journal ".*" failed/),
    'the failed sync is an alert');

# queued all the same: the client's retry would be a duplicate, not a loss
is_deeply($cio->wait_names([ 'first', @unsynced ], 30), [],
    'every event that waited was delivered all the same');

my $after = send_event('after');
($st) = answer($after);
is($st, 200, 'the disk well again: 200');

# --- a reload while a request waits for its sync -----------------------------
# the old worker has nothing else to wait for (Customer.io answers, a
# reload does not drain; a fresh start, so that no connection of the
# above lingers): it must not exit before the sync is done and the
# request answered

ok($t->stop, 'stopped');
$t->run;
my $old;
ok(wait_until(sub { ($old) = $t->worker_pids; $old }, 10), 'started again');
$t->write_file('hold', '');
unlink "$dir/hold.held";
my $held = send_event('reload');
ok(wait_until(sub { -e "$dir/hold.held" }, 10),
    'a request waits for its sync, held');

kill 'HUP', $t->master_pid;
ok(wait_until(sub {
    $t->read_file('error.log')
        =~ /\b$old#\d+: cio: reloaded, the new workers deliver the queue/
}, 10), 'a reload: the old worker is shutting down, with no queue to drain');

unlink "$dir/hold";
($st) = answer($held);
is($st, 200, 'the request is answered 200 once its sync is done');
ok(wait_until(sub { !kill(0, $old) }, 10), 'then the old worker exits');
ok(!$t->log_lines(qr/open socket .* left in connection/),
    'no connection left open');
is_deeply($cio->wait_names(['reload'], 10), [], 'and the event arrives');

$t->done;
