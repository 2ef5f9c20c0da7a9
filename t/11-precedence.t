#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Every fallback chain of the mapping with all of its sources present and
# different, so that a source preferred in the wrong order shows; the
# client's clock skew taken out through sentAt; and values over every
# Customer.io limit, end to end: what arrives at the (strict) stand-in.
# Every case twice: as written and with messageIds, so through both of
# the mapper's paths (the one-pass mapper declines calls without one).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP;
use Time::HiRes qw(time);
use Time::Local qw(timegm);
use POSIX qw(strftime);
use Cio::Test qw(basic ulid_ok with_message_id);

my $t = Cio::Test->new;
# every case goes twice: as written, to site1, and with a messageId in each
# call, as SDKs send them, to site2 (/cio-m/, /native-m/): the one-pass
# mapper maps the calls that carry one, the tree mapper the others
my $cio = $t->standin(workspaces => ['site1:key1', 'site2:key2']);
my $json = $t->json;

$t->config(http => Cio::Test::ingest_http(endpoint => $cio->url,
    http => 'cio_flush_interval 20ms;', write_key => 'wk',
    server => <<"END"))->run;
location /native/ {
    cio_ingest segment;
    cio_site_id site1;
    cio_api_key key1;
    cio_endpoint ${\ $cio->url };
    cio_screen_views native;
}
location /cio-m/ {
    cio_ingest segment;
    cio_site_id site2;
    cio_api_key key2;
    cio_endpoint ${\ $cio->url };
    cio_write_key wk;
}
location /native-m/ {
    cio_ingest segment;
    cio_site_id site2;
    cio_api_key key2;
    cio_endpoint ${\ $cio->url };
    cio_screen_views native;
}
END

my %auth = (Authorization => basic('wk'));

sub iso {
    my ($s) = @_;
    my $ms = int(($s - int $s) * 1000 + 0.5);
    return strftime('%Y-%m-%dT%H:%M:%S', gmtime int $s)
        . sprintf('.%03dZ', $ms);
}

my $T1 = timegm(0, 0, 10, 1, 5, 2026);       # timestamp
my $T2 = timegm(0, 0, 11, 1, 5, 2026);       # originalTimestamp

# [label, path, body (a hash or raw JSON), the item without its id; its
# timestamp: a number, [from, to] relative to the receive time, or undef
# when the item has none]
my @cases;

# --- names ---------------------------------------------------------------

push @cases,
    [ 'screen: the call\'s name before properties.name and event',
      '/cio/v1/screen',
      { userId => 'scr-1', name => 'CallName', event => 'EventName',
        properties => { name => 'PropName' }, timestamp => iso($T1) },
      { type => 'person', identifiers => { id => 'scr-1' },
        action => 'event', name => 'Viewed CallName Screen',
        attributes => { name => 'PropName' } }, $T1 ],
    [ 'screen: properties.name before event', '/cio/v1/screen',
      { userId => 'scr-2', event => 'EventName',
        properties => { name => 'PropName' }, timestamp => iso($T1) },
      { type => 'person', identifiers => { id => 'scr-2' },
        action => 'event', name => 'Viewed PropName Screen',
        attributes => { name => 'PropName' } }, $T1 ],
    [ 'screen, native: the call\'s name before properties.name',
      '/native/v1/screen',
      { userId => 'scr-3', name => 'CallName', event => 'EventName',
        properties => { name => 'PropName' }, timestamp => iso($T1) },
      { type => 'person', identifiers => { id => 'scr-3' },
        action => 'screen', name => 'CallName',
        attributes => { name => 'PropName' } }, $T1 ],
    [ 'page: the call\'s name before properties.url and context.page.url',
      '/cio/v1/page',
      { userId => 'pg-1', name => 'PageName',
        properties => { url => 'https://example.com/prop' },
        context => { page => { url => 'https://example.com/ctx' } },
        timestamp => iso($T1) },
      { type => 'person', identifiers => { id => 'pg-1' },
        action => 'page', name => 'PageName',
        attributes => { url => 'https://example.com/prop' } }, $T1 ],
    [ 'page: properties.url before context.page.url', '/cio/v1/page',
      { userId => 'pg-2',
        properties => { url => 'https://example.com/prop' },
        context => { page => { url => 'https://example.com/ctx' } },
        timestamp => iso($T1) },
      { type => 'person', identifiers => { id => 'pg-2' },
        action => 'page', name => 'https://example.com/prop',
        attributes => { url => 'https://example.com/prop' } }, $T1 ],
    [ 'page: context.page.url last', '/cio/v1/page',
      { userId => 'pg-3',
        context => { page => { url => 'https://example.com/ctx' } },
        timestamp => iso($T1) },
      { type => 'person', identifiers => { id => 'pg-3' },
        action => 'page', name => 'https://example.com/ctx',
        attributes => {} }, $T1 ];

