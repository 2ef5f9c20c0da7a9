#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Soak: a steady load of events through nginx to the Customer.io stand-in
# while everything goes wrong in turn: 500s, timeouts, 429s, Customer.io
# down, connections dropped, 401, refused items (207), reloads, workers
# SIGKILLed, and one stop and start with the queue spooled in between.
# At the end, every event nginx answered 200 for must be recorded by the
# stand-in or be in the dead-letter file; the figures are printed.
#
#   make soak                       60 s at 40 events/s, 2 workers
#   perl -It/lib scripts/soak.pl --duration 30 --rate 20 --seed 7
#   make soak SOAK_ARGS="--journal sync=1s"
#
# --journal ARGS adds "cio_journal DIR ARGS;" ("on": the defaults), and
# then the stop and start becomes two SIGKILLs of the master and every
# worker at once, with Customer.io down: the journal must carry the queue.
#
# Bounded: the load runs --duration seconds; the final wait for delivery
# is at most 90 s.  Loopback only.  Not part of make test.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../t/lib";

use Getopt::Long qw(GetOptions);
use IO::Handle;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use Test::More;

use Cio::Test qw(wait_until);
use Cio::Load qw(dead_letters);

my %o = (duration => 60, rate => 40, workers => 2, seed => time % 1000);
GetOptions(\%o, 'duration=i', 'rate=i', 'workers=i', 'seed=i', 'journal=s')
    or die "usage: $0 [--duration S] [--rate N] [--workers N] [--seed N] "
        . "[--journal ARGS]\n";
die "--duration is 10 to 600 s\n" if $o{duration} < 10 || $o{duration} > 600;
die "--rate is 1 to 200 events/s\n" if $o{rate} < 1 || $o{rate} > 200;
srand($o{seed});

my $t = Cio::Test->new(workers => $o{workers});
my $dir = $t->dir;
my $port = Cio::Test::free_port();
my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);

my $journal = !defined $o{journal} ? ''
    : 'cio_journal %%TESTDIR%%/journal '
      . ($o{journal} eq 'on' ? '' : $o{journal}) . ';';

my $conf = <<"END";
    cio_zone zone=cio:16m;
    $journal
    cio_flush_interval 50ms;
    cio_retry_backoff 100ms 1s;
    cio_retry_max 8;
    cio_timeout 1s;
    cio_connect_timeout 500ms;
    cio_lease 3s;
    cio_drain_timeout 2s;
    cio_rate 20r/s;
    cio_spool %%TESTDIR%%/spool.jsonl;
    cio_dead_letter %%TESTDIR%%/dead.jsonl;

    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_endpoint http://127.0.0.1:$port;
        }
    }
END

$t->config(http => $conf)->run;
$t->allow_alert(qr/exited on signal 9|was locked by|answered 401 for site/);
# the refusals the soak provokes by design (its "bad-" events), at [error];
# each is counted against the dead letters below
$t->allow_log(qr/\[error\].*cio: Customer\.io refused \d+ of \d+ events for site "site1" \(207\), \d+ dead-lettered to /);

# --- the load: a child posting batches of 1 to 3 calls ---------------------

my $accepted_file = "$dir/accepted.txt";
my $start = time;
my $end = $start + $o{duration};

my $loader = fork // die "fork: $!";
if ($loader == 0) {
    srand($o{seed} + 1);
    open my $out, '>>', $accepted_file or die "$accepted_file: $!";
    $out->autoflush(1);
    my ($n, $i) = (0, 0);
    while (time < $end) {
        my $due = $start + $n / $o{rate};
        sleep($due - time) if $due > time;
        my @calls;
        for (1 .. 1 + int rand 3) {
            $n++;
            # 2% will be refused by "Customer.io": the dead-letter file's
            my $name = (rand() < 0.02 ? 'bad' : 'ev') . "-$n";
            push @calls, { type => 'track', userId => 'u' . ($n % 97),
                event => $name, messageId => "m-$name",
                properties => { n => $n } };
        }
        my ($st) = eval { $t->post('/cio/v1/batch', { batch => \@calls }) };
        print $out map { "$_->{event}\n" } @calls
            if defined $st && $st == 200;
    }
    # not exit(): the harness's destructors would stop nginx
    POSIX::_exit(0);
}

# --- the chaos: a fault every few seconds, reloads, kills, one restart -----

my @faults = (
    [ '500s at 30%',       sub { $cio->mode({ fail_rate => 0.3 }) } ],
    [ 'slow past timeout', sub { $cio->mode({ slow_rate => 0.3,
                                              slow_ms => 1500 }) } ],
    [ '429 past 5r/s',     sub { $cio->mode({ rate => 5, burst => 5 }) } ],
    [ 'down',              sub { $cio->stop } ],
    [ 'connections drop',  sub { $cio->mode({ close_rate => 0.2 }) } ],
    [ '401',               sub { $cio->mode({ status => 401 }) } ],
    [ 'normal',            sub { } ],
);

my %count = (reloads => 0, kills => 0, restarts => 0, faults => 0,
    crashes => 0);
my ($next_fault, $next_reload, $next_kill) = ($start + 2, $start + 9,
    $start + 5);
my $restart_at = $start + $o{duration} * 0.6;
my $restarted = 0;
my @crash_at = defined $o{journal}
    ? ($start + $o{duration} * 0.35, $start + $o{duration} * 0.7) : ();
$restarted = 1 if @crash_at;
my $fault = 0;

sub clear_faults {
    $cio->start unless $cio->running;
    $cio->control({ reset => 1 });
    $cio->mode({ refuse_match => '^bad-', seed => $o{seed} });
}

clear_faults();

