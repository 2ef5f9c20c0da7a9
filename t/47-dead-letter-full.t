#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The dead-letter file on a full disk (a 64 KB tmpfs): a line is written
# whole or not at all, so that the lines after the disk has room again are
# not glued to a broken one; the items that could not be kept are logged
# at most once a second, with how many were not, and with how much of a
# long item the line shows.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(wait_until);
use Cio::Load qw(post_batch);

plan(skip_all => 'mounting a small tmpfs needs root') if $> != 0;

# one worker: its count of the lines not logged covers every loss
my $t = Cio::Test->new(workers => 1);
my $mnt = $t->dir . '/full';
mkdir $mnt or die "$mnt: $!";

system('mount', '-t', 'tmpfs', '-o', 'size=64k,mode=0755', 'tmpfs', $mnt) == 0
    or plan(skip_all => 'cannot mount a tmpfs here');

# lazily at the latest: the test directory goes after this
my $mounted = 1;
END { system('umount', '-l', $mnt) if $mounted && defined $mnt; }

my $cio = $t->standin(workspaces => ['site1:key1']);
my $file = "$mnt/dead.jsonl";

# a full disk: the refusals and the failed writes, at [error] and [crit],
# are what this file is about
$t->allow_log(
    qr/\[error\].*cio: Customer\.io refused \d+ of \d+ events for site "site1" \(207\)/,
    qr/\[crit\].*cio: writing to the dead-letter file ".*" failed, site "site1" loses an event/);

$t->config(http => <<"END")->run;
    cio_zone zone=cio:4m;
    cio_flush_interval 20ms;
    cio_dead_letter $file;

    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_endpoint @{[ $cio->url ]};
        }
        location = /status { cio_status; }
    }
END

# every line whole: (lines, broken lines)
sub lines {
    my $s = $t->read_file($file);
    my @lines = split /(?<=\n)/, $s;
    my $bad = grep { !/\n\z/ || !eval { $t->json->decode($_); 1 } } @lines;
    return (scalar @lines, $bad);
}

sub crit { $t->log_lines(qr/\[crit\].*cio: writing to the dead-letter file/) }

# the disk is full but for one page: a line will be cut short in it
open my $fh, '>', "$mnt/filler" or die "filler: $!";
print $fh 'x' x (15 * 4096);
close $fh or die "filler: $!";

$cio->mode({ refuse_match => '^lost-' });

my @lost = post_batch($t, '/cio', [ map { "lost-$_" } 1 .. 100 ]);
is(scalar @lost, 100, '100 events accepted, all to be refused');
ok(wait_until(sub { $t->log_lines(qr/Customer\.io refused 100 of 100 events/) }, 10),
    'Customer.io refused them');

my ($n, $bad) = lines();
ok($n > 0 && $n < 100, "some lines fit ($n), not all");
is($bad, 0, 'every line in the file is whole');

# long items, one at a time, until a second has passed since the first line
my $big = 'y' x 3000;
my $i = 0;
ok(wait_until(sub {
        $t->post('/cio/v1/track', { userId => 'u', event => 'lost-big-'
            . ++$i, messageId => "m-big-$i", properties => { pad => $big } });
        return grep { /more since the last such line/ } crit();
    }, 10), 'a later line says how many were not logged');
my @crit = crit();
my %per_second;
for (@crit) {
    $per_second{"$1 $2"}++ if /^(\S+ \S+) \[crit\] (\d+)#/;
}
is_deeply([ grep { $_ > 1 } values %per_second ], [],
    'the losses are logged at most once a second by each worker')
    or diag(join "\n", @crit);
cmp_ok(scalar @crit, '<', 20, 'a few lines for some 110 events lost');
like($crit[0], qr/No space left on device/, 'with the reason');
my ($more) = sort { $b <=> $a }
    map { /and (\d+) more since the last such line/ } @crit;
cmp_ok($more, '>=', 90, "the count of those not logged ($more)");
ok((grep { /lost-big-.*\.\.\. \(the first 1024 of \d{4} bytes\)/ } @crit),
    'a long item says how much of it the line shows');

# room again: the next dead letters are whole lines after the whole ones

unlink "$mnt/filler";
my @later = post_batch($t, '/cio', [ map { "lost-later-$_" } 1 .. 3 ]);
ok(wait_until(sub { $t->read_file($file) =~ /lost-later-3/ }, 10),
    'with room again, dead letters are written');
($n, $bad) = lines();
is($bad, 0, 'and no line is glued to a broken one');
my @names = map { eval { $t->json->decode($_)->{item}{name} } // '' }
    split /(?<=\n)/, $t->read_file($file);
is_deeply([ grep { /^lost-later-/ } @names ],
    [ map { "lost-later-$_" } 1 .. 3 ], 'every one of them readable');

# the status page counts as dead-lettered only what the file holds
my (undef, undef, $sbody) = $t->http('GET', '/status');
my $tot = eval { $t->json->decode($sbody)->{total} } // {};
my $refused = 100 + $i + 3;
is($tot->{dead_lettered}, scalar(grep { /^lost-/ } @names),
    'dead_lettered: the lines the file holds') or diag($sbody);
is(($tot->{dead_lettered} // 0) + ($tot->{lost} // 0), $refused,
    "lost: the rest of the $refused refused");

$t->stop;
$_->stop for @{ $t->{standins} };
system('umount', '-l', $mnt) == 0 and $mounted = 0;

$t->done;