# --- time ----------------------------------------------------------------

push @cases,
    [ 'time: timestamp before originalTimestamp', '/cio/v1/track',
      { userId => 'tm-1', event => 'Timed', timestamp => iso($T1),
        originalTimestamp => iso($T2) },
      { type => 'person', identifiers => { id => 'tm-1' },
        action => 'event', name => 'Timed', attributes => {} }, $T1 ],
    [ 'time: originalTimestamp before the receive time', '/cio/v1/track',
      { userId => 'tm-2', event => 'Timed', originalTimestamp => iso($T2) },
      { type => 'person', identifiers => { id => 'tm-2' },
        action => 'event', name => 'Timed', attributes => {} }, $T2 ],
    [ 'time: the receive time last', '/cio/v1/track',
      { userId => 'tm-3', event => 'Timed' },
      { type => 'person', identifiers => { id => 'tm-3' },
        action => 'event', name => 'Timed', attributes => {} }, [0, 0] ],

    # a client whose clock is a day ahead, that sent the call 10 s after
    # it happened: the event happened 10 s before nginx received it
    [ 'skew: sentAt corrects timestamp', '/cio/v1/track',
      { userId => 'sk-1', event => 'Skewed',
        timestamp => iso(time + 86400 - 10), sentAt => iso(time + 86400) },
      { type => 'person', identifiers => { id => 'sk-1' },
        action => 'event', name => 'Skewed', attributes => {} },
      [-10, -10] ],
    [ 'skew: sentAt corrects originalTimestamp (analytics.js)',
      '/cio/v1/track',
      { userId => 'sk-2', event => 'Skewed',
        originalTimestamp => iso(time - 7200 - 30),
        sentAt => iso(time - 7200) },
      { type => 'person', identifiers => { id => 'sk-2' },
        action => 'event', name => 'Skewed', attributes => {} },
      [-30, -30] ],
    [ 'skew: a batch\'s sentAt applies to its calls', '/cio/v1/batch',
      { sentAt => iso(time + 3600),
        batch => [ { type => 'track', userId => 'sk-3', event => 'Skewed',
                     timestamp => iso(time + 3600 - 20) } ] },
      { type => 'person', identifiers => { id => 'sk-3' },
        action => 'event', name => 'Skewed', attributes => {} },
      [-20, -20] ];

# --- identity ------------------------------------------------------------

