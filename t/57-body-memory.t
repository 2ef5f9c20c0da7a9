#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# A chunked body has no Content-Length to refuse it by before it is read:
# where client_max_body_size allows it (0, as a server that also takes
# uploads may have), nginx buffers 32 MB to a file, and the module must
# answer 413 without copying them into the worker's memory.  Before, it
# copied the whole body, then compared its size: the worker's peak memory
# grew by the body's size for every such request.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test;

my $t = Cio::Test->new;
my $cio = $t->standin(workspaces => ['site1:key1']);
my %auth = (Authorization => Cio::Test::basic('site1_write_key'));

$t->config(workers => 1, http => Cio::Test::ingest_http(
    endpoint => $cio->url, write_key => 'site1_write_key',
    directives => 'client_max_body_size 0;'))->run;

# the worker's peak resident memory, in kB
sub hwm {
    my ($pid) = $t->worker_pids;
    open my $fh, '<', "/proc/$pid/status" or return 0;
    my ($kb) = map { /^VmHWM:\s+(\d+)/ ? $1 : () } <$fh>;
    return $kb // 0;
}

my ($st) = $t->post('/cio/v1/track', { userId => 'u', event => 'Warm' },
                    %auth);
is($st, 200, 'an event: 200');
my $before = hwm();

my $chunk = ('x' x (512 * 1024));
my $body = join('', map { sprintf("%x\r\n%s\r\n", length $chunk, $chunk) }
                        1 .. 64) . "0\r\n\r\n";
my ($st2, undef, $r) = $t->http('POST', '/cio/v1/batch', $body, %auth,
    'Content-Type' => 'application/json',
    'Transfer-Encoding' => 'chunked');
is($st2, 413, 'a chunked batch of 32 MB: 413');
like($r, qr/"batch is larger than the limit"/, 'with the reason');

my $grew = hwm() - $before;
cmp_ok($grew, '<', 16 * 1024,
    'the worker did not read the 32 MB into memory (its peak grew by '
    . "$grew kB)");

($st) = $t->post('/cio/v1/track', { userId => 'u', event => 'After' },
                 %auth);
is($st, 200, 'the next event: 200');

$t->done;
