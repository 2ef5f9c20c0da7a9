#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# A delivered batch is freed a slice of 64 items a turn of the worker's
# event loop (ngx_http_cio_queue_settle), not half a megabyte at once:
#  - one worker, a full batch: every event delivered once, and the books
#    balance (nothing queued or in flight, delivered = accepted);
#  - gdb holds the worker that sent a batch of 300 people (found by its
#    connection to Customer.io, which holds the answer meanwhile) between
#    two slices of its settle: the status page (the other worker) shows
#    the slice freed and the rest still in flight; the first person's
#    next event, posted meanwhile, goes once the held worker's last slice
#    frees her first one (each item holds its person until freed, so that
#    a worker dying between two slices leaves its holds to the lease);
#  - a fast stop (TERM) while a worker is held between two slices: the
#    worker frees the rest on its way out, so the spool keeps none of the
#    delivered events (a start would send them again).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(wait_until);
use Cio::Gdb qw($GDB attach_error proc_field stop_at stopped release);

sub site1 { $_[0]->ws_stats('/cio-status', 'site1') }

sub conf {
    my ($cio, $extra) = @_;
    return Cio::Test::ingest_http(endpoint => $cio->url,
        server => "location = /cio-status { cio_status; }",
        http => "cio_flush_interval 20ms;\n" . ($extra // ''));
}

# the pids with a TCP connection to 127.0.0.1:$port (/proc/net/tcp)
sub connected {
    my ($port) = @_;
    my $hex = sprintf('0100007F:%04X', $port);
    my %inode;
    for (split /\n/, Cio::Test::read_file(undef, '/proc/net/tcp')) {
        my @f = split;
        $inode{ $f[9] } = 1 if ($f[2] // '') eq $hex && $f[3] eq '01';
    }
    my %pid;
    for my $fd (glob '/proc/[0-9]*/fd/*') {
        my ($pid) = $fd =~ m{^/proc/(\d+)/};
        my $to = readlink($fd) // next;
        $pid{$pid} = 1 if $to =~ /^socket:\[(\d+)\]$/ && $inode{$1};
    }
    return keys %pid;
}

# 300 people's events in one request
sub people {
    my ($t, $prefix) = @_;
    my ($st) = $t->post('/cio/v1/batch', { batch => [
        map { { type => 'track', userId => "person-$_",
                event => "$prefix-$_", properties => { n => $_ } } }
        1 .. 300 ] });
    return $st;
}

# --- one worker, full batches: delivered once, the books balance ------------

{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1'], rate => 0);
    $t->config(workers => 1, http => conf($cio))->run;

    $cio->mode({ status => 503 });
    my $ok = 0;
    for my $r (1 .. 5) {
        $ok++ if people($t, "f$r") == 200;
    }
    is($ok, 5, '1,500 events of 300 people accepted while Customer.io '
        . 'is down');
    $cio->mode({ status => undef });

    my @names = map { my $r = $_; map { "f$r-$_" } 1 .. 300 } 1 .. 5;
    is_deeply($cio->wait_names(\@names, 30), [], 'all delivered');

    my $w;
    ok(wait_until(sub {
        $w = site1($t);
        defined $w->{queued} && $w->{queued} == 0 && $w->{in_flight} == 0
    }, 10), 'then nothing is queued or in flight') or diag(explain($w));
    is($w->{delivered}, 1500, 'delivered: 1,500');

    my @big = grep { $_->{status} == 200 && $_->{items} > 64 }
        @{ $cio->requests };
    cmp_ok(scalar(@big), '>', 0, scalar(@big)
        . ' batches of more than one slice');
    my $names = $cio->names;
    is(scalar(grep { @{ $names->{$_} } > 1 } keys %$names), 0, 'once each');

    $t->done_part;
}

# --- held between two slices: the counts, and a person's next event -------

SKIP: {
    skip 'gdb is needed to hold a worker between two slices '
        . '(scripts/deps.sh)', 9 unless $GDB;
    skip 'not under Valgrind', 9 if $ENV{CIO_VALGRIND};

    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1'], rate => 0);
    $t->config(workers => 2, http => conf($cio))->run;

    my @w = $t->worker_pids;
    my $err = attach_error($w[0]);
    skip "gdb cannot attach to a worker here: $err", 9 if $err;

    # Customer.io holds the batch's answer while gdb attaches to the
    # worker that sent it (the one with a connection to it)
    $cio->control({ match => '"name":"h-1"', count => 1,
                    delay_ms => Cio::Test::scale(3) * 1000 });
    is(people($t, 'h'), 200, "300 people's events accepted at once");

    my $held;
    wait_until(sub {
        my %to = map { $_ => 1 } connected($cio->port);
        ($held) = grep { $to{$w[$_]} } 0, 1;
        defined $held
    }, 10);
    ok(defined $held, 'a worker sends them');
    $held //= 0;

    my $gdb = stop_at($t, $w[$held], 'ngx_http_cio_deliver_free');
    ok(stopped($t, $gdb, Cio::Test::scale(3) + 20),
        'answered, it stopped between two slices of its settle')
        or diag($t->read_file('gdb.log'));

    is(scalar(@{ $cio->items }), 300, 'Customer.io has the 300 events');
    my $w = site1($t);
    is_deeply([ $w->{in_flight}, $w->{delivered} ], [ 236, 64 ],
        'the status page: 64 freed, 236 still in flight')
        or diag(explain($w));

    # person-1's event is the batch's first: the last slice frees it
    my ($st) = $t->post('/cio/v1/track',
        { userId => 'person-1', event => 'after' });
    is($st, 200, "person-1's next event accepted");

    release($t, $gdb);

    ok(wait_until(sub {
        $w = site1($t);
        ($w->{in_flight} // -1) == 0 && ($w->{delivered} // 0) == 301
    }, 10), 'the worker goes on: all 301 delivered and freed')
        or diag(explain($w));
    is_deeply($cio->wait_names([ 'after', map { "h-$_" } 1 .. 300 ], 10),
        [], "person-1's next event among them");
    my $names = $cio->names;
    is(scalar(grep { @{ $names->{$_} } > 1 } keys %$names), 0, 'once each');

    $t->done_part;
}

# --- a fast stop between two slices: nothing delivered is spooled ----------

SKIP: {
    skip 'gdb is needed to hold a worker between two slices '
        . '(scripts/deps.sh)', 5 unless $GDB;
    skip 'not under Valgrind', 5 if $ENV{CIO_VALGRIND};

    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1'], rate => 0);
    my $http = conf($cio, "cio_spool %%TESTDIR%%/spool.jsonl;\n");
    $t->config(workers => 1, http => $http)->run;

    my ($w) = $t->worker_pids;
    my $err = attach_error($w);
    skip "gdb cannot attach to a worker here: $err", 5 if $err;

    my $gdb = stop_at($t, $w, 'ngx_http_cio_deliver_free');
    ok(wait_until(sub {
        (proc_field($w, 'TracerPid') // 0) == $gdb
    }, 20), 'gdb attached to the worker');

    is(people($t, 's'), 200, "300 people's events accepted");
    ok(stopped($t, $gdb, 20), 'delivered, the worker stopped between two '
        . 'slices of its settle') or diag($t->read_file('gdb.log'));

    # TERM reaches the worker once gdb lets it go on
    my $master = $t->master_pid;
    kill 'TERM', $master;
    release($t, $gdb);
    ok($t->stop('TERM'), 'nginx -s stop');

    my $spool = $t->read_file('spool.jsonl');
    is(scalar(grep { length } split /\n/, $spool), 0,
        'the spool keeps none of the delivered events');

    $t->done_part;
}

done_testing();
