#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# cio_journal: a 200 outlives every nginx process.  Customer.io is away;
# under load, the master and every worker are SIGKILLed together (nothing
# runs at exit: no drain, no spool), nginx is started again, three times;
# then Customer.io comes back, and every event that was answered 200 must
# arrive (the second time after a reload under load).  Without the journal
# the same kill loses them; with it, an orderly stop needs no spool.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP;
use Cio::Test qw(wait_until);

my $JSON = JSON::PP->new->canonical;

sub conf {
    my ($url, $journal, $zone) = @_;
    return Cio::Test::ingest_http(endpoint => $url, zone => $zone,
        http => <<"END");
cio_flush_interval 20ms;
cio_retry_backoff 50ms 200ms;
cio_connect_timeout 1s;
$journal
END
}

sub event {
    my ($name) = @_;
    return { type => 'track', userId => "u-$name", event => $name,
             messageId => "m-$name", properties => { name => $name } };
}

# A child posts single events and batches of 3 until a request is not
# answered (nginx is gone), at most $max requests or 30 s; each name
# answered 200 goes to $file as soon as the answer is in.
sub load {
    my ($t, $prefix, $file, $max) = @_;

    my $pid = fork();
    die "fork: $!" unless defined $pid;
    return $pid if $pid;

    open my $out, '>>', $file or die "$file: $!";
    $out->autoflush(1);

    my $deadline = time + 30;
    my $i = 0;

    for my $req (1 .. $max) {
        last if time > $deadline;

        my @names = map { "$prefix-" . ++$i } 1 .. ($req % 2 ? 1 : 3);
        my ($st) = @names == 1
            ? $t->post('/cio/v1/track', event($names[0]))
            : $t->post('/cio/v1/batch', { batch => [ map { event($_) } @names ] });

        last unless defined $st && $st =~ /^\d+$/;
        print $out map { "$_\n" } @names if $st == 200;
    }

    exit 0;
}

sub lines {
    my ($file) = @_;
    open my $fh, '<', $file or return ();
    return map { chomp; $_ } grep { /\n\z/ } <$fh>;
}

sub crash_rounds {
    my ($t, $rounds, $accepted) = @_;

    for my $round (1 .. $rounds) {
        $t->run;

        my $file = $t->dir . "/accepted-$round";
        my $child = load($t, "r$round", $file, 3000);

        # the second time a reload first: old and new workers share it
        if ($round == 2) {
            ok(wait_until(sub { my @l = lines($file); @l >= 50 }, 20),
                "round $round: load running");
            ok($t->reload, "round $round: reloaded under load");
        }

        # killed in the middle of the load, with requests on the way
        ok(wait_until(sub { my @l = lines($file); @l >= 150 }, 20),
            "round $round: load running");
        ok($t->kill_all, "round $round: master and workers SIGKILLed");

        waitpid($child, 0);
        my @names = lines($file);
        push @$accepted, @names;
        note("round $round: " . scalar(@names) . ' events answered 200');
    }
}

# --- with the journal: nothing answered 200 is lost --------------------------

