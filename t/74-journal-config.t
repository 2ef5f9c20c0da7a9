#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# cio_journal's parameters: a bad one fails "nginx -t" with a message that
# names it; good ones pass, and "nginx -t" creates nothing on disk.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test;

my $server = <<'END';
    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ { cio_ingest segment; cio_site_id s; cio_api_key k; }
    }
END

my @cases = (
    [ 'the defaults', 0, qr/test is successful/,
      'cio_journal %%TESTDIR%%/journal;' ],
    [ 'every parameter', 0, qr/test is successful/,
      'cio_journal journal max_size=2g sync=always;' ],
    [ 'sync=off', 0, qr/test is successful/,
      'cio_journal journal sync=off max_size=128k;' ],
    [ 'sync=250ms', 0, qr/test is successful/,
      'cio_journal journal sync=250ms;' ],
    [ 'max_size too small', 1,
      qr/invalid max_size "64k", at least 128k/,
      'cio_journal journal max_size=64k;' ],
    [ 'max_size not a size', 1, qr/invalid max_size "big"/,
      'cio_journal journal max_size=big;' ],
    [ 'sync neither a time, always nor off', 1,
      qr/invalid sync "sometimes": always, off or a time/,
      'cio_journal journal sync=sometimes;' ],
    [ 'sync=0', 1, qr/invalid sync "0"/, 'cio_journal journal sync=0;' ],
    [ 'an unknown parameter', 1, qr/invalid parameter "size=1m"/,
      'cio_journal journal size=1m;' ],
    [ 'twice', 1, qr/"cio_journal" directive is duplicate/,
      "cio_journal a;\n    cio_journal b;" ],
    [ 'in a server block', 1, qr/"cio_journal" directive is not allowed here/,
      "server { cio_journal a; }" ],
);

for my $case (@cases) {
    my ($name, $fails, $re, $directive) = @$case;
    my $t = Cio::Test->new;
    $t->config(http => "    %%ZONE%%\n    $directive\n$server");
    my ($rc, $out) = $t->check_config;
    is($rc ? 1 : 0, $fails,
        "$name: nginx -t " . ($fails ? 'fails' : 'passes'));
    like($out, $re, "$name: message") or diag($out);
    ok(!-e $t->dir . '/journal', "$name: nothing created")
        unless $fails;
}

# --- one nginx to a journal ---------------------------------------------------
# a second nginx on the same directory (what the new master of a binary
# upgrade would be) refuses to start, rather than write the same segments

{
    my $a = Cio::Test->new(workers => 1);
    my $dir = $a->dir . '/journal';
    my $http = "    %%ZONE%%\n    cio_journal $dir;\n$server";
    $a->config(http => $http)->run;

    my $b = Cio::Test->new(workers => 1);
    $b->config(http => $http);
    local $ENV{LD_PRELOAD} = $ENV{CIO_PRELOAD} if $ENV{CIO_PRELOAD};
    my $out = `timeout 20 $b->{nginx} -p @{[ $b->dir ]}/ -c nginx.conf -e @{[ $b->dir ]}/error.log 2>&1`;
    isnt($? >> 8, 0, 'a second nginx on the same journal does not start');
    like($out, qr/\[emerg\].*cio: the journal "\Q$dir\E" is in use by another nginx \(a binary upgrade\?/,
        'and says why');

    my ($st) = $a->post('/cio/v1/track', { type => 'track', userId => 'u',
        event => 'still' });
    is($st, 200, 'the first one goes on');

    $a->done_part;
    $b->allow_log(qr/\[emerg\].*is in use by another nginx/);
    $b->run;
    pass('once the first one stopped, the second one starts');
    $b->done_part;
}

done_testing();