push @cases,
    [ 'identity: userId before traits.email and anonymousId',
      '/cio/v1/identify',
      { userId => 'id-1', anonymousId => 'anon-1',
        traits => { email => 'traits-1@example.com' },
        context => { traits => { email => 'ctx-1@example.com' } } },
      { type => 'person', identifiers => { id => 'id-1' },
        action => 'identify',
        attributes => { email => 'traits-1@example.com',
                        anonymous_id => 'anon-1' } }, undef ],
    [ 'identity: traits.email before context.traits.email and anonymousId',
      '/cio/v1/identify',
      { anonymousId => 'anon-2',
        traits => { email => 'traits-2@example.com', plan => 'pro' },
        context => { traits => { email => 'ctx-2@example.com' } } },
      { type => 'person', identifiers => { email => 'traits-2@example.com' },
        action => 'identify',
        attributes => { email => 'traits-2@example.com', plan => 'pro',
                        anonymous_id => 'anon-2' } }, undef ],
    [ 'identity: context.traits.email before anonymousId',
      '/cio/v1/identify',
      { anonymousId => 'anon-3', traits => { plan => 'pro' },
        context => { traits => { email => 'ctx-3@example.com' } } },
      { type => 'person', identifiers => { email => 'ctx-3@example.com' },
        action => 'identify',
        attributes => { plan => 'pro', anonymous_id => 'anon-3' } },
      undef ],
    [ 'identity: a track takes no e-mail, only anonymousId',
      '/cio/v1/track',
      { anonymousId => 'anon-4', event => 'Anon',
        context => { traits => { email => 'ctx-4@example.com' } },
        timestamp => iso($T1) },
      { type => 'person', identifiers => { anonymous_id => 'anon-4' },
        action => 'event', name => 'Anon', attributes => {} }, $T1 ],
    [ 'attributes: traits before context.traits', '/cio/v1/identify',
      { userId => 'id-5', traits => { plan => 'traits' },
        context => { traits => { plan => 'ctx', extra => 1 } } },
      { type => 'person', identifiers => { id => 'id-5' },
        action => 'identify', attributes => { plan => 'traits' } },
      undef ],
    [ 'group: traits.object_type_id before traits.objectTypeId',
      '/cio/v1/group',
      { userId => 'grp-1', groupId => 'g-1',
        traits => { object_type_id => '7', objectTypeId => '9',
                    name => 'Acme' } },
      { type => 'object', action => 'identify',
        identifiers => { object_type_id => '7', object_id => 'g-1' },
        attributes => { name => 'Acme' },
        cio_relationships => [ { identifiers => { id => 'grp-1' } } ] },
      undef ];

# created_at / createdAt, both orders (the body is raw JSON to keep it)
my @created = (
    [ 'created_at first',
      '{"userId":"ca-1","traits":{"created_at":"2024-01-01T00:00:00Z",'
      . '"createdAt":"2020-01-01T00:00:00Z"}}' ],
    [ 'createdAt first',
      '{"userId":"ca-2","traits":{"createdAt":"2020-01-01T00:00:00Z",'
      . '"created_at":"2024-01-01T00:00:00Z"}}' ],
);

# --- limits --------------------------------------------------------------

my %over = (('k' x 151) => 'dropped', ('n' x 150) => 'kept');
my %many = map { (sprintf('a%03d', $_) => $_) } 1 .. 301;

push @cases,
    [ 'limit: an event name over 100 bytes is cut', '/cio/v1/track',
      { userId => 'lim-1', event => 'n' x 150, timestamp => iso($T1) },
      { type => 'person', identifiers => { id => 'lim-1' },
        action => 'event', name => 'n' x 100, attributes => {} }, $T1 ],
    [ 'limit: a name is cut on a UTF-8 boundary', '/cio/v1/track',
      { userId => 'lim-2', event => "\x{e9}" x 60, timestamp => iso($T1) },
      { type => 'person', identifiers => { id => 'lim-2' },
        action => 'event', name => "\x{e9}" x 50, attributes => {} }, $T1 ],
    [ 'limit: a screen name is cut so the whole name fits',
      '/cio/v1/screen',
      { userId => 'lim-3', name => 's' x 200, timestamp => iso($T1) },
      { type => 'person', identifiers => { id => 'lim-3' },
        action => 'event', name => 'Viewed ' . 's' x 86 . ' Screen',
        attributes => {} }, $T1 ],
    [ 'limit: a page name over 100 bytes is cut', '/cio/v1/page',
      { userId => 'lim-4',
        properties => { url => 'https://example.com/' . 'p' x 200 },
        timestamp => iso($T1) },
      { type => 'person', identifiers => { id => 'lim-4' },
        action => 'page', name => substr('https://example.com/' . 'p' x 200,
            0, 100),
        attributes => { url => 'https://example.com/' . 'p' x 200 } },
      $T1 ],
    [ 'limit: attribute names over 150 bytes are dropped', '/cio/v1/track',
      { userId => 'lim-5', event => 'Names', properties => \%over,
        timestamp => iso($T1) },
      { type => 'person', identifiers => { id => 'lim-5' },
        action => 'event', name => 'Names',
        attributes => { ('n' x 150) => 'kept' } }, $T1 ],
    [ 'limit: values over 1000 bytes are cut, at every depth',
      '/cio/v1/track',
      { userId => 'lim-6', event => 'Values', timestamp => iso($T1),
        properties => { v => 'v' x 1001, u => "\x{e9}" x 501,
                        o => { p => [ 'w' x 1200 ] } } },
      { type => 'person', identifiers => { id => 'lim-6' },
        action => 'event', name => 'Values',
        attributes => { v => 'v' x 1000, u => "\x{e9}" x 500,
                        o => { p => [ 'w' x 1000 ] } } }, $T1 ],
    [ 'limit: identify values are cut too', '/cio/v1/identify',
      { userId => 'lim-7', traits => { bio => 'b' x 1500 } },
      { type => 'person', identifiers => { id => 'lim-7' },
        action => 'identify', attributes => { bio => 'b' x 1000 } },
      undef ],
    [ 'limit: the first 300 attributes are kept', '/cio/v1/identify',
      # canonical JSON: a001 .. a301 in this order
      { userId => 'lim-8', traits => \%many },
      { type => 'person', identifiers => { id => 'lim-8' },
        action => 'identify',
        attributes => { map { (sprintf('a%03d', $_) => $_) } 1 .. 300 } },
      undef ],
    [ 'limit: a 150-byte userId is an identifier', '/cio/v1/track',
      { userId => 'i' x 150, event => 'LongId', timestamp => iso($T1) },
      { type => 'person', identifiers => { id => 'i' x 150 },
        action => 'event', name => 'LongId', attributes => {} }, $T1 ];

