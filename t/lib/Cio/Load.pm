# SPDX-License-Identifier: BSD-2-Clause
package Cio::Load;

# Events with names the tests can follow: "prefix-N", one per call, each
# with its own messageId (so its own dedupe id).  What nginx answered 200
# for is what must reach the stand-in, by name, or the dead-letter file.

use strict;
use warnings;

use Exporter qw(import);
use JSON::PP;

our @EXPORT_OK = qw(post_events post_batch dead_letters missing batches
    journal_spare batches_over_spare);

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

# $n batches of 20 events, "prefix-B-I"; returns the names answered 200
sub batches {
    my ($t, $prefix, $n) = @_;
    my @ok;
    for my $b (1 .. $n) {
        push @ok, post_batch($t, '/cio',
            [ map { "$prefix-$b-$_" } 1 .. 20 ]);
    }
    return @ok;
}

# t/76, t/77: an nginx whose journal has segments of 128 KB (max_size=1m,
# an eighth), fed 1,200 events that the stand-in on $port took, until a
# settled segment is kept as PATH/spare; returns the stand-in
sub journal_spare {
    my ($t, $port) = @_;
    $t->config(http => Cio::Test::ingest_http(
        endpoint => "http://127.0.0.1:$port", http => <<'END'))->run;
cio_flush_interval 20ms;
cio_retry_backoff 50ms 200ms;
cio_connect_timeout 1s;
cio_journal %%TESTDIR%%/journal max_size=1m sync=off;
END
    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
    my @old = batches($t, 'old', 60);
    Test::More::is(scalar @old, 1200, '1,200 events answered 200');
    Test::More::is_deeply($cio->wait_names(\@old, 30), [], 'and delivered');
    Test::More::ok(Cio::Test::wait_until(
        sub { -e $t->dir . '/journal/spare' }, 10),
        'a settled segment was kept as the spare');
    return $cio;
}

# batches of "new-B-I" until PATH/spare is gone (60 at most): the names
# answered 200
sub batches_over_spare {
    my ($t) = @_;
    my @new;
    for my $b (1 .. 60) {
        push @new, post_batch($t, '/cio', [ map { "new-$b-$_" } 1 .. 20 ]);
        last unless -e $t->dir . '/journal/spare';
    }
    return @new;
}

1;
