#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Retries: 500s at a given rate, a connection closed without an answer, a
# Customer.io that hangs past cio_timeout, one that is down, 429 with
# Retry-After, 401 (a wrong key, then a corrected one) and the backoff
# between attempts.  Every case asserts that each event nginx answered 200
# for is recorded by the stand-in, by name, with one dedupe id, and that
# nothing went to the dead-letter file.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(wait_until);
use Cio::Load qw(post_events dead_letters missing);

my $HOLD = qr/\[alert\].*cio: Customer\.io answered 401 for site "site1"/;

sub conf {
    my ($url, %o) = @_;
    return Cio::Test::ingest_http(endpoint => $url, key => $o{key},
        http => <<"END");
cio_flush_interval 20ms;
cio_retry_backoff $o{backoff};
cio_retry_max $o{retry_max};
cio_timeout $o{timeout};
cio_connect_timeout 500ms;
cio_dead_letter %%TESTDIR%%/dead.jsonl;
END
}

# every name recorded, each with a single id however often it came
sub all_delivered {
    my ($cio, $names, $what, $timeout) = @_;
    my $missing = $cio->wait_names($names, $timeout // 15);
    is_deeply($missing, [], "$what: all " . @$names . ' accepted events '
        . 'recorded by the stand-in');
    my $seen = $cio->names;
    my @split = grep { my %u = map { $_ => 1 } @{ $seen->{$_} || [] };
                       keys %u > 1 } @$names;
    is_deeply(\@split, [], "$what: a repeated event kept its dedupe id");
}

sub requests_with {
    my ($cio, $status) = @_;
    return [ grep { $_->{status} == $status } @{ $cio->requests } ];
}

# --- answered failures count against cio_retry_max ------------------------

{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1']);

    $t->config(http => conf($cio->url, backoff => '50ms 400ms',
        retry_max => 30, timeout => '500ms'))->run;

    # 500 for half the requests, and surely for the first
    $cio->mode({ fail_rate => 0.5, fail_status => 500, seed => 4 });
    $cio->control({ status => 500, count => 1 });
    my @names = post_events($t, '/cio', 'r500', 40);
    is(scalar @names, 40, 'all 40 events accepted');
    all_delivered($cio, \@names, '500s at a rate of 1/2');
    ok(@{ requests_with($cio, 500) } >= 1, 'Customer.io did answer 500');
    ok($t->log_lines(qr/\[warn\].*got 500.*retrying in \d+ ms/),
        'the 500 is logged with its retry');
    $cio->mode({ fail_rate => undef });

    # a connection closed without an answer, twice
    $cio->control({ close => 1, count => 2 });
    @names = post_events($t, '/cio', 'closed', 3);
    all_delivered($cio, \@names, 'connection closed without an answer');

    # hangs past cio_timeout and drops the batch unrecorded, twice: only a
    # retry can bring the events in
    $cio->control({ delay_ms => 1500, close => 1, count => 2 });
    @names = post_events($t, '/cio', 'slow', 3);
    all_delivered($cio, \@names, 'Customer.io slower than cio_timeout', 20);
    ok($t->log_lines(qr/cio: sending \d+ events .* failed: .*timed out/),
        'the timeout is logged');

    # the backoff doubles per failure in a row, with jitter in its upper
    # half: 50, 100, 200, 400 ms become at least 25, 50, 100, 200 ms
    # (requests are logged when answered: order them by arrival)
    my ($before) = sort { $b <=> $a } map { $_->{seq} } @{ $cio->requests };
    $cio->control({ status => 500, count => 4 });
    @names = post_events($t, '/cio', 'backoff', 1);
    all_delivered($cio, \@names, 'four 500s in a row');
    my @r = sort { $a->{seq} <=> $b->{seq} }
        grep { $_->{seq} > $before } @{ $cio->requests };
    @r = grep { $_->{status} == 500 || $_->{accepted} } @r;
    my @gaps = map { $r[$_]{received_ms} - $r[$_ - 1]{received_ms} } 1 .. 4;
    my @low = (25, 50, 100, 200);
    ok(!grep({ $gaps[$_] < $low[$_] - 5 } 0 .. 3),
        "backoff grows: gaps @gaps ms, at least @low");
    # (plus the timer, the handoff and the stand-in, slower under a tool)
    ok($gaps[3] <= 400 + Cio::Test::scale(300),
        'and stays within cio_retry_backoff\'s max');

    is_deeply(dead_letters($t->dir . '/dead.jsonl'), [],
        'nothing was dead-lettered');

    $t->done_part;
}

# --- failures that say nothing about the items do not count -------------
# cio_retry_max 0 would dead-letter an item at its first counted failure

{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1']);

    $t->config(http => conf($cio->url, backoff => '50ms 300ms',
        retry_max => 0, timeout => '1s'))->run;
    $t->allow_alert($HOLD);

    # 429 with Retry-After: 1, then fine
    $cio->control({ status => 429, retry_after => 1, count => 1 });
    my @names = post_events($t, '/cio', 'ra', 1);
    all_delivered($cio, \@names, '429 with Retry-After');
    my $r = $cio->requests;
    my ($i) = grep { $r->[$_]{status} == 429 } 0 .. $#$r;
    my $gap = $r->[$i + 1]{received_ms} - $r->[$i]{received_ms};
    ok($gap >= 950, "the next request waited for Retry-After ($gap ms)");

    # 503 without Retry-After, three times
    $cio->control({ status => 503, count => 3 });
    @names = post_events($t, '/cio', 'busy', 2);
    all_delivered($cio, \@names, '503 three times');

    # down: nothing listens
    $cio->stop;
    @names = post_events($t, '/cio', 'down', 5);
    is(scalar @names, 5, 'events accepted while Customer.io is down');
    ok(wait_until(sub { $t->log_lines(qr/failed: .*retrying/) >= 3 },
        10), 'several attempts failed');
    $cio->start;
    all_delivered($cio, \@names, 'Customer.io down, then back');

    # 401: the workspace holds, an alert once, then it is fixed
    $cio->mode({ status => 401 });
    @names = post_events($t, '/cio', 'auth', 5);
    ok(wait_until(sub { @{ requests_with($cio, 401) } >= 4 }, 10),
        'Customer.io answered 401 several times');
    my @alerts = $t->log_lines($HOLD);
    is(scalar @alerts, 1, 'one alert for the wrong key, not one per try');
    like($alerts[0] // '', qr/check cio_site_id, cio_api_key.*events wait/,
        'the alert says what to check and that the events wait');
    $cio->mode({ status => undef });
    all_delivered($cio, \@names, '401 for a while');

    is_deeply(dead_letters($t->dir . '/dead.jsonl'), [],
        'nothing was dead-lettered with cio_retry_max 0');

    $t->done_part;
}

# --- a wrong API key, corrected by a reload --------------------------------

{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1']);

    # a long pause: the corrected key must not wait for it
    $t->config(http => conf($cio->url, backoff => '30s', retry_max => 0,
        timeout => '1s', key => 'wrong'))->run;
    $t->allow_alert($HOLD);

    my @names = post_events($t, '/cio', 'key', 5);
    is(scalar @names, 5, 'events accepted with a wrong API key');
    ok(wait_until(sub { $t->log_lines($HOLD) }, 10),
        'the wrong key raised an alert');

    $t->config(http => conf($cio->url, backoff => '30s', retry_max => 0,
        timeout => '1s'));
    ok($t->reload, 'reloaded with the right key');
    all_delivered($cio, \@names, 'queued under a wrong key, sent with the '
        . 'corrected one', 10);
    ok($t->log_lines(qr/the API key of site "site1" changed, its 5 queued/),
        'the key change is logged');

    $t->done_part;
}

# --- one site, two keys in two locations: one queue, the first key ----------

{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1']);
    my $url = $cio->url;

    # /other/ comes first in the file: its key is the one
    $t->config(http => Cio::Test::ingest_http(endpoint => $url,
        key => 'another', http => 'cio_flush_interval 20ms;',
        server => <<"END"))->run;
location /other/ {
    cio_ingest segment; cio_site_id site1; cio_api_key key1;
    cio_endpoint $url;
}
END
    ok($t->log_lines(qr/\[warn\].*site "site1" has another "cio_api_key" /),
        'a second key for the site is a warning');

    my @names = (post_events($t, '/other', 'first', 3),
                 post_events($t, '/cio', 'second', 3));
    is(scalar @names, 6, 'events accepted at both locations');
    all_delivered($cio, \@names, 'both locations, sent with the first key');
    is_deeply(requests_with($cio, 401), [], 'no request with the other key');

    $t->done_part;
}

done_testing();
