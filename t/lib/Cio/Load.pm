# SPDX-License-Identifier: BSD-2-Clause
package Cio::Load;

# Events with names the tests can follow: "prefix-N", one per call, each
# with its own messageId (so its own dedupe id).  What nginx answered 200
# for is what must reach the stand-in, by name, or the dead-letter file.

use strict;
use warnings;

use Exporter qw(import);
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);

our @EXPORT_OK = qw(post_events post_batch open_track open_tracks_until
    dead_letters missing journal_records full_disk_journal);

my $JSON = JSON::PP->new->canonical;

sub event {
    my ($name, $i) = @_;
    return { type => 'track', userId => "u$i", event => $name,
             messageId => "m-$name", properties => { n => $i } };
}

# one request per event; returns the names answered 200
sub post_events {
    my ($t, $path, $prefix, $n, %headers) = @_;
    my @ok;
    for my $i (1 .. $n) {
        my $name = "$prefix-$i";
        my ($st) = $t->post("$path/v1/track", event($name, $i), %headers);
        push @ok, $name if defined $st && $st == 200;
    }
    return @ok;
}

# a track call for $name with these properties, sent and left open: its
# answer is read later from the socket returned (a request that waits)
sub open_track {
    my ($t, $name, $props) = @_;
    my $body = encode_json({ type => 'track', userId => "u-$name",
        event => $name, messageId => "m-$name", properties => $props });
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $t->port) or die "connect: $!";
    print $s "POST /cio/v1/track HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Type: application/json\r\nConnection: close\r\n"
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
    return $s;
}

# track calls e1, e2, ... left open, one each 20 ms, until $file exists
# (400 calls or 60 s at most), so that deliveries settle what the journal
# leaves behind meanwhile: [name, socket] each
sub open_tracks_until {
    my ($t, $props, $file) = @_;
    my @open;
    my $deadline = time + 60;
    for my $i (1 .. 400) {
        last if -e $file || time > $deadline;
        push @open, [ "e$i", open_track($t, "e$i", $props) ];
        sleep 0.02;
    }
    return @open;
}

# one /v1/batch request with these names; returns them if answered 200
sub post_batch {
    my ($t, $path, $names, %headers) = @_;
    my $i = 0;
    my ($st, undef, $body) = $t->post("$path/v1/batch",
        { batch => [ map { event($_, ++$i) } @$names ] }, %headers);
    return () unless defined $st && $st == 200
        && $body eq '{"success":true}';
    return @$names;
}

# the dead-letter file, decoded: [{time, site_id, status, item, ...}]
sub dead_letters {
    my ($file) = @_;
    open my $fh, '<', $file or return [];
    my @r;
    while (my $line = <$fh>) {
        next unless $line =~ /\n\z/;
        push @r, $JSON->decode($line);
    }
    close $fh;
    return \@r;
}

# names of @$want found neither in $seen (name => ...) nor in @$also
sub missing {
    my ($want, $seen, @also) = @_;
    my %also = map { $_ => 1 } @also;
    return [ grep { !$seen->{$_} && !$also{$_} } @$want ];
}

# [offset, length] of each record of a cio_journal segment's bytes, up to
# the first that is not one (magic "CIOJ", the length of what follows the
# 16-byte header): its end mark, or damage
# A journal directory on a tmpfs of $size in $t's directory (mounting one
# needs root), with the alerts a full disk provokes allowed: its path;
# where it cannot be had, the enclosing SKIP block's $n tests are skipped.
# The caller unmounts it after done_part.
sub full_disk_journal {
    my ($t, $size, $n) = @_;
    Cio::Test::skip_unless_ci('mounting a tmpfs needs root', $n)
        unless $> == 0;
    my $dir = $t->dir . '/journal';
    mkdir $dir or die "$dir: $!";
    system('mount', '-t', 'tmpfs', '-o', "size=$size", 'tmpfs', $dir) == 0
        or Cio::Test::skip_unless_ci("cannot mount a tmpfs on $dir", $n);
    $t->allow_alert(qr/\[alert\].*cio: writing the journal ".*" failed, events refused with 503 \(28: No space left on device\)/);
    # the first deliveries settle while the disk is still full: their
    # offsets are not written, so a restart would send them again
    $t->allow_alert(qr/\[alert\].*cio: settling in the journal ".*" failed, settled events may be sent again after a restart \(28: No space left on device\)/);
    return $dir;
}

sub journal_records {
    my ($data) = @_;
    my @r;
    my $off = 0;
    while ($off + 16 <= length $data) {
        my ($magic, $len) = unpack 'a4 V', substr($data, $off, 8);
        last unless $magic eq 'CIOJ';
        push @r, [$off, 16 + $len];
        $off += 16 + $len;
    }
    return @r;
}

1;