while (time < $end) {
    my $now = time;

    if ($now >= $next_fault) {
        clear_faults();
        my ($name, $do) = @{ $faults[$fault++ % @faults] };
        $do->();
        $count{faults}++;
        note(sprintf '%5.1f s: %s', $now - $start, $name);
        $next_fault = $now + 3 + rand 2;
    }

    if ($now >= $next_reload) {
        $count{reloads}++ if $t->reload;
        note(sprintf '%5.1f s: reload', time - $start);
        $next_reload = $now + 8 + rand 4;
    }

    if ($now >= $next_kill) {
        my @w = $t->worker_pids;
        if (@w) {
            kill 'KILL', $w[rand @w];
            $count{kills}++;
            note(sprintf '%5.1f s: SIGKILL a worker', time - $start);
        }
        $next_kill = $now + 5 + rand 4;
    }

    if (@crash_at && $now >= $crash_at[0]) {
        # the whole server dies, Customer.io away: only the journal keeps
        # what was answered 200
        shift @crash_at;
        $cio->stop if $cio->running;
        $t->kill_all;
        note(sprintf '%5.1f s: SIGKILL of master and workers, Customer.io '
            . 'down', time - $start);
        $t->run;
        $count{crashes}++;
        note(sprintf '%5.1f s: nginx started again', time - $start);
    }

    if (!$restarted && $now >= $restart_at) {
        # Customer.io down across the stop: the spool must carry the queue
        $cio->stop if $cio->running;
        note(sprintf '%5.1f s: nginx -s quit, Customer.io down',
            time - $start);
        $t->stop('QUIT');
        $t->run;
        $count{restarts}++;
        $restarted = 1;
        note(sprintf '%5.1f s: nginx started again', time - $start);
    }

    sleep 0.1;
}

waitpid($loader, 0);
clear_faults();
$cio->mode({ refuse_match => '^bad-' });

# --- the reckoning -----------------------------------------------------------

open my $fh, '<', $accepted_file or die "$accepted_file: $!";
chomp(my @accepted = <$fh>);
close $fh;

my (%delivered, %dead);
my $settled = wait_until(sub {
    %delivered = map { $_ => 1 } keys %{ $cio->names };
    %dead = map { $_->{item}{name} => $_->{reason} }
        @{ dead_letters("$dir/dead.jsonl") };
    return !grep { !$delivered{$_} && !$dead{$_} } @accepted;
}, 90);

my @lost = grep { !$delivered{$_} && !$dead{$_} } @accepted;
my %acc = map { $_ => 1 } @accepted;
my $names = $cio->names;
my $dups = 0;
$dups += @{ $names->{$_} } - 1 for keys %$names;
my @split = grep { my %u = map { $_ => 1 } @{ $names->{$_} }; keys %u > 1 }
    keys %$names;
my @bad = grep { /^bad-/ } @accepted;
my @bad_dead = grep { $dead{$_} } @bad;
my @good_dead = grep { !/^bad-/ && $dead{$_} } @accepted;
my %reasons;
$reasons{$dead{$_}}++ for @good_dead;
my $extra = grep { !$acc{$_} } keys %delivered;

my %status;
$status{ $_->{status} }++ for @{ $cio->requests };
my ($spooled) = map { /(\d+) undelivered events spooled/ }
    $t->log_lines(qr/undelivered events spooled/);
my ($loaded) = map { /loaded (\d+) events/ } $t->log_lines(qr/cio: loaded/);
my $reclaimed = 0;
$reclaimed += $_ for map { /(\d+) events taken back/ }
    $t->log_lines(qr/events taken back after their lease/);

my $elapsed = time - $start;
my @report = (
    sprintf('soak: %d s of load at %d events/s, %d workers, seed %d, '
        . '%.0f s in all', $o{duration}, $o{rate}, $o{workers}, $o{seed},
        $elapsed),
    sprintf('chaos: %d faults, %d reloads, %d workers killed, %d stop and '
        . 'start, %d whole-server SIGKILLs%s',
        @count{qw(faults reloads kills restarts crashes)},
        defined $o{journal} ? " (cio_journal $o{journal})" : ''),
    sprintf('accepted (200):      %6d', scalar @accepted),
    sprintf('delivered:           %6d  (+%d sent more than once, '
        . 'deduplicated by id)', scalar(grep { $delivered{$_} } @accepted),
        $dups),
    sprintf('dead-lettered:       %6d  (%d refused by design, %d others%s)',
        scalar(@bad_dead) + scalar(@good_dead), scalar @bad_dead,
        scalar @good_dead,
        %reasons ? ': ' . join(', ', map { "$_ $reasons{$_}" }
            sort keys %reasons) : ''),
    sprintf('lost:                %6d', scalar @lost),
    sprintf('delivered, not seen accepted: %d (answer lost to a kill or '
        . 'restart)', $extra),
    sprintf('spooled at stop: %s, loaded at start: %s, taken back after '
        . 'a lease: %d', $spooled // 0, $loaded // 0, $reclaimed),
    'requests by status: ' . join(', ', map { "$_: $status{$_}" }
        sort { $a <=> $b } keys %status),
);
print "$_\n" for @report;

ok($settled, 'every accepted event was delivered or dead-lettered')
    or diag('lost: ' . join ' ', @lost[0 .. ($#lost < 20 ? $#lost : 19)]);
is(scalar @lost, 0, 'nothing lost');
is(scalar @split, 0, 'a duplicate always carried the same dedupe id');
is(scalar @bad_dead, scalar @bad, 'every refused event is dead-lettered');

$t->write_file('report.txt', join '', map { "$_\n" } @report);
diag("soak directory $dir (CIO_TEST_LEAVE=1 keeps it)");

$t->done;
