#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Stop and start: "nginx -s quit" drains the queue for up to
# cio_drain_timeout, then the master writes what is left to cio_spool, and
# the next start loads it back, once.  A fast stop (TERM) spools without a
# drain.  "nginx -t" leaves the spool alone; lines for a workspace that is
# no longer configured, lines that do not fit and damaged lines stay in it.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time);
use JSON::PP;
use Cio::Test qw(wait_until);
use Cio::Load qw(post_events post_batch);

sub conf {
    my ($port, %o) = @_;
    my $drain = $o{drain} // '1s';
    return Cio::Test::ingest_http(endpoint => "http://127.0.0.1:$port",
        zone => $o{size}, http => <<"END");
cio_flush_interval 20ms;
cio_retry_backoff 300ms 300ms;
cio_connect_timeout 500ms;
cio_drain_timeout $drain;
cio_spool %%TESTDIR%%/spool.jsonl;
END
}

sub lines {
    my ($t, $name) = @_;
    return [ grep { length } split /\n/, $t->read_file($name) ];
}

# --- quit while Customer.io is down: drain, spool, load --------------------

{
    my $t = Cio::Test->new(workers => 2);
    my $port = Cio::Test::free_port();
    $t->config(http => conf($port))->run;

    my @names = post_events($t, '/cio', 'spooled', 30);
    is(scalar @names, 30, '30 events accepted while Customer.io is down');

    my $start = time;
    ok($t->stop('QUIT'), 'nginx -s quit');
    my $took = time - $start;
    ok($took >= 0.9 && $took < Cio::Test::scale(10), sprintf('the workers drained for about '
        . 'cio_drain_timeout first (%.1f s)', $took));
    ok($t->log_lines(qr/cio: stopping, delivering the \d+ queued events for up to 1000 ms/),
        'the drain is logged');

    my $spool = lines($t, 'spool.jsonl');
    is(scalar @$spool, 30, 'every event is in the spool, once, from 2 '
        . 'workers');
    ok($t->log_lines(qr/\[notice\].*cio: 30 undelivered events spooled to ".*spool\.jsonl"/),
        'the master says so');
    my $line = decode_json($spool->[0]);
    is($line->{site_id}, 'site1', 'a spool line has the site');
    is($line->{url}, "http://127.0.0.1:$port/api/v2/batch", 'the endpoint');
    # a refused connection says nothing about the items: not counted
    is_deeply([ grep { !defined $_->{attempts} || $_->{attempts} ne '0' }
                map { decode_json($_) } @$spool ], [],
        'the attempts: 0 on every line, Customer.io was never reached');
    is($line->{item}{type}, 'person', 'and the item');

    # nginx -t must not consume it
    my ($rc) = $t->check_config;
    is($rc, 0, 'nginx -t passes');
    is(scalar @{ lines($t, 'spool.jsonl') }, 30, 'and leaves the spool alone');

    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
    $t->run;

    ok($t->log_lines(qr/cio: loaded 30 events from the spool/),
        'the next start loads it');
    is_deeply($cio->wait_names(\@names, 10), [],
        'and every spooled event is delivered');
    ok(!-e $t->dir . '/spool.jsonl', 'the spool is gone');
    is(scalar @{ lines($t, 'spool.jsonl.loaded') }, 30,
        'kept as spool.jsonl.loaded until the next load');

    my %first = map { $_->{item}{name} => $_->{item} }
        map { decode_json($_) } @$spool;
    my %got = map { $_->{name} => $_ } @{ $cio->items };
    is_deeply(\%got, \%first, 'the items arrive exactly as they were spooled');

    ok($t->stop('QUIT'), 'stopped with an empty queue');
    ok(!-e $t->dir . '/spool.jsonl', 'which writes no spool');

    $t->run;
    is(scalar($t->log_lines(qr/cio: loaded \d+ events/)), 1,
        'the spool was loaded exactly once');

    $t->done_part;
}

# --- quit while Customer.io recovers: the drain delivers, no spool ---------

{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1']);
    my $drain = Cio::Test::scale(6);
    $t->config(http => conf($cio->port, drain => "${drain}s"))->run;

    # Retry-After: 2 s, time enough for the quit to land while they wait
    $cio->control({ status => 503, retry_after => 2, count => 1 });
    my @names = post_batch($t, '/cio', [ map { "drained-$_" } 1 .. 10 ]);
    ok(wait_until(sub { @{ $cio->requests } >= 1 }, 5),
        'the first try failed, the events wait 2 s (Retry-After)');

    ok($t->stop('QUIT'), 'nginx -s quit meanwhile');
    ok($t->log_lines(qr/cio: stopping, delivering the 10 queued events/),
        'the quit found them queued');
    is_deeply($cio->wait_names(\@names, 1), [],
        'the drain delivered them before the workers exited');
    ok($t->log_lines(qr/cio: stopping, the queue is delivered/),
        'and said so');
    ok(!-e $t->dir . '/spool.jsonl', 'nothing was left to spool');

    $t->done_part;
}

# --- the attempts survive a spool and a load --------------------------------

