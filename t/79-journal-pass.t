#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# cio_journal writes the records of the requests one event loop pass took
# in one pwritev() (journal.c): requests that arrive together share a
# write, the debug log says how many, and each still gets its own records'
# places, so that what is delivered is settled as itself.  Once every
# event has arrived and been settled, a SIGKILL of every process and a
# start send nothing again; a wrong place would leave records unsettled
# (sent again) and settle others that were not delivered (lost after a
# crash).  A shared write that fails (a full disk) answers every one of
# its requests 503.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time);
use Cio::Test qw(wait_until);
use Cio::Load qw(full_disk_journal);

my $CONNS = 16;
my $ROUNDS = 5;
my $JSON = JSON::PP->new->canonical;

sub conf {
    my ($port, $journal, $server) = @_;
    return Cio::Test::ingest_http(endpoint => "http://127.0.0.1:$port",
        zone => '8m', server => $server // '', http => <<"END");
cio_flush_interval 20ms;
cio_retry_backoff 50ms 200ms;
cio_connect_timeout 1s;
cio_journal $journal;
END
}

sub connections {
    my ($t) = @_;
    return map {
        IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port,
                              Proto => 'tcp') or die "connect: $!"
    } 1 .. $CONNS;
}

sub request {
    my ($name, $pad) = @_;
    my $body = $JSON->encode({ type => 'track', userId => "u-$name",
        event => $name, messageId => "m-$name",
        properties => { pad => $pad // '' } });
    return "POST /cio/v1/track HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Type: application/json\r\n"
        . 'Content-Length: ' . length($body) . "\r\n\r\n" . $body;
}

# the status of the next answer on a keep-alive connection, 0: none
sub answer {
    my ($sock) = @_;
    my $buf = '';
    my $deadline = time + 10;
    while (time < $deadline) {
        if ($buf =~ /\A(.*?\r\n\r\n)/s) {
            my $head = $1;
            my ($len) = $head =~ /^Content-Length: (\d+)/mi;
            return ($head =~ m{^HTTP/1\.1 (\d+)})[0]
                if length($buf) >= length($head) + ($len // 0);
        }
        my $n = sysread($sock, $buf, 4096, length $buf);
        return 0 unless $n;
    }
    return 0;
}

# one request on each connection; with $stop, the worker is stopped
# meanwhile, so that it finds them all ready at once, in one pass of its
# event loop.  Returns the names and each one's status.
# true once the process is stopped (kill returns before it is)
sub stopped {
    my ($pid) = @_;
    return wait_until(sub {
        my $stat = Cio::Test->read_file("/proc/$pid/stat");
        return $stat =~ /\) T /;
    }, 5);
}

sub at_once {
    my ($t, $socks, $prefix, $stop, $pad) = @_;
    my $worker;
    wait_until(sub { ($worker) = $t->worker_pids; $worker }, 10)
        or die 'no worker';
    if ($stop) {
        kill 'STOP', $worker;
        stopped($worker) or die "worker $worker did not stop";
    }
    my (@names, $i);
    for my $sock (@$socks) {
        my $name = "$prefix-" . ++$i;
        my $req = request($name, $pad);
        syswrite($sock, $req) == length $req or die "write: $!";
        push @names, $name;
    }
    kill 'CONT', $worker if $stop;
    return map { [ shift @names, answer($_) ] } @$socks;
}

# (writes, writes of more than one request, most requests in one)
sub writes {
    my ($t) = @_;
    my ($writes, $shared, $most) = (0, 0, 0);
    open my $dbg, '<', $t->dir . '/debug.log' or die "debug.log: $!";
    while (<$dbg>) {
        next unless /cio: journal written: (\d+) requests, (\d+) events/;
        $writes++;
        $shared++ if $1 > 1;
        $most = $1 if $1 > $most;
    }
    close $dbg;
    return ($writes, $shared, $most);
}

# --- the requests of a pass share a write, each settled as itself ----------

{
    my $t = Cio::Test->new(workers => 1);
    my $port = Cio::Test::free_port();
    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);

    $t->config(main => 'error_log %%TESTDIR%%/debug.log debug;',
        http => conf($port, '%%TESTDIR%%/journal max_size=16m sync=1s',
            "location = /cio-status {\n    cio_status;\n}"))->run;

    my @socks = connections($t);
    my @all = map { at_once($t, \@socks, "pass-$_", $_) } 0 .. $ROUNDS;
    my @names = map { $_->[0] } @all;
    my $total = @names;
    is(scalar(grep { $_->[1] == 200 } @all), $total,
        "$total events answered 200");

    my $missing = $cio->wait_names(\@names, 30);
    is_deeply($missing, [], "all $total events delivered");

    # delivered counts in the same call that writes the acks
    ok(wait_until(sub {
            my ($st, undef, $body) = $t->http('GET', '/cio-status');
            my $s = ($st // 0) == 200 ? eval { $JSON->decode($body) } : undef;
            return $s && $s->{total}{delivered} == $total;
        }, 10), 'every delivery settled');

    my ($writes, $shared, $most) = writes($t);
    cmp_ok($writes, '<', $total, "$total requests in $writes writes");
    cmp_ok($shared, '>=', $ROUNDS, "$shared writes shared by requests");
    is($most, $CONNS, "the $CONNS requests of a pass in one write");

    ok($t->kill_all, 'master and worker SIGKILLed');
    $t->run;

    my @replays = $t->log_lines(qr/cio: journal ".*journal": \d+ records in \d+ segments, \d+ settled, \d+ queued again/);
    like($replays[-1] // '', qr/ $total settled, 0 queued again/,
        'the start finds every record settled, sends none again');

    my %seen;
    $seen{ $_->{name} // '' }++ for @{ $cio->items };
    my @twice = grep { $seen{$_} > 1 } @names;
    is_deeply(\@twice, [], 'each event delivered once');

    diag(sprintf 'journal, %d requests at once: %d requests in %d writes '
        . '(up to %d a write), delivered %d, sent again 0',
        $CONNS, $total, $writes, $most, $total - @$missing);

    $t->done_part;
}

# --- sync=always: the requests of a shared write share its sync -------------

{
    my $t = Cio::Test->new(workers => 1);
    my $port = Cio::Test::free_port();
    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);

    $t->config(main => 'error_log %%TESTDIR%%/debug.log debug;',
        http => conf($port, '%%TESTDIR%%/journal sync=always'))->run;

    my @socks = connections($t);
    my @all = map { at_once($t, \@socks, "always-$_", 1) } 1 .. 3;
    my @names = map { $_->[0] } @all;
    is(join(' ', map { $_->[1] } @all), join(' ', (200) x @all),
        'sync=always: every request of a shared write answered 200');

    my ($writes, $shared, $most) = writes($t);
    open my $dbg, '<', $t->dir . '/debug.log' or die "debug.log: $!";
    my $syncs = grep { /cio: journal synced: segment/ } <$dbg>;
    close $dbg;
    cmp_ok($syncs, '<', scalar @names,
        scalar(@names) . " requests in $writes writes, $syncs syncs");

    is_deeply($cio->wait_names(\@names, 30), [], 'and delivered');

    $t->done_part;
}

# --- a shared write that fails answers all of its requests 503 ---------------

SKIP: {
    my $t = Cio::Test->new(workers => 1);
    my $dir = full_disk_journal($t, '128k', 6);

    my $port = Cio::Test::free_port();
    $t->config(main => 'error_log %%TESTDIR%%/debug.log debug;',
        http => conf($port, "$dir max_size=512k"))->run;

    # passes of 16 requests of 2 KB until one is refused: the disk is full
    my @socks = connections($t);
    my (@ok, @last);
    for my $round (1 .. 100) {
        @last = at_once($t, \@socks, "full-$round", 1, 'x' x 2000);
        push @ok, map { $_->[0] } grep { $_->[1] == 200 } @last;
        last if grep { $_->[1] != 200 } @last;
    }
    ok(@ok > 16, scalar(@ok) . ' events answered 200 until the disk was '
        . 'full');

    # full: a whole pass fails in one write
    my @full = at_once($t, \@socks, 'refused', 1, 'x' x 2000);
    is(join(' ', map { $_->[1] } @full), join(' ', (503) x $CONNS),
        "a pass of $CONNS on a full disk: each answered 503");

    my @records = map { local (@ARGV, $/) = ($_); <> } glob "$dir/*.seg";
    my $refused = grep { my $n = $_->[0]; grep { /"$n"/ } @records } @full;
    is($refused, 0, 'none of them in the journal');

    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
    is_deeply($cio->wait_names(\@ok, 30), [],
        'every event answered 200 delivered');
    my %seen = map { ($_->{name} // '') => 1 } @{ $cio->items };
    is(scalar(grep { $seen{ $_->[0] } } @full), 0,
        'none of those answered 503');

    $t->done_part;
    system('umount', $dir);
}

done_testing();
