#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# A worker that exits while its sender thread is stuck: after 2 s it goes
# without the thread, and leaves the thread's eventfd open, so that the
# thread never writes to a file that took the fd's number.
#
# The thread is stuck for real: a preloaded getaddrinfo() sleeps 8 s for
# the endpoint's host, and libcurl waits for its resolver thread when the
# request is taken down.  The same library notes every close() of an
# eventfd by the worker's main thread meanwhile.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use POSIX qw(:sys_wait_h);
use Test::More;
use Time::HiRes qw(time);
use Cio::Test qw(wait_until);

my $t = Cio::Test->new(workers => 1);
my $dir = $t->dir;
my $notes = "$dir/shim.log";

$t->write_file('shim.c', <<'END');
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static char log_path[512];
static volatile int stuck;

__attribute__((constructor)) static void
init(void)
{
    const char *p = getenv("CIO_SHIM_LOG");

    if (p) {
        snprintf(log_path, sizeof(log_path), "%s", p);
    }
}

static void
note(const char *what, int v)
{
    int   fd, n;
    char  buf[128];

    if (log_path[0] == '\0') {
        return;
    }

    n = snprintf(buf, sizeof(buf), "%s %d\n", what, v);
    fd = open(log_path, O_WRONLY|O_APPEND|O_CREAT, 0644);

    if (fd >= 0) {
        (void) !write(fd, buf, n);
        syscall(SYS_close, fd);
    }
}

int
getaddrinfo(const char *node, const char *service,
    const struct addrinfo *hints, struct addrinfo **res)
{
    int (*real)(const char *, const char *, const struct addrinfo *,
                struct addrinfo **);

    if (node && strcmp(node, "stuck.test") == 0) {
        stuck = 1;
        note("resolving", getpid());
        sleep(8);
        stuck = 0;
        return EAI_NONAME;
    }

    real = dlsym(RTLD_NEXT, "getaddrinfo");
    return real(node, service, hints, res);
}

int
close(int fd)
{
    int      (*real)(int);
    char     path[64], link[64];
    ssize_t  n;

    if (stuck && syscall(SYS_gettid) == getpid()) {
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        n = readlink(path, link, sizeof(link) - 1);

        if (n > 0) {
            link[n] = '\0';

            if (strstr(link, "eventfd")) {
                note("closed an eventfd while the sender was stuck:", fd);
            }
        }
    }

    real = dlsym(RTLD_NEXT, "close");
    return real(fd);
}
END

my $out = `cc -shared -fPIC -o $dir/shim.so $dir/shim.c -ldl 2>&1`;
plan(skip_all => "cannot build the preload library: $out") if $?;

local $ENV{CIO_SHIM_LOG} = $notes;
local $ENV{CIO_PRELOAD} = join ' ', grep { $_ } $ENV{CIO_PRELOAD},
    "$dir/shim.so";

my $port = Cio::Test::free_port();

$t->config(http => <<"END")->run;
    cio_zone zone=cio:4m;
    cio_flush_interval 20ms;
    cio_drain_timeout 0;

    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_endpoint http://stuck.test:$port;
        }
    }
END

$t->allow_alert(qr/cio: sender thread did not stop in 2000 ms/);
$t->allow_alert(qr/undelivered events are lost with the zone/);

my ($st) = $t->post('/cio/v1/track',
    { userId => 'u1', event => 'stuck-1', messageId => 'm-stuck-1' });
is($st, 200, 'an event accepted');
ok(wait_until(sub { $t->read_file($notes) =~ /^resolving/m }, 10),
    'its batch is stuck resolving the endpoint');

my $pid = $t->master_pid;
my $start = time;
ok($t->stop('TERM'), 'nginx stops');
my $took = time - $start;
cmp_ok($took, '<', 6,
    sprintf('within the 2 s the worker gives its sender (%.1f s), '
        . 'not the 8 s it is stuck', $took));

ok($t->log_lines(qr/\[alert\].*cio: sender thread did not stop in 2000 ms, its 1 batches come back when their lease expires; its eventfd stays open until the process exits/),
    'the log says the sender was left behind');
unlike($t->read_file($notes), qr/closed an eventfd/,
    'the eventfd the thread may still write to was not closed');
ok(!$t->log_lines(qr/open socket #\d+ left in connection/),
    'and nginx does not take it for a socket left open');

$t->done;
