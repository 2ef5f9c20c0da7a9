#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# A batch is made a slice of 64 items at a time, one slice a turn of the
# worker's event loop (ngx_http_cio_queue_take), so that the requests the
# worker serves meanwhile do not wait for the whole half megabyte:
#  - one worker, 1,400 events of one person waiting while Customer.io is
#    down: once it is back, every batch but the last is as full as
#    cio_batch_size lets it be (the slices add up to one batch, not a
#    batch each), and the events arrive in their order;
#  - two workers making batches of some 350 items side by side from one
#    workspace, ten people, answers of 500 sending batches back to the
#    head of the queue while the other worker is between two slices:
#    each person's events arrive in order, every one of them;
#  - gdb holds the worker between two slices of a batch while a batch of
#    the same person's first event is answered 500: the next slice sees
#    that event back at the head of the queue and starts there, before
#    her later events (it went on from where it stopped before, and took
#    them first);
#  - two workers each held between two slices, the second having taken
#    the item where the first had stopped (once the first's claim on the
#    workspace ran out): the first starts again at the head of the queue,
#    not at that item, now on the list of items in flight; every event
#    is delivered once.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes ();
use Cio::Test qw(wait_until);
use Cio::Gdb qw($GDB attach_error proc_field stop_at stopped release);

# the recorded items in the order Customer.io applied them, per person
sub applied {
    my ($cio) = @_;
    my %seen;
    for my $item (@{ $cio->items }) {
        push @{ $seen{ $item->{identifiers}{id} // '?' } }, $item->{name};
    }
    return \%seen;
}

# --- one worker: the slices make one full batch ------------------------------

my $t = Cio::Test->new;
my $cio = $t->standin(workspaces => ['site1:key1'], rate => 0);
$t->config(workers => 1, http => Cio::Test::ingest_http(
    endpoint => $cio->url, http => <<'END'))->run;
cio_flush_interval 20ms;
cio_retry_backoff 50ms 100ms;
END

$cio->mode({ status => 503 });

my $pad = 'p' x 600;
my $n = 1400;
my $ok = 0;
for my $r (0 .. $n / 20 - 1) {
    my ($st) = $t->post('/cio/v1/batch', { batch => [ map {
        { type => 'track', userId => 'person-a',
          event => 'e-' . ($r * 20 + $_), properties => { pad => $pad } } }
        1 .. 20 ] });
    $ok++ if $st == 200;
}
is($ok, $n / 20, "$n events of one person in batches of 20: 200");

$cio->mode({ status => undef });

ok(wait_until(sub { @{ $cio->items } >= $n }, 30), 'all delivered');
my $seen = applied($cio);
is_deeply($seen->{'person-a'}, [ map { "e-$_" } 1 .. $n ],
    'in the order they were accepted, once each');

my @ok = grep { $_->{status} == 200 } @{ $cio->requests };
my ($item) = map { length JSON::PP->new->canonical->encode($_) }
    @{ $cio->items }[0];
my @short = grep { $_->{bytes} <= 500_000 - 2 * $item } @ok[0 .. $#ok - 1];
cmp_ok(scalar(@ok), '>=', 2, scalar(@ok) . ' batches, each of '
    . join(', ', map { $_->{items} } @ok) . ' items');
is(scalar(@short), 0, 'every batch but the last within an item of '
    . '500,000 bytes (' . join(', ', map { $_->{bytes} } @ok) . ')');

$t->done_part;

# --- two workers side by side, batches sent back meanwhile ------------------

$t = Cio::Test->new;
$cio = $t->standin(workspaces => ['site1:key1'], rate => 0);
$t->config(workers => 2, http => Cio::Test::ingest_http(
    endpoint => $cio->url, http => <<'END'))->run;
cio_flush_interval 20ms;
cio_max_inflight 4;
cio_batch_size 40000;
cio_retry_backoff 20ms 50ms;
cio_retry_max 100;
END

$cio->mode({ status => 503 });

my @people = map { "person-p$_" } 1 .. 10;
my $rounds = 100;
$ok = 0;
for my $r (1 .. $rounds) {
    my ($st) = $t->post('/cio/v1/batch', { batch => [
        map { { type => 'track', userId => $_, event => "s-$r" } }
            @people ] });
    $ok++ if $st == 200;
}
is($ok, $rounds, "$rounds requests of 10 people's events: 200");

# fast 500s and slow 200s, so that batches go back while others are made
$cio->mode({ status => undef, fail_rate => 0.3, fail_status => 500,
             slow_rate => 0.3, slow_ms => 30, seed => 11 });

ok(wait_until(sub { @{ $cio->items } >= $rounds * @people }, 60),
    'all delivered');
$cio->mode({ fail_rate => undef, slow_rate => undef });

$seen = applied($cio);
my @bad = grep { join(',', @{ $seen->{$_} || [] })
                 ne join(',', map { "s-$_" } 1 .. $rounds) } @people;
is("@bad", '', "each person's $rounds events in order, once each");

my @codes = map { $_->{status} } @{ $cio->requests };
cmp_ok(scalar(grep { $_ == 500 } @codes), '>', 0,
    scalar(grep { $_ == 500 } @codes) . ' answers of 500 among '
    . scalar(@codes) . ' requests');
my @big = grep { $_->{status} == 200 && $_->{items} > 64 }
    @{ $cio->requests };
cmp_ok(scalar(@big), '>', 0,
    scalar(@big) . ' delivered batches of more than one slice');

$t->done_part;

# --- a batch sent back while another is between two slices -----------------

SKIP: {
    skip 'gdb is needed to hold a worker between two slices '
        . '(scripts/deps.sh)', 11 unless $GDB;
    skip 'not under Valgrind', 11 if $ENV{CIO_VALGRIND};

    $t = Cio::Test->new;
    $cio = $t->standin(workspaces => ['site1:key1'], rate => 0);
    $t->config(workers => 1, http => Cio::Test::ingest_http(
        endpoint => $cio->url, http => <<'END'))->run;
cio_flush_interval 20ms;
cio_retry_backoff 50ms 100ms;
END

    my ($w) = $t->worker_pids;
    my $err = attach_error($w);
    skip "gdb cannot attach to a worker here: $err", 11 if $err;

    # P's first event on the wire, held there, then answered 500
    $cio->control({ match => '"name":"p-old"', status => 500, count => 1,
                    delay_ms => Cio::Test::scale(1) * 1000 });
    my ($st) = $t->post('/cio/v1/track',
        { userId => 'person-p', event => 'p-old' });
    is($st, 200, "P's first event accepted");
    ok(wait_until(sub { ($cio->stats // {})->{faults} == 0 }, 10),
        'and held by Customer.io');

    my $gdb = stop_at($t, $w, 'ngx_http_cio_deliver_fill');
    ok(wait_until(sub {
        (proc_field($w, 'TracerPid') // 0) == $gdb
    }, 20), 'gdb attached to the worker');

    # 200 of Q's, 5 of P's, 50 of Q's: four slices, P's after the first
    my @calls = ((map { { type => 'track', userId => 'person-q',
                          event => "q-$_" } } 1 .. 200),
                 (map { { type => 'track', userId => 'person-p',
                          event => "p-new-$_" } } 1 .. 5),
                 (map { { type => 'track', userId => 'person-q',
                          event => "q-$_" } } 201 .. 250));
    ($st) = $t->post('/cio/v1/batch', { batch => \@calls });
    is($st, 200, "Q's 250 events and P's 5 later ones accepted at once");
    ok(stopped($t, $gdb, 20), 'the worker stopped after the first slice')
        or diag($t->read_file('gdb.log'));

    ok(wait_until(sub { grep { $_->{status} == 500 } @{ $cio->requests } },
                  Cio::Test::scale(1) + 10),
        "meanwhile Customer.io answered 500 to P's first event");
    release($t, $gdb);

    my @names = ('p-old', (map { "p-new-$_" } 1 .. 5),
                 (map { "q-$_" } 1 .. 250));
    is_deeply($cio->wait_names(\@names, 20), [], 'all delivered');
    is_deeply(applied($cio)->{'person-p'},
        [ 'p-old', map { "p-new-$_" } 1 .. 5 ],
        "P's first event before her later ones");
    is_deeply(applied($cio)->{'person-q'}, [ map { "q-$_" } 1 .. 250 ],
        "Q's in their order");

    $t->done_part;
}

# --- the item a slice would start at, taken by another worker -------------

SKIP: {
    skip 'gdb is needed to hold the workers between two slices '
        . '(scripts/deps.sh)', 8 unless $GDB;
    skip 'not under Valgrind', 8 if $ENV{CIO_VALGRIND};

    $t = Cio::Test->new;
    $cio = $t->standin(workspaces => ['site1:key1'], rate => 0);
    $t->config(workers => 2, http => Cio::Test::ingest_http(
        endpoint => $cio->url, http => <<'END'))->run;
cio_flush_interval 20ms;
END

    my @w = $t->worker_pids;
    my $err = attach_error($w[0]);
    skip "gdb cannot attach to a worker here: $err", 8 if $err;

    # each worker stops after the first slice of a batch it makes
    my @gdb = map { stop_at($t, $_, 'ngx_http_cio_deliver_fill') } @w;
    ok(wait_until(sub {
        !grep { (proc_field($w[$_], 'TracerPid') // 0) != $gdb[$_] } 0, 1
    }, 20), 'gdb attached to both workers');

    # 300 people, none held by the other's batch: the worker that did not
    # take the request takes the items after the first slice, on its timer
    my @calls = map { { type => 'track', userId => "person-$_",
                        event => "e-$_" } } 1 .. 300;
    my ($st) = $t->post('/cio/v1/batch', { batch => \@calls });
    is($st, 200, "300 people's events accepted at once");
    # the first to stop took the first slice; the other, once the first's
    # claim on the workspace ran out (500 ms), the next one
    my $first;
    wait_until(sub {
        ($first) = grep { -e $t->dir . "/gdb.stopped.$w[$_]" } 0, 1;
        defined $first
    }, 20);
    ok(defined $first && stopped($t, $gdb[1 - $first], 20),
        'both workers stopped between two slices of a batch')
        or diag($t->read_file('gdb.log'));

    my @at = map { (Time::HiRes::stat($t->dir . "/gdb.stopped.$_"))[9] // 0 }
        @w[$first // 0, 1 - ($first // 0)];
    cmp_ok($at[1] - $at[0], '>', 0.2,
        'the other left the workspace alone while the first made its batch ('
        . sprintf('%.0f ms', ($at[1] - $at[0]) * 1000) . ')');

    # the first goes on: the item where it stopped is the other's now
    release($t, $gdb[$first // 0]);
    wait_until(sub { @{ $cio->items } >= 236 }, 10);
    release($t, $gdb[1 - ($first // 0)]);

    is_deeply($cio->wait_names([ map { "e-$_" } 1 .. 300 ], 20), [],
        'all delivered');
    my $names = $cio->names;
    my @twice = grep { @{ $names->{$_} } > 1 } sort keys %$names;
    is("@twice", '', 'once each');

    $t->done_part;
}

done_testing();