{
    my $t = Cio::Test->new(workers => 1);
    my $cio = $t->standin(workspaces => ['site1:key1']);
    $cio->mode({ status => 500 });
    $t->config(http => conf($cio->port))->run;

    # one request: its 5 items are queued at once, so every 500 is
    # an attempt of each of them (5 calls could make two batches)
    my @names = post_batch($t, '/cio', [ map { "worn-$_" } 1 .. 5 ]);
    # counted once nginx has taken the answer in, which it logs
    my $tries = sub { scalar $t->log_lines(qr/got 500.*retrying in/) };
    ok(wait_until(sub { $tries->() >= 2 }, 10), 'two 500s answered');
    ok($t->stop('TERM'), 'stopped');

    my %first = map { my $l = decode_json($_); ($l->{item}{name} =>
        $l->{attempts}) } @{ lines($t, 'spool.jsonl') };
    is_deeply([ sort keys %first ], [ sort @names ], 'all 5 spooled');
    is_deeply([ grep { ($first{$_} // 0) < 2 } sort keys %first ], [],
        'each with the 500s counted (at least 2 attempts)');

    my $before = $tries->();
    $t->run;
    ok(wait_until(sub { $tries->() > $before }, 10),
        'loaded and tried once more');
    ok($t->stop('TERM'), 'stopped again');
    my %again = map { my $l = decode_json($_); ($l->{item}{name} =>
        $l->{attempts}) } @{ lines($t, 'spool.jsonl') };
    is_deeply([ grep { ($again{$_} // 0) <= $first{$_} } sort keys %first ],
        [], 'the count went on from the spooled one, it did not start over');

    $t->done_part;
}

# --- fast stop (TERM): no drain, spooled all the same ----------------------

{
    my $t = Cio::Test->new;
    my $port = Cio::Test::free_port();
    $t->config(http => conf($port))->run;

    my @names = post_events($t, '/cio', 'term', 10);
    ok($t->stop('TERM'), 'nginx -s stop');
    is(scalar @{ lines($t, 'spool.jsonl') }, 10, 'all 10 events spooled');

    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
    $t->run;
    is_deeply($cio->wait_names(\@names, 10), [],
        'and delivered after the start');

    $t->done_part;
}

# --- a crash of the whole server: the policy says the queue is lost ---------
# (docs/delivery.md, "What can still be lost"): checked so that the
# documentation and the behaviour cannot drift apart

{
    my $t = Cio::Test->new;
    my $port = Cio::Test::free_port();
    $t->config(http => conf($port))->run;

    my @names = post_events($t, '/cio', 'crashed', 5);
    is(scalar @names, 5, '5 events queued while Customer.io is down');

    my @workers = $t->worker_pids;
    my $master = delete $t->{nginx_pid};
    kill 'KILL', $master, @workers;
    waitpid($master, 0);
    ok(wait_until(sub { !grep { kill 0, $_ } @workers }, 10),
        'master and workers SIGKILLed');
    ok(!-e $t->dir . '/spool.jsonl', 'nothing could write a spool');

    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
    $t->run;
    ok(!$t->log_lines(qr/cio: loaded/), 'the next start has nothing to load');
    my ($ok) = post_events($t, '/cio', 'after', 1);
    is_deeply($cio->wait_names([$ok // 'after-1'], 10), [],
        'a new event is delivered');
    is_deeply([ grep { /^crashed/ } keys %{ $cio->names } ], [],
        'the crashed queue is gone, as documented');

    $t->done_part;
}

# --- what cannot be loaded stays --------------------------------------------

{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1']);
    my $url = $cio->url . '/api/v2/batch';
    my $pad = 'x' x 900;

    my @spool = (
        # for a site no location feeds
        qq({"site_id":"gone","url":"$url","attempts":1,"item":{"type":"person","identifiers":{"id":"u"},"action":"event","name":"orphan-1"}}),
        # cut short by a crash
        qq({"site_id":"site1","url":"$url","attempts":0,"item":{"type":"pers),
        # 40 events of 1 KB: a 32k zone holds only some
        map { qq({"site_id":"site1","url":"$url","attempts":2,"item":{"type":"person","identifiers":{"id":"u"},"action":"event","name":"big-$_","attributes":{"pad":"$pad"}}}) } 1 .. 40,
    );
    $t->write_file('spool.jsonl', join '', map { "$_\n" } @spool);

    $t->config(http => conf($cio->port, size => '32k'))->run;

    my ($loaded) = map { /loaded (\d+) events/ } $t->log_lines(qr/cio: loaded \d+ events/);
    ok($loaded && $loaded < 40, "$loaded of the 40 big events fit the zone");
    my $rest = 40 - ($loaded // 0);
    ok($t->log_lines(qr/\[warn\].*cio: $rest spooled events did not fit in cio_zone, they stay in/),
        'the rest stay in the spool, and the log says so');
    my @expected = (
        qr/\[error\].*cio: 1 spooled events are for a site and endpoint no cio_ingest location uses/,
        qr/\[error\].*cio: 1 lines of the spool are damaged/);
    ok($t->log_lines($expected[0]), 'the orphaned line is reported');
    ok($t->log_lines($expected[1]), 'the damaged line is reported');
    $t->allow_log(@expected);

    my $left = lines($t, 'spool.jsonl');
    is(scalar @$left, 2 + 40 - $loaded, 'they all stay in the spool');
    is($left->[0], $spool[0], 'verbatim');

    is_deeply($cio->wait_names([ map { "big-$_" } 1 .. $loaded ], 10), [],
        'the loaded ones are delivered');

    $t->done_part;
}

done_testing();
