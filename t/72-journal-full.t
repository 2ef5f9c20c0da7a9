#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# cio_journal when there is no room: a disk that fills up (a small tmpfs)
# and a journal at its max_size.  Requests are answered 503 with
# Retry-After, no record is left cut short, an [alert] says so once, what
# was answered 200 is delivered once Customer.io is back, and events flow
# again when the settled segments give their space back.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Compress::Zlib qw(crc32);
use Cio::Test qw(wait_until);
use Cio::Load qw(post_events full_disk_journal);

sub conf {
    my ($url, $journal) = @_;
    return Cio::Test::ingest_http(endpoint => $url,
        server => 'location = /status { cio_status; }', http => <<"END");
cio_flush_interval 20ms;
cio_retry_backoff 50ms 200ms;
cio_connect_timeout 1s;
cio_journal $journal;
END
}

# every record of every segment whole, none cut, up to its end mark: the
# number of them
sub whole_records {
    my ($dir) = @_;
    my ($n, @bad) = (0);
    for my $seg (glob "$dir/*.seg") {
        open my $fh, '<:raw', $seg or die "$seg: $!";
        my $data = do { local $/; <$fh> };
        my $off = 0;
        while ($off < length $data) {
            my ($magic, $len, $crc) = unpack 'a4 V V', substr($data, $off, 12);
            # the end mark: what follows is a reused file's past
            last if ($magic // '') eq 'CIOE'
                && crc32(substr($data, $off + 12, 4)) == $crc;
            if (($magic // '') ne 'CIOJ' || $off + 16 + $len > length $data
                || crc32(substr($data, $off + 12, $len + 4)) != $crc)
            {
                push @bad, "$seg at $off";
                last;
            }
            $n++;
            $off += 16 + $len;
        }
    }
    return ($n, \@bad);
}

# single events until the first 503, at most $max; returns the names
# answered 200 and the first refusal
sub fill {
    my ($t, $prefix, $max) = @_;
    my @ok;
    for my $i (1 .. $max) {
        my @r = $t->post('/cio/v1/track', { type => 'track',
            userId => "u$i", event => "$prefix-$i",
            messageId => "m-$prefix-$i",
            properties => { pad => 'x' x 300 } });
        return (\@ok, \@r) if ($r[0] // 0) == 503;
        push @ok, "$prefix-$i" if ($r[0] // 0) == 200;
    }
    return (\@ok, []);
}

# --- the disk fills up ---------------------------------------------------------

SKIP: {
    my $t = Cio::Test->new(workers => 2);
    my $dir = full_disk_journal($t, '192k', 13);

    my $port = Cio::Test::free_port();
    $t->config(http => conf("http://127.0.0.1:$port",
        "$dir max_size=512k"))->run;

    my ($ok, $refusal) = fill($t, 'full', 2000);
    ok(@$ok > 100, scalar(@$ok) . ' events answered 200 until the disk '
        . 'was full');
    my ($st, $h, $body) = @$refusal;
    is($st, 503, 'then 503');
    ok(($h // {})->{'retry-after'}, 'with Retry-After');
    like($body // '', qr/journal cannot take it, retry later/,
        'and why');

    my @more = post_events($t, '/cio', 'still', 10);
    is(scalar @more, 0, 'while the disk is full every event gets 503');

    my ($n, $bad) = whole_records($dir);
    is_deeply($bad, [], 'no record cut short');
    is($n, scalar @$ok, 'one record for each event answered 200, no more');

    my @alerts = $t->log_lines(qr/\[alert\].*writing the journal/);
    is(scalar @alerts, 1, 'one [alert] for a minute of them');

    # Customer.io back: delivered, settled, the space comes back
    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
    is_deeply($cio->wait_names($ok, 30), [],
        'every event answered 200 delivered');

    my @after;
    ok(wait_until(sub {
        push @after, post_events($t, '/cio', 'after' . @after, 1);
        return @after >= 5;
    }, 15), 'events answered 200 again once the space is back');
    is_deeply($cio->wait_names(\@after, 10), [], 'and delivered');

    ($n, $bad) = whole_records($dir);
    is_deeply($bad, [], 'still no record cut short');

    $t->done_part;
    system('umount', $dir);
    ok(!system('mountpoint', '-q', $dir) == 0, 'tmpfs unmounted');
}

# --- max_size --------------------------------------------------------------------

{
    my $t = Cio::Test->new(workers => 1);
    my $port = Cio::Test::free_port();
    $t->config(http => conf("http://127.0.0.1:$port",
        '%%TESTDIR%%/journal max_size=128k'))->run;

    my ($ok, $refusal) = fill($t, 'max', 2000);
    ok(@$ok > 100 && @$ok < 400, scalar(@$ok) . ' events answered 200 '
        . 'until max_size');
    is($refusal->[0], 503, 'then 503');
    ok($t->log_lines(qr/\[warn\].*cio: journal ".*" is full \(max_size\), 1 events refused with 503/),
        'a full journal is logged');

    my (undef, undef, $body) = $t->http('GET', '/status');
    my $st = eval { $t->json->decode($body) } // {};
    my ($ws) = map { $_->{stats} } @{ $st->{workspaces} || [] };
    is($ws && $ws->{rejected}{full}, 1,
        'the status page counts the 503 as a full journal\'s')
        or diag($body);
    is($ws && $ws->{invalid}, 0, 'and no call as invalid');

    my ($n, $bad) = whole_records($t->dir . '/journal');
    is($n, scalar @$ok, 'one record for each event answered 200');

    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
    is_deeply($cio->wait_names($ok, 30), [],
        'every event answered 200 delivered');

    my @after;
    ok(wait_until(sub {
        push @after, post_events($t, '/cio', 'after' . @after, 1);
        return @after >= 5;
    }, 15), 'events answered 200 again once settled');

    $t->done_part;
}

done_testing();
