#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# A worker that dies while it holds the zone's lock:
#  - during a reload: the master never waits for the lock while it
#    reloads (its signals are blocked then, so it could never learn that
#    the owner died and unlock it); nginx answers again once the worker is
#    gone;
#  - inside a push: the items it had taken out of the zone are on the
#    workspace's list already, so nothing the dead worker held stays
#    allocated; they are delivered, and the zone's memory comes back;
#  - inside a take, with a person's first item leased: her second does not
#    overtake it (it failed when a take marked its persons in the zone and
#    a dead take's marks stayed there; the marks are the worker's own
#    memory now).
#
# gdb stops the worker at the moment wanted: attached, it runs the worker
# to a breakpoint and holds it there while the test sends its signals.
# Skipped without gdb or ptrace.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use POSIX qw(:sys_wait_h);
use Test::More;
use Time::HiRes qw(time sleep);
use Cio::Test qw(wait_until);
use Cio::Gdb qw($GDB attach_error proc_field stop_at stopped release);

Cio::Test::prerequisite($GDB,
    'gdb is needed to stop a worker holding the lock (scripts/deps.sh)');
plan(skip_all => 'not under Valgrind') if $ENV{CIO_VALGRIND};

my $KILLED = qr/\[alert\].*worker process \d+ exited on signal 9/;
my $UNLOCKED = qr/\[alert\].*shared memory zone "cio" was locked by \d+/;

sub conf {
    my ($url, $extra) = @_;
    $extra //= '';
    return <<"END";
    cio_zone zone=cio:1m;
    cio_flush_interval 20ms;
    cio_retry_backoff 50ms 200ms;
    cio_lease 1s;
    cio_drain_timeout 0;
    $extra

    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_endpoint $url;
        }
        location = /status {
            cio_status;
        }
    }
END
}

