#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# A request that waits for the journal (here its sync=always fdatasync(),
# held by an LD_PRELOAD shim, t/shim/hold_sync.c) when nginx ends it:
# a graceful stop whose worker_shutdown_timeout runs out.  nginx keeps a
# blocked request until its wait is over (the handler holds
# r->main->blocked, as nginx's own aio does); then the handler finds it
# ended, answers nothing and says so at info.  The worker neither crashes
# nor touches freed memory (this file runs under ASan and Valgrind too),
# and the event, which is in the journal, is delivered after a start,
# once.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::INET;
use POSIX qw(:sys_wait_h);
use Cio::Test qw(wait_until);

my $t = Cio::Test->new(workers => 1);
my $dir = $t->dir;

$t->preload('hold_sync');
local $ENV{CIO_HOLD_SYNC} = "$dir/hold";

my $port = Cio::Test::free_port();
my $conf = Cio::Test::ingest_http(endpoint => "http://127.0.0.1:$port",
    http => <<'END');
cio_flush_interval 20ms;
cio_retry_backoff 50ms 200ms;
cio_connect_timeout 1s;
cio_journal %%TESTDIR%%/journal sync=always;
END

$t->config(main => "error_log %%TESTDIR%%/debug.log debug;\n"
    . 'worker_shutdown_timeout 1s;', http => $conf)->run;

my $worker;
ok(wait_until(sub { ($worker) = $t->worker_pids; $worker }, 10),
    'a worker is running');

# Customer.io away: the worker stays, draining, after the shutdown timeout
$t->write_file('hold', '');
my $body = '{"type":"track","userId":"u-1","event":"Held",'
    . '"messageId":"m-held"}';
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port)
    or die "connect: $!";
print $s "POST /cio/v1/track HTTP/1.1\r\nHost: localhost\r\n"
    . "Content-Type: application/json\r\n"
    . 'Content-Length: ' . length($body) . "\r\n\r\n$body";

ok(wait_until(sub { -e "$dir/hold.held" }, 10),
    'the request\'s records are written, their fdatasync() held');

$s->blocking(0);
ok(!defined sysread($s, my $none, 1) && $!{EAGAIN},
    'the request waits for it, unanswered');

my $master = $t->master_pid;
kill 'QUIT', $master;
ok(wait_until(sub {
    $t->read_file('error.log') =~ /gracefully shutting down/
}, 10), 'a graceful stop began');

# worker_shutdown_timeout ends the request; nginx keeps it, blocked
ok(wait_until(sub {
    $t->read_file('debug.log') =~ /http terminate cleanup count:\d+ blk:1/
}, 10), 'the shutdown timeout ended the request, which stays blocked');
ok(kill(0, $worker), 'the worker is still there');

unlink "$dir/hold";

ok(wait_until(sub { waitpid($master, WNOHANG) == $master }, 30),
    'nginx stopped once the sync was done');

$s->blocking(1);
my $got = '';
1 while sysread($s, $got, 4096, length $got);
is($got, '', 'the ended request was closed without an answer');

my @said = grep { /\[info\] .*cio: the request ended before its answer: / }
    split /\n/, $t->read_file('debug.log');
is(scalar @said, 1, 'the log says so once') or diag(join "\n", @said);
like($said[0] // '', qr/its 1 events are in the journal/,
    'and that its event is kept');

# a start delivers it, once
delete $t->{nginx_pid};
my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
$t->run;

$t->delivered_exactly($cio, ['Held'], 'after the start');

$t->done;
