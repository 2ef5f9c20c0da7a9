#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The items of one person never overtake each other, and the others keep
# flowing meanwhile (two workers, four batches in flight each):
#  - identify v1 of person A is held by Customer.io and answered 500;
#    identify v2 of A, sent while v1 is on the wire, arrives after the
#    retried v1, and person B's events are delivered in other batches
#    while A waits;
#  - a batch Customer.io rejects whole is sent again in pieces, one at a
#    time: A's first event, in a piece Customer.io holds, still arrives
#    before A's second, in a later piece;
#  - 8 people's events, a 500 for 3 requests in 10 and a slow answer for
#    some others: each person's arrive in the order they were accepted.
# All three parts failed before the person key (v2, the second event, a
# later event came first).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep);
use Cio::Test qw(wait_until);

sub conf {
    my ($url) = @_;
    return Cio::Test::ingest_http(endpoint => $url, http => <<'END');
cio_flush_interval 20ms;
cio_max_inflight 4;
cio_retry_backoff 50ms 200ms;
cio_retry_max 10;
END
}

# the recorded items in the order Customer.io applied them, as
# "who:what" (A:v1, B:b-3, A:a-1)
sub applied {
    my ($cio) = @_;
    my @seen;
    for my $item (@{ $cio->items }) {
        my $who = $item->{identifiers}{id} // '?';
        $who =~ s/^person-//;
        my $what = $item->{action} eq 'identify'
            ? 'v' . $item->{attributes}{version} : $item->{name};
        push @seen, "$who:$what";
    }
    return \@seen;
}

my $t = Cio::Test->new;
my $cio = $t->standin(workspaces => ['site1:key1'], rate => 0);
$t->config(http => conf($cio->url), workers => 2)->run;

# --- a retried identify is not overtaken by a newer one ---------------------

# held while B's five are posted and delivered, longer under a tool
$cio->control({ match => '"id":"person-a"',
                delay_ms => Cio::Test::scale(1.5) * 1000,
                status => 500, count => 1 });

my ($st) = $t->post('/cio/v1/identify',
    { userId => 'person-a', traits => { version => 1 } });
is($st, 200, 'identify v1 of A accepted');

# v1 is on the wire, parked by the stand-in
ok(wait_until(sub { ($cio->stats // {})->{faults} == 0 }, 10),
    'the batch with v1 reached Customer.io');

($st) = $t->post('/cio/v1/identify',
    { userId => 'person-a', traits => { version => 2 } });
is($st, 200, 'identify v2 of A accepted while v1 is on the wire');

my @b = map { "b-$_" } 1 .. 5;
for my $name (@b) {
    ($st) = $t->post('/cio/v1/track',
        { userId => 'person-b', event => $name });
    is($st, 200, "B's $name accepted");
}

# B flows while A's v1 is held
ok(wait_until(sub { grep({ /^b:b-5$/ } @{ applied($cio) }) }, 10),
    "B's events delivered while A's v1 is held");
ok(!grep({ /^a:/ } @{ applied($cio) }),
    "nothing of A delivered while its v1 is on the wire");

ok(wait_until(sub { @{ applied($cio) } >= 7 }, 15),
    'every item delivered');
is_deeply(applied($cio), [ (map { "b:$_" } @b), 'a:v1', 'a:v2' ],
    'Customer.io applied B\'s events, then A\'s v1, then A\'s v2');

my @codes = map { $_->{status} } @{ $cio->requests };
is(scalar(grep { $_ == 500 } @codes), 1, 'one 500, for the batch of v1');
my ($last500) = grep { $codes[$_] == 500 } 0 .. $#codes;
ok((grep { $codes[$_] == 200 } 0 .. $last500 - 1) >= 1,
    'batches of B answered 200 before the batch of v1 was answered 500');

# --- the pieces of a split batch keep the order ---------------------------

$cio->mode({ poison_match => '^poison' });

# a piece with a-1 and without the poison is held a while
$cio->control({ match => '^(?!.*poison).*"name":"a-1"', delay_ms => 800,
                count => 1 });

($st) = $t->post('/cio/v1/batch', { batch => [
    { type => 'track', userId => 'person-a', event => 'a-1' },
    { type => 'track', userId => 'person-c', event => 'poison-c' },
    { type => 'track', userId => 'person-a', event => 'a-2' },
] });
is($st, 200, 'a batch of a-1, poison-c, a-2 accepted');

ok(wait_until(sub { grep({ /^a:a-2$/ } @{ applied($cio) }) }, 15),
    'a-2 delivered');
my @split = grep { /^a:a-/ } @{ applied($cio) };
is_deeply(\@split, [ 'a:a-1', 'a:a-2' ],
    'a-1, held in its piece, arrived before a-2, in a later piece');
ok(wait_until(sub {
        $t->log_lines(qr/sent again in \d+ pieces: 2 delivered, 1 dead/) },
        10),
    'the split delivered two events and dead-lettered the poisoned one');

$cio->mode({ poison_match => undef });

# --- under random 500s, every person's events arrive in order -------------

# some answers fast 500s, some slow 200s, so that batches overtake
my $before = @{ $cio->requests };
$cio->mode({ fail_rate => 0.3, fail_status => 500, slow_rate => 0.4,
             slow_ms => 100, seed => 7 });

my @people = map { "person-p$_" } 1 .. 8;
my $rounds = 40;
for my $round (1 .. $rounds) {
    ($st) = $t->post('/cio/v1/batch', { batch => [
        map { { type => 'track', userId => $_, event => "s-$round" } }
            @people ] });
    is($st, 200, "round $round of 8 events accepted") if $st != 200;
    sleep 0.02;    # paced over some round trips
}

ok(wait_until(sub {
        (grep { /^p\d+:s-/ } @{ applied($cio) }) >= 8 * $rounds }, 30),
    'every one of ' . 8 * $rounds . ' events delivered through the 500s');
$cio->mode({ fail_rate => undef, slow_rate => undef });

my %seq;
for (@{ applied($cio) }) {
    push @{ $seq{$1} }, $2 if /^(p\d+):s-(\d+)$/;
}
my @disorder = grep { join(',', @{ $seq{$_} }) ne join(',', 1 .. $rounds) }
    sort keys %seq;
is_deeply(\@disorder, [], 'each person\'s events arrived once, in order')
    or diag(join "\n", map { "$_: @{ $seq{$_} }" } @disorder);
my @sent = @{ $cio->requests }[$before .. $#{ $cio->requests }];
ok(scalar(grep { $_->{status} == 500 } @sent) >= 2,
    'Customer.io did answer 500 a few times')
    or diag(scalar(@sent) . ' requests');

$t->allow_log(qr/\[error\].*sent again in \d+ pieces/);
$t->allow_log(qr/\[error\].*gave up on an event/);

$t->done;