sub event {
    my ($name, $pad) = @_;
    return { type => 'track', userId => 'u1', event => $name,
             messageId => "m-$name",
             properties => { pad => 'x' x ($pad // 10) } };
}

# can gdb attach here at all (a container may forbid ptrace)?
{
    my $t = Cio::Test->new(workers => 1);
    my $cio = $t->standin(workspaces => ['site1:key1']);
    $t->config(http => conf($cio->url))->run;
    my ($w) = $t->worker_pids;
    my $err = attach_error($w);
    undef $t;
    plan(skip_all => "gdb cannot attach to a worker here: $err") if $err;
}

# --- a reload while a dead worker held the lock ------------------------------

{
    my $t = Cio::Test->new(workers => 1);
    my $cio = $t->standin(workspaces => ['site1:key1']);
    $t->config(http => conf($cio->url))->run;
    $t->allow_alert($KILLED)->allow_alert($UNLOCKED);

    my ($st) = $t->post('/cio/v1/track', event('before'));
    is($st, 200, 'an event accepted');
    is_deeply($cio->wait_names(['before']), [], 'and delivered');

    # every send round takes the zone's lock: the breakpoint is reached
    # within a flush interval, with the lock held
    my ($w) = $t->worker_pids;
    my $gdb = stop_at($t, $w, 'ngx_shmtx_unlock');
    ok(stopped($t, $gdb, 20), 'the worker is stopped holding the lock')
        or diag($t->read_file('gdb.log'));

    kill 'HUP', $t->master_pid;
    ok(wait_until(sub { $t->log_lines(qr/reconfiguring/) }, 10),
        'the master began to reload');

    # a master that waited for the lock would be waiting by now
    sleep 0.5;

    kill 'KILL', $w;
    release($t, $gdb);

    my $answered = wait_until(sub {
        my ($s) = $t->post('/cio/v1/track', event('after'));
        return defined $s && $s == 200;
    }, 15);
    ok($answered, 'nginx answers again once the lock holder is dead');
    is_deeply($cio->wait_names(['after'], 10), [], 'and delivers');
    ok(!grep({ $_ == $w } $t->worker_pids), 'the stopped worker is gone');

    $t->done_part;
}

# --- a worker killed inside a push -------------------------------------------

{
    my $t = Cio::Test->new(workers => 1);
    my $cio = $t->standin(workspaces => ['site1:key1']);
    $t->config(http => conf($cio->url))->run;
    $t->allow_alert($KILLED)->allow_alert($UNLOCKED);

    my $status = sub {
        my ($s, undef, $body) = $t->http('GET', '/status');
        return $s && $s == 200 ? $t->json->decode($body) : undef;
    };
    my $idle = sub {
        my $j = $status->() or return 0;
        return $j->{total}{queued} == 0 && $j->{total}{in_flight} == 0;
    };

    # large items: a few to a run of the zone's pages
    my $batch = sub {
        my ($prefix) = @_;
        return { batch => [ map { event("$prefix-$_", 3000) } 1 .. 10 ] };
    };

    my ($st) = $t->post('/cio/v1/batch', $batch->('warm'));
    is($st, 200, 'a batch of 10 large events accepted');
    is_deeply($cio->wait_names([ map { "warm-$_" } 1 .. 10 ]), [],
        'and delivered');
    ok(wait_until($idle, 10), 'the zone is empty');
    my $before = $status->()->{zone}{used};

    # the 5th node of the push: 4 items are out of the zone already
    my ($w) = $t->worker_pids;
    my $gdb = stop_at($t, $w, 'ngx_http_cio_queue_node_alloc', 4);
    ok(wait_until(sub {
        (proc_field($w, 'TracerPid') // 0) == $gdb
    }, 20), 'gdb attached to the worker');

    my $client = fork();
    die "fork: $!" unless defined $client;
    if ($client == 0) {
        $t->post('/cio/v1/batch', $batch->('cut'));
        POSIX::_exit(0);
    }

    ok(stopped($t, $gdb, 20), 'the worker is stopped inside the push')
        or diag($t->read_file('gdb.log'));

    kill 'KILL', $w;
    release($t, $gdb);
    waitpid($client, 0);

    ok(wait_until(sub { my @p = $t->worker_pids; @p && $p[0] != $w }, 10),
        'a new worker took over');

    ($st) = $t->post('/cio/v1/batch', $batch->('next'));
    is($st, 200, 'the next batch accepted');
    is_deeply($cio->wait_names([ map { "next-$_" } 1 .. 10 ]), [],
        'and delivered');

    ok(wait_until($idle, 10), 'the zone is empty again');
    my $after = $status->()->{zone}{used};
    is($after, $before, 'and uses as much memory as before the kill')
        or diag("before $before, after $after");

    $t->done_part;
}

# --- a worker killed inside a take -------------------------------------------

# It had leased a person's first item and marked her "being taken" when it
# died: the next take must not take her for its own and send her second
# item before the first, which waits for its lease to run out.
{
    my $t = Cio::Test->new(workers => 1);
    my $cio = $t->standin(workspaces => ['site1:key1']);
    $t->config(http => conf($cio->url))->run;
    $t->allow_alert($KILLED)->allow_alert($UNLOCKED);
    $t->allow_log(qr/\[warn\].*cio: 1 events taken back after their lease/);

    # the line after a take marks an item's person, found in the source
    open my $src, '<', $t->top . '/src/ngx_http_cio_queue.c' or die $!;
    my ($line, $held);
    while (<$src>) {
        $held = 1 if /^\s+ngx_http_cio_queue_hold\(zone->sh, node\);/;
        if ($held && /^\s+ws->npending--;/) {
            $line = $.;
            last;
        }
    }
    close $src;
    ok($line, 'the line after a take marks a person is found in the source');

    my ($w) = $t->worker_pids;
    my $gdb = stop_at($t, $w, "ngx_http_cio_queue.c:$line");
    ok(wait_until(sub {
        (proc_field($w, 'TracerPid') // 0) == $gdb
    }, 20), 'gdb attached to the worker');

    my ($st) = $t->post('/cio/v1/track', event('first'));
    is($st, 200, "a person's first event accepted");
    ok(stopped($t, $gdb, 20), 'the worker is stopped inside the take')
        or diag($t->read_file('gdb.log'));

    kill 'KILL', $w;
    release($t, $gdb);
    ok(wait_until(sub { my @p = $t->worker_pids; @p && $p[0] != $w }, 10),
        'a new worker took over');

    ($st) = $t->post('/cio/v1/track', event('second'));
    is($st, 200, 'her second event accepted');
    is_deeply($cio->wait_names(['first', 'second'], 15), [],
        'both delivered');
    my @order = map { $_->{item}{name} }
                sort { $a->{seq} <=> $b->{seq} || $a->{index} <=> $b->{index} }
                grep { ($_->{item}{name} // '') =~ /^(first|second)$/ }
                @{ $cio->records };
    is_deeply(\@order, ['first', 'second'],
        'the first before the second, after its lease ran out');

    $t->done_part;
}

done_testing();
