#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Reloads that change cio_journal: each failed on the code before its fix.
#  - A journal a reload brings back (A, then B, then A again) is this
#    nginx's own: the master had kept A's lock, refused it to itself, and
#    exited (init_module's failure ends the master); a directory that
#    cannot be made ended it the same way.  Now such a reload is refused
#    and the old workers go on; A comes back once no worker of an older
#    configuration holds it.
#    A reload that fails after the journal's zone is made (a port in use)
#    no longer keeps the lock it took, which refused every later reload
#    to that directory.
#  - A journal added after a reload removed another takes a new id: it
#    took the old one's, and the old journal's items, delivered later,
#    settled the new one's records at the same offsets, which a crash
#    then lost.
#  - The items of a journal a reload removed are spooled at a stop: they
#    were left out as the journal's, which the next start did not read.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Test::More;
use Cio::Test qw(wait_until);
use Cio::Load qw(post_events);

# locations /a/ (site1) and /b/ (site2); $journal: the cio_journal line
sub conf {
    my ($url, $journal, $extra) = @_;
    $extra //= 'cio_drain_timeout 0;';
    return <<"END";
    cio_zone zone=cio:4m;
    cio_flush_interval 20ms;
    cio_retry_backoff 100ms 300ms;
    cio_connect_timeout 1s;
    $journal
    $extra

    server {
        listen 127.0.0.1:%%PORT%%;
        cio_endpoint $url;

        location /a/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
        }

        location /b/ {
            cio_ingest segment;
            cio_site_id site2;
            cio_api_key key2;
        }
    }
END
}

my @workspaces = (workspaces => [ 'site1:key1', 'site2:key2' ]);

# --- A, B, A again; a directory that cannot be made --------------------------

{
    my $t = Cio::Test->new(workers => 1);
    my $cio = $t->standin(@workspaces);
    my $url = $cio->url;
    my $a = 'cio_journal %%TESTDIR%%/ja;';

    $t->config(http => conf($url, $a))->run;
    my $master = $t->master_pid;
    my @ok = post_events($t, '/a', 'first-a', 3);

    $t->config(http => conf($url, 'cio_journal %%TESTDIR%%/jb;'));
    ok($t->reload, 'reloaded to journal B');
    push @ok, post_events($t, '/a', 'in-b', 3);

    $t->config(http => conf($url, $a));
    ok($t->reload, 'reloaded to journal A again');
    is(waitpid($master, WNOHANG), 0, 'the master is still there');
    push @ok, post_events($t, '/a', 'again-a', 3);
    is(scalar @ok, 9, 'each event answered 200');
    is_deeply($cio->wait_names(\@ok, 15), [], 'and delivered');

    # a regular file where the journal's parent directory would be
    $t->write_file('file', "not a directory\n");
    $t->config(http => conf($url, 'cio_journal %%TESTDIR%%/file/j;'));
    my @workers = $t->worker_pids;
    $t->allow_log(qr/\[emerg\].*mkdir\(\) ".*\/file\/j" failed/);
    kill 'HUP', $master;
    ok(wait_until(sub {
        $t->log_lines(qr/\[emerg\].*mkdir\(\) ".*\/file\/j" failed/)
    }, 15), 'a journal whose directory cannot be made: the reload says so');
    is(waitpid($master, WNOHANG), 0, 'and the master is still there');
    is_deeply([ $t->worker_pids ], \@workers, 'with the same workers');
    my @still = post_events($t, '/a', 'still-a', 2);
    is_deeply($cio->wait_names(\@still, 15), [],
        'which go on taking and delivering events');

    # a reload that fails after the new journal's zone is made: a port
    # another socket holds; the lock it took must not outlive it
    my $busy = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
        LocalPort => 0, Proto => 'tcp') or die "listen: $!";
    my $bport = $busy->sockport;
    my $c = 'cio_journal %%TESTDIR%%/jc;';
    $t->config(http => conf($url, $c) =~ s/(listen \S+;)/$1\n        listen 127.0.0.1:$bport;/r);
    $t->allow_log(qr/\[emerg\].*bind\(\) to 127\.0\.0\.1:$bport failed/,
                  qr/\[emerg\].*still could not bind/);
    kill 'HUP', $master;
    ok(wait_until(sub { $t->log_lines(qr/\[emerg\].*still could not bind/) },
                  20), 'a reload to journal C with a port in use fails');
    is_deeply([ $t->worker_pids ], \@workers, 'the old workers go on');
    $t->config(http => conf($url, $c));
    ok($t->reload, 'the reload to C without that port is taken');
    push @still, post_events($t, '/a', 'in-c', 2);
    is_deeply($cio->wait_names(\@still, 15), [], 'and C takes events');
    close $busy;

    $t->done_part;
}

# --- back to A while A's old workers still write to it ------------------------
# A client whose request body is still coming keeps the old worker: nginx
# lets it finish.  (A batch on the wire does not: after a reload the old
# workers give their batches back to the queue and leave.)