# The name and value limits hold at every depth (docs/mapping.md §7.2),
# which is what the strict stand-in's nested_limits rule checks; deeper
# than 32 levels a call is refused at the edge (§7.4).
my $deep = 'd' x 1001;
$deep = { d => $deep } for 1 .. 30;
my $cut = 'd' x 1000;
$cut = { d => $cut } for 1 .. 30;
my @nested = (
    [ 'limit: nested attribute names over 150 bytes are dropped',
      '/cio/v1/track',
      { userId => 'nest-1', event => 'Nested', timestamp => iso($T1),
        properties => { o => { ('k' x 151) => 1, ok => 2 } } },
      { type => 'person', identifiers => { id => 'nest-1' },
        action => 'event', name => 'Nested',
        attributes => { o => { ok => 2 } } }, $T1 ],
    [ 'limit: values are cut 31 levels deep', '/cio/v1/track',
      { userId => 'nest-2', event => 'Deep', timestamp => iso($T1),
        properties => { deep => $deep } },
      { type => 'person', identifiers => { id => 'nest-2' },
        action => 'event', name => 'Deep',
        attributes => { deep => $cut } }, $T1 ],
);

# --- send ----------------------------------------------------------------

my $t0 = time;
my $utf8 = JSON::PP->new->utf8->canonical;

for my $c (@cases) {
    my ($label, $path, $body) = @$c;
    my ($st, undef, $b) = $t->post($path, $utf8->encode($body), %auth);
    is($st, 200, "$label: 200") or diag($b);
    (my $mpath = $path) =~ s{^/(cio|native)/}{/$1-m/};
    ($st, undef, $b) = $t->post($mpath,
        $utf8->encode(with_message_id($body, $label)), %auth);
    is($st, 200, "$label, with a messageId: 200") or diag($b);
}
for my $c (@nested) {
    my ($st) = $t->post($c->[1], $utf8->encode($c->[2]), %auth);
    is($st, 200, "$c->[0]: 200");
}
for my $c (@created) {
    my ($st) = $t->post('/cio/v1/identify', $c->[1], %auth);
    is($st, 200, "created_at: $c->[0]: 200");
}

# over the limits that refuse: the sender hears it, nothing is sent
my ($st, undef, $b) = $t->post('/cio/v1/track',
    { userId => 'i' x 151, event => 'TooLongId' }, %auth);
is($st, 400, 'limit: a 151-byte userId: 400');
like($b, qr/longer than 150 bytes/, 'limit: saying why');
my $big = { type => 'track', userId => 'big', event => 'TooBig',
    properties => { map { ("p$_" => 'x' x 1000) } 1 .. 40 } };
($st) = $t->post('/cio/v1/track', $big, %auth);
is($st, 413, 'limit: a single call over 32 KiB: 413');
($st, undef, $b) = $t->post('/cio/v1/batch', { batch => [
    { type => 'track', userId => 'small', event => 'Small',
      timestamp => iso($T1) }, $big ] }, %auth);