{
    my $t = Cio::Test->new(workers => 2);
    my $port = Cio::Test::free_port();
    my $url = "http://127.0.0.1:$port";

    $t->config(http => conf($url,
        'cio_journal %%TESTDIR%%/journal max_size=64m;'));

    my @accepted;
    crash_rounds($t, 3, \@accepted);

    # Customer.io comes back
    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
    $t->run;

    my @replays = $t->log_lines(qr/\[notice\].*cio: journal ".*journal": \d+ records in \d+ segments, \d+ settled, \d+ queued again/);
    is(scalar @replays, 4, 'each start replayed the journal');
    my ($queued) = ($replays[-1] // '') =~ /(\d+) queued again/;
    ok(($queued // 0) >= @accepted, 'the last start queued '
        . ($queued // 0) . ' events again, ' . scalar(@accepted)
        . ' of them answered 200');

    my $missing = $cio->wait_names(\@accepted, 60);
    my $delivered = @accepted - @$missing;
    diag(sprintf 'journal, Customer.io away, 3 SIGKILLs of master and '
        . 'workers: accepted %d, delivered %d, lost %d',
        scalar @accepted, $delivered, scalar @$missing);
    is_deeply($missing, [], 'every event answered 200 was delivered');

    my $items = $cio->items;
    my %seen;
    my @wrong = grep { !defined $_->{name} || $_->{name} !~ /^r[123]-\d+$/ }
        @$items;
    is_deeply(\@wrong, [], 'nothing else arrived');
    is_deeply([ grep { ($_->{attributes}{name} // '') ne $_->{name} }
        @$items ], [], 'each item whole');

    # settled, the journal gives its space back
    ok(wait_until(sub { !glob($t->dir . '/journal/*.seg')
            || (() = glob($t->dir . '/journal/*.seg')) <= 1 }, 10),
        'the settled segments are deleted');

    $t->done_part;
}

# --- without: the same kill loses what was queued ----------------------------

{
    my $t = Cio::Test->new(workers => 2);
    my $port = Cio::Test::free_port();
    my $url = "http://127.0.0.1:$port";

    $t->config(http => conf($url, ''));

    my @accepted;
    crash_rounds($t, 1, \@accepted);

    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
    $t->run;

    # the journal's run delivered within seconds: give this one as long
    my $missing = $cio->wait_names(\@accepted, 3);
    note(sprintf 'no journal, the same kill: accepted %d, lost %d',
        scalar @accepted, scalar @$missing);
    ok(@$missing == @accepted, 'without cio_journal every queued event is '
        . 'lost (what the journal is for)');

    $t->done_part;
}

# --- some delivered, the rest not, then the kill ------------------------------
# the settled records are counted and their segments deleted, the others
# stay: small segments (max_size=256k: 64 KB each) so that some roll over

{
    my $t = Cio::Test->new(workers => 2);
    my $port = Cio::Test::free_port();
    my $url = "http://127.0.0.1:$port";
    my $pad = { type => 'track', userId => 'u', properties => { pad => 'x' x 300 } };
    my $post = sub {
        my @ok;
        for my $name (@_) {
            my ($st) = $t->post('/cio/v1/track',
                { %$pad, event => $name, messageId => "m-$name" });
            push @ok, $name if ($st // 0) == 200;
        }
        return @ok;
    };

    $t->config(http => conf($url,
        'cio_journal %%TESTDIR%%/journal max_size=256k;'))->run;
    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);

    my @first = $post->(map { "early-$_" } 1 .. 120);
    is_deeply($cio->wait_names(\@first, 10), [],
        '120 events delivered while Customer.io answers');
    $cio->stop;
    my @later = $post->(map { "late-$_" } 1 .. 200);
    is(scalar(@first) + scalar(@later), 320,
        '200 more answered 200 with Customer.io away');
    ok((() = glob($t->dir . '/journal/*.seg')) >= 2,
        'the journal rolled over to a new segment');

    ok($t->kill_all, 'master and workers SIGKILLed');
    $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
    $t->run;
    ok($t->log_lines(qr/cio: journal ".*": \d+ records in \d+ segments, \d+ settled, 200 queued again/),
        'the start queued the 200 undelivered again, none of the others');
    is_deeply($cio->wait_names(\@later, 15), [], 'and delivered them');

    $t->done_part;
}

# --- a reload that resizes the zone, then the kill -----------------------------
# the items move to the new zone with their records.  After their first
# failure the events wait (3 s, 10 s under Valgrind), so that none is on
# the wire when the zone is replaced (the next part puts one there)

{
    my $t = Cio::Test->new(workers => 2);
    my $port = Cio::Test::free_port();
    my $url = "http://127.0.0.1:$port";
    my $journal = 'cio_journal %%TESTDIR%%/journal;';
    my $wait = $ENV{CIO_VALGRIND} ? '10s' : '3s';
    my $slow = sub {
        conf($url, $journal, $_[0])
            =~ s/cio_retry_backoff \S+ \S+;/cio_retry_backoff $wait;/r;
    };

    $t->config(http => $slow->('4m'))->run;
    my @ok = grep { ($t->post('/cio/v1/track', event($_)))[0] == 200 }
        map { "resize-$_" } 1 .. 20;
    ok($t->failed_once(20, 10), 'each failed once and waits');

    $t->config(http => $slow->('8m'));
    ok($t->reload, 'reloaded with a larger zone');
    push @ok, grep { ($t->post('/cio/v1/track', event($_)))[0] == 200 }
        map { "resized-$_" } 1 .. 20;
    is(scalar @ok, 40, '40 events answered 200, Customer.io away');
    ok($t->log_lines(qr/cio: the zone was resized, 20 queued events moved to the new one, 0 left/),
        'the queue moved to the new zone');

    ok($t->kill_all, 'master and workers SIGKILLed');
    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
    $t->run;
    is_deeply($cio->wait_names(\@ok, 15), [], 'every one delivered');

    $t->done_part;
}

# --- a batch on the wire when a reload resizes the zone ----------------------
# it stays with the old workers (the master cannot take it from their
# sender), and fails; Customer.io stays down longer than their
# cio_drain_timeout.  With the journal it waits there for the next start;
# without, it is lost, and both say so

for my $journal (1, 0) {
    my $t = Cio::Test->new;
    my $port = Cio::Test::free_port();
    my $url = "http://127.0.0.1:$port";
    my $with = $journal ? 'with the journal' : 'without';
    my $c = sub {
        conf($url, ($journal ? 'cio_journal %%TESTDIR%%/journal;' : '')
            . "\ncio_drain_timeout 1s;", $_[0]);
    };

    $t->config(http => $c->('4m'))->run;
    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);

    my $before = $cio->stats->{requests};
    $cio->control({ delay_ms => 2000, close => 1, count => 1 });
    my ($st) = $t->post('/cio/v1/batch',
        { batch => [ map { event("wire-$_") } 1 .. 5 ] });
    is($st, 200, "$with: 5 events answered 200");
    ok(wait_until(sub { ($cio->stats // {})->{requests} > $before }, 5),
        "$with: their batch is on the wire");
    $cio->mode({ status => 503 });

    $t->config(http => $c->('8m'));
    ok($t->reload, "$with: reloaded with a larger zone");
    ok($t->log_lines(qr/\[warn\].*cio: the zone was resized, 0 queued events moved to the new one, 5 left to the old workers/),
        "$with: the batch is left to the old worker");

    if (!$journal) {
        $t->allow_alert(qr/reload replaced were not delivered/);
        ok(wait_until(sub { $t->log_lines(qr/\[alert\].*cio: 5 events of a zone a reload replaced were not delivered in cio_drain_timeout and 5 of them are lost/) }, 15),
            "$with: the old worker says they are lost");
        $t->done_part;
        next;
    }

    ok(wait_until(sub { $t->log_lines(qr/\[warn\].*cio: 5 events of a zone a reload replaced were not delivered in cio_drain_timeout; cio_journal holds them, a start with the same cio_journal queues them again/) }, 15),
        "$with: the old worker says the journal holds them");

    $cio->mode({ status => undef });
    ok($t->stop, "$with: nginx -s quit");
    $t->run;
    is_deeply($cio->wait_names([ map { "wire-$_" } 1 .. 5 ], 10), [],
        "$with: the start queued them again and they were delivered");

    $t->done_part;
}

# --- an orderly stop: the journal keeps the queue, no spool needed -----------

{
    my $t = Cio::Test->new(workers => 2);
    my $port = Cio::Test::free_port();
    my $url = "http://127.0.0.1:$port";

    $t->config(http => conf($url, "cio_journal %%TESTDIR%%/journal;\n"
        . "cio_drain_timeout 0;"))->run;

    my @names = map { "stop-$_" } 1 .. 20;
    my @ok = grep { ($t->post('/cio/v1/track', event($_)))[0] == 200 } @names;
    is(scalar @ok, 20, '20 events answered 200, Customer.io away');

    ok($t->stop, 'nginx -s quit');
    ok(!$t->log_lines(qr/lost with the zone/),
        'no alert that the queue is lost: the journal holds it');

    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
    $t->run;
    ok($t->log_lines(qr/cio: journal ".*": 20 records in 1 segments, 0 settled, 20 queued again/),
        'the start queued them again from the journal');
    is_deeply($cio->wait_names(\@ok, 10), [], 'and they were delivered');

    $t->done_part;
}

done_testing();