# whether process $pid holds the server side of the connection from the
# local port $cport to nginx's $port (/proc/net/tcp, then its fds)
sub holds_client {
    my ($pid, $port, $cport) = @_;
    my $want = sprintf('0100007F:%04X 0100007F:%04X', $port, $cport);
    open my $fh, '<', '/proc/net/tcp' or return 0;
    my $inode;
    while (<$fh>) {
        my @f = split;
        $inode = $f[9] if "$f[1] $f[2]" eq $want;
    }
    close $fh;
    return 0 unless $inode;
    opendir my $dh, "/proc/$pid/fd" or return 0;
    my $has = grep { (readlink("/proc/$pid/fd/$_") // '') eq "socket:[$inode]" }
                   readdir $dh;
    closedir $dh;
    return $has;
}

{
    my $t = Cio::Test->new(workers => 1);
    my $cio = $t->standin(@workspaces);
    my $url = $cio->url;
    my $a = 'cio_journal %%TESTDIR%%/ja;';

    $t->config(http => conf($url, $a))->run;
    my $master = $t->master_pid;
    my $old;
    # the port answers before the master has forked (Valgrind is slow)
    ok(wait_until(sub { ($old) = $t->worker_pids; $old }, 30),
        'a worker runs');
    my @ok = post_events($t, '/a', 'before', 1);
    is(scalar @ok, 1, 'an event to journal A');

    my $slow = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port)
        or die "connect: $!";
    $slow->autoflush(1);
    print $slow "POST /a/v1/track HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{";
    ok(wait_until(sub { holds_client($old, $t->port, $slow->sockport) }, 15),
        'the worker reads a body that is still coming');

    $t->config(http => conf($url, 'cio_journal %%TESTDIR%%/jb;'));
    kill 'HUP', $master;
    ok(wait_until(sub { grep { $_ != $old } $t->worker_pids }, 15),
        'reloaded to journal B, the old worker finishes its request');

    $t->config(http => conf($url, $a));
    $t->allow_log(qr/\[emerg\].*cio: the journal ".*\/ja" is in use by another nginx/);
    kill 'HUP', $master;
    ok(wait_until(sub {
        $t->log_lines(qr/\[emerg\].*cio: the journal ".*\/ja" is in use by another nginx .*, or by the workers of an earlier configuration of this one \(reload again once they have exited\)/)
    }, 15), 'back to A while its old worker lives: refused, and why');
    is(waitpid($master, WNOHANG), 0, 'the master is still there');
    ok(kill(0, $old), 'the old worker too');

    close $slow;
    ok(wait_until(sub { !grep { $_ == $old } $t->worker_pids }, 20),
        'the old worker exits once its client is gone');
    ok($t->reload, 'then the reload back to A is taken');
    push @ok, post_events($t, '/a', 'back-a', 2);
    is_deeply($cio->wait_names(\@ok, 15), [],
        'the events before and after delivered');

    $t->done_part;
}

# --- A, none, B: B's records are not A's -------------------------------------

{
    my $t = Cio::Test->new(workers => 1);
    my $port = Cio::Test::free_port();
    my $url = "http://127.0.0.1:$port";

    # Customer.io away: A's events wait in the queue with their jrefs
    $t->config(http => conf($url, 'cio_journal %%TESTDIR%%/ja;'))->run;
    my @a = post_events($t, '/a', 'a', 3);
    is(scalar @a, 3, 'three events to journal A, Customer.io away');

    $t->config(http => conf($url, ''));
    ok($t->reload, 'reloaded without a journal');
    $t->config(http => conf($url, 'cio_journal %%TESTDIR%%/jb;'));
    ok($t->reload, 'reloaded to journal B');

    # the same sizes, so the same offsets in B's first segment as A's
    my @b = post_events($t, '/b', 'b', 3);
    is(scalar @b, 3, 'three events of another site to journal B');

    # A's delivered while B's wait: a Customer.io that knows only site1
    # answers site2 401 from its first request on (a fault set after it
    # started could miss B's first retry, which then delivered them)
    my $cio = $t->standin(workspaces => [ 'site1:key1' ], port => $port);
    $t->allow_alert(qr/cio: Customer\.io answered 401 for site "site2"/);
    is_deeply($cio->wait_names(\@a, 15), [], 'A\'s events delivered');
    ok(wait_until(sub {
        $t->log_lines(qr/cio: Customer\.io answered 401 for site "site2"/)
    }, 10), 'B\'s refused meanwhile');

    ok($t->kill_all, 'master and workers SIGKILLed');
    $cio->stop;
    $cio = $t->standin(@workspaces, port => $port);
    $t->run;
    ok($t->log_lines(qr/cio: journal ".*\/jb": 3 records in 1 segments, 0 settled, 3 queued again/),
        'the start finds B\'s three records unsettled');
    is_deeply($cio->wait_names(\@b, 15), [], 'and delivers them');

    $t->done_part;
}

# --- a stop after a reload removed the journal ---------------------------------

{
    my $t = Cio::Test->new(workers => 1);
    my $port = Cio::Test::free_port();
    my $url = "http://127.0.0.1:$port";
    my $spool = "cio_spool %%TESTDIR%%/spool.jsonl;\n    "
        . 'cio_drain_timeout 0;';

    $t->config(http => conf($url, 'cio_journal %%TESTDIR%%/ja;', $spool))
        ->run;
    my @ok = post_events($t, '/a', 'kept', 3);
    is(scalar @ok, 3, 'three events to the journal, Customer.io away');

    $t->config(http => conf($url, '', $spool));
    ok($t->reload, 'reloaded without the journal');
    ok($t->stop, 'nginx -s quit');
    ok($t->log_lines(qr/cio: 3 undelivered events spooled to/),
        'the stop spools the removed journal\'s events');

    my $cio = $t->standin(@workspaces, port => $port);
    $t->run;
    is_deeply($cio->wait_names(\@ok, 15), [],
        'and the next start, without the journal, delivers them');

    $t->done;
}