is($st, 200, 'limit: a batch with an item over 32 KiB: 200');
my $r = eval { $json->decode($b) } || {};
is_deeply([ map { $_->{index} } @{ $r->{rejected} || [] } ], [1],
    'limit: the item over 32 KiB is rejected by its index')
    or diag($b);
push @cases, [ 'limit: the small item of that batch', undef, undef,
    { type => 'person', identifiers => { id => 'small' }, action => 'event',
      name => 'Small', attributes => {} }, $T1 ];
# (site2 has the cases but this one, which went to site1 only)
my $ncases = 2 * @cases - 1;

# every case first: the sentinel is another person's and may overtake them
# in a batch of its own
Cio::Test::wait_until(sub {
    grep({ ($_->{name} // '') !~ /^settle-\d+$/ } @{ $cio->items })
        >= $ncases
}, 15);
my $settled = $t->settle($cio, headers => \%auth);
my $t1 = time;
ok($settled, 'settled');

# --- what arrived ----------------------------------------------------------

my @items = grep { ($_->{name} // '') !~ /^settle-\d+$/ }
    @{ $cio->items('site1') };
my %by = by_person(@items);
my %by_m = by_person(@{ $cio->items('site2') });

sub by_person {
    my %by;
    for my $i (@_) {
        my $who = $i->{type} eq 'object'
            ? $i->{cio_relationships}[0]{identifiers} : $i->{identifiers};
        push @{ $by{ $json->encode($who) } }, $i;
    }
    return %by;
}

for my $c (@cases, map { [ "$_->[0], with a messageId", @$_[1 .. 4], 1 ] }
                   grep { defined $_->[1] } @cases)
{
    my ($label, undef, undef, $want, $time, $m) = @$c;
    my $who = $want->{type} eq 'object'
        ? $want->{cio_relationships}[0]{identifiers} : $want->{identifiers};
    my @got = @{ ($m ? \%by_m : \%by)->{ $json->encode($who) } || [] };
    is(scalar @got, 1, "$label: one item") or next;
    my $got = { %{ $got[0] } };

    if ($got->{action} ne 'identify' && $got->{type} eq 'person') {
        ok(ulid_ok(delete $got->{id}), "$label: a dedupe id");
    }
    my $ts = delete $got->{timestamp};
    if (!defined $time) {
        ok(!defined $ts, "$label: no timestamp");
    } elsif (ref $time) {
        # integer seconds: the receive time moved by the offset, give or
        # take the second it was cut to
        my ($lo, $hi) = (int($t0 + $time->[0]) - 1, $t1 + $time->[1] + 1);
        ok(defined $ts && $ts >= $lo && $ts <= $hi,
            "$label: timestamp in [$lo, $hi]")
            or diag('got ', $ts // 'none');
    } else {
        is($ts, $time, "$label: timestamp");
    }
    is_deeply($got, $want, "$label: exact item")
        or diag($json->encode($got[0]));
}

ok(!grep({ ($_->{name} // '') =~ /^TooLongId|TooBig$/ } @items),
    'limit: the refused calls were not sent');

for my $c (@nested) {
    my ($label, undef, undef, $want) = @$c;
    my ($got) = grep { ($_->{identifiers}{id} // '') =~ /^nest-/
        && $_->{name} eq $c->[2]{event} } @items;
    ok($got, "$label: the item arrives");
    next unless $got;
    delete @$got{qw(id timestamp)};
    is_deeply($got, $want, "$label: exact item");
}

{
    my $d33 = 1;
    $d33 = { d => $d33 } for 1 .. 34;
    my ($st, undef, $b) = $t->post('/cio/v1/track',
        { userId => 'nest-3', event => 'TooDeep', properties => $d33 },
        %auth);
    is($st, 400, 'limit: properties nested 34 levels deep: 400');
    like($b, qr/nest deeper than 32 levels/, 'limit: saying why');
}

for my $c (['created_at first', 'ca-1'], ['createdAt first', 'ca-2']) {
    my ($got) = @{ $by{ $json->encode({ id => $c->[1] }) } || [] };
    is_deeply($got && $got->{attributes},
        { created_at => timegm(0, 0, 0, 1, 0, 2024) },
        "created_at: $c->[0]: created_at wins over createdAt");
}

$t->done;
