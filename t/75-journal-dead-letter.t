#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# cio_journal and cio_dead_letter: a dead-lettered item is settled in the
# journal only once its dead-letter line is synced, so that a power loss
# sends it again rather than loses it.  The power loss is simulated: every
# process is SIGKILLed, then the dead-letter file is cut back to the size
# its last completed sync covered (the module's debug line says so), as
# the page cache would leave it.  Each refused event must then be either
# in what is left of the dead-letter file or sent again at the start.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(wait_until);
use Cio::Load qw(post_batch dead_letters);

my $t = Cio::Test->new(workers => 1);
my $cio = $t->standin(workspaces => ['site1:key1']);
my $dead = $t->dir . '/dead.jsonl';

$t->allow_log(
    qr/\[error\].*cio: Customer\.io refused \d+ of \d+ events for site "site1" \(207\), \d+ dead-lettered to /);

sub conf {
    my ($sync) = @_;
    $t->config(main => "error_log %%TESTDIR%%/debug.log debug;",
        http => Cio::Test::ingest_http(endpoint => $cio->url,
            http => <<"END"));
cio_flush_interval 20ms;
cio_retry_backoff 50ms 200ms;
cio_dead_letter $dead;
cio_journal %%TESTDIR%%/journal sync=$sync;
END
}

# the dead-letter file's size at its last completed sync, and how many
# dead-lettered items those syncs settled, from the debug log
sub synced {
    my ($size, $settled) = (0, 0);
    open my $dbg, '<', $t->dir . '/debug.log' or return (0, 0);
    while (<$dbg>) {
        next unless /cio: journal synced: dead-letter file up to (\d+) bytes, (\d+) dead-lettered settled/;
        $size = $1 if $1 > $size;
        $settled += $2;
    }
    close $dbg;
    return ($size, $settled);
}

# what the last start queued again from the journal
sub queued_again {
    my $n;
    open my $dbg, '<', $t->dir . '/debug.log' or return undef;
    while (<$dbg>) {
        $n = $1 if /\[notice\].*cio: journal ".*": \d+ records .* (\d+) queued again/;
    }
    close $dbg;
    return $n;
}

# every process dies at once, and the dead-letter file loses what was
# not synced
sub power_loss {
    ok($t->kill_all, 'every process killed');

    my ($keep) = synced();
    my $size = -s $dead // 0;
    ok($keep <= $size, "dead-letter file: $keep of $size bytes synced");
    truncate $dead, $keep or die "$dead: $!";
    return $keep;
}

# the refused $names are each in the dead-letter file, or arrive again
sub kept {
    my ($names, $what) = @_;
    my %in = map { $_->{item}{name} => 1 } @{ dead_letters($dead) };
    my @resend = grep { !$in{$_} } @$names;
    my $missing = $cio->wait_names(\@resend, 30);
    diag(sprintf '%s: refused %d, in the dead-letter file %d, sent again '
        . '%d, lost %d', $what, scalar @$names, @$names - @resend,
        @resend - @$missing, scalar @$missing);
    is_deeply($missing, [], "$what: no refused event lost");
    return scalar @resend;
}

# --- sync=TIME: the ack waits for the timer's sync of the dead letters ------

conf('1h')->run;
$cio->mode({ refuse_match => '^bad-' });

my @bad = map { "bad-t$_" } 1 .. 3;
is(scalar post_batch($t, '/cio', [ 'good-t1', @bad, 'good-t2' ]), 5,
    'sync=1h: a batch of 5 accepted');
ok(wait_until(sub { @{ dead_letters($dead) } >= 3 }, 10),
    'its 3 refused events dead-lettered');
is_deeply($cio->wait_names([ 'good-t1', 'good-t2' ], 10), [],
    'the others delivered');

is(power_loss(), 0, 'sync=1h: the dead-letter file was not synced yet');

$cio->mode({ refuse_match => undef });
$t->run;
is(queued_again(), 3, 'the start queued the 3 dead-lettered events again');
is(kept(\@bad, 'sync=1h, power loss'), 3,
    'the 3 dead-lettered events were not settled: sent again');
$t->stop;

# --- sync=TIME: the timer's sync settles them -------------------------------

unlink $dead;
$cio->mode({ refuse_match => '^bad-' });
conf('200ms')->run;

my $before = (synced())[1];
@bad = map { "bad-s$_" } 1 .. 2;
is(scalar post_batch($t, '/cio', [ @bad, 'good-s1' ]), 3,
    'sync=200ms: a batch of 3 accepted');
ok(wait_until(sub { @{ dead_letters($dead) } >= 2 }, 10),
    'its 2 refused events dead-lettered');
ok(wait_until(sub { (synced())[1] >= $before + 2 }, 10),
    'the timer synced the dead-letter file and settled the 2');
$t->stop;

# --- sync=always: synced, then settled -----------------------------------

unlink $dead;
conf('always')->run;
is(queued_again(), 0, 'the start queued nothing again: all was settled');

@bad = map { "bad-a$_" } 1 .. 3;
is(scalar post_batch($t, '/cio', [ @bad, 'good-a1' ]), 4,
    'sync=always: a batch of 4 accepted');
ok(wait_until(sub { @{ dead_letters($dead) } >= 3 }, 10),
    'its 3 refused events dead-lettered');
ok(wait_until(sub { (synced())[1] >= 3 }, 10),
    'the dead-letter file synced, then the 3 settled in the journal');

my $keep = power_loss();
ok($keep >= -s $dead && $keep > 0, 'the lines were all synced');

$cio->mode({ refuse_match => undef });
$t->run;
is(kept(\@bad, 'sync=always, power loss'), 0,
    'all 3 still in the dead-letter file');
is(queued_again(), 0, 'and none queued again: their acks were written');

$t->done;
