#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# cio_journal sync=always: a 200 is answered only once an fdatasync()
# covers the request's records (group commit: requests that arrive while
# one runs share the next).  A power loss is simulated: every process is
# SIGKILLed, then each segment is cut back to the size its last completed
# sync covered (the module's debug line says so) plus a random torn tail,
# as the page cache would leave it; every event answered 200 must arrive.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time);
use Cio::Test qw(wait_until);

my $seed = $ENV{CIO_SEED} // (time ^ $$);
srand($seed);
note("CIO_SEED=$seed");

sub event {
    my ($name) = @_;
    return { type => 'track', userId => "u-$name", event => $name,
             messageId => "m-$name", properties => { name => $name } };
}

# $n children post single events at once, $max requests each, until one
# is not answered; the names answered 200 go to $file
sub load {
    my ($t, $file, $n, $max) = @_;
    my @pids;
    for my $c (1 .. $n) {
        my $pid = fork();
        die "fork: $!" unless defined $pid;
        if ($pid) {
            push @pids, $pid;
            next;
        }
        open my $out, '>>', $file or die "$file: $!";
        $out->autoflush(1);
        my $deadline = time + 30;
        for my $i (1 .. $max) {
            last if time > $deadline;
            my ($st) = $t->post('/cio/v1/track', event("c$c-$i"));
            last unless defined $st && $st =~ /^\d+$/;
            print $out "c$c-$i\n" if $st == 200;
        }
        exit 0;
    }
    return @pids;
}

sub lines {
    my ($file) = @_;
    open my $fh, '<', $file or return ();
    return map { chomp; $_ } grep { /\n\z/ } <$fh>;
}

my $t = Cio::Test->new(workers => 2);
my $port = Cio::Test::free_port();

$t->config(main => "error_log %%TESTDIR%%/debug.log debug;",
    http => Cio::Test::ingest_http(endpoint => "http://127.0.0.1:$port",
        http => <<'END'))->run;
cio_flush_interval 20ms;
cio_retry_backoff 50ms 200ms;
cio_connect_timeout 1s;
cio_journal %%TESTDIR%%/journal sync=always;
END

my $file = $t->dir . '/accepted';
my @children = load($t, $file, 4, 2000);

ok(wait_until(sub { my @l = lines($file); @l >= 300 }, 30),
    '300 events answered 200 under load');

# the power goes: nothing after this moment reaches the disk
ok($t->kill_all, 'every process killed');
waitpid($_, 0) for @children;

my @accepted = lines($file);

# what each segment's completed syncs covered
my (%synced, $syncs, $writes);
open my $dbg, '<', $t->dir . '/debug.log' or die "debug.log: $!";
while (<$dbg>) {
    next unless /cio: journal synced: segment ([0-9a-f]{8}) up to (\d+) bytes, write (\d+)/;
    $synced{$1} = $2 if ($synced{$1} // 0) < $2;
    $syncs++;
}
close $dbg;
ok($syncs, "$syncs syncs logged");

for my $seg (glob $t->dir . '/journal/*.seg') {
    my ($no) = $seg =~ m{/([0-9a-f]{8})\.seg$};
    my $size = -s $seg;
    my $keep = $synced{$no} // 0;
    ok($keep <= $size, "segment $no: $keep of $size bytes synced");

    # the synced part, then a torn rest: some of what followed, garbage
    open my $fh, '+<:raw', $seg or die "$seg: $!";
    my $data = do { local $/; <$fh> };
    my $rest = int rand(($size - $keep) + 1);
    $rest = 200 if $rest > 200;
    my $junk = join '', map { chr int rand 256 } 1 .. int rand 64;
    seek $fh, 0, 0;
    truncate $fh, 0;
    print $fh substr($data, 0, $keep + $rest) . $junk;
    close $fh;
    note("segment $no cut to $keep + $rest bytes, " . length($junk)
        . ' bytes of garbage');
}

my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
$t->run;

my $missing = $cio->wait_names(\@accepted, 60);
diag(sprintf 'sync=always, power loss simulated: accepted %d, delivered %d, '
    . 'lost %d, %d syncs (%.1f requests a sync)', scalar @accepted,
    @accepted - @$missing, scalar @$missing, $syncs,
    $syncs ? @accepted / $syncs : 0);
is_deeply($missing, [], 'every event answered 200 delivered');

my @wrong = grep { ($_->{name} // '') !~ /^c\d-\d+$/
    || ($_->{attributes}{name} // '') ne $_->{name} } @{ $cio->items };
is_deeply(\@wrong, [], 'nothing else arrived, each item whole');

$t->done;
