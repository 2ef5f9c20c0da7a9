#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The contract's decided points, end to end (docs/mapping.md §11): for
# each, what the sender sees and the exact item Customer.io receives.
# Every case here failed on the mapper before these decisions were built.
# At the end every call of /cio/ goes once more with messageIds, as SDKs
# send them, to a second workspace (/cio-m/): the one-pass mapper maps
# those, the tree mapper the calls without one; the items must be the
# same.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes ();
use Time::Local qw(timegm);
use Storable qw(dclone);
use Cio::Test qw(basic with_message_id);

# one worker: the change counter's log line is then the first one of it
my $t = Cio::Test->new(workers => 1);
my $cio = $t->standin(workspaces => ['site1:key1', 'site2:key2']);
my $json = $t->json;

$t->config(http => <<"END")->run;
    cio_zone zone=cio:4m;
    cio_flush_interval 20ms;

    server {
        listen 127.0.0.1:%%PORT%%;

        cio_site_id site1;
        cio_api_key key1;
        cio_endpoint ${\ $cio->url };

        location /cio/ {
            cio_ingest segment;
            cio_write_key wk_test;
        }

        location /amp/ {
            cio_ingest amplitude;
            cio_write_key amp_key;
        }

        location /cio-m/ {
            cio_ingest segment;
            cio_write_key wk_test;
            cio_site_id site2;
            cio_api_key key2;
        }
    }
END

my %auth = (Authorization => basic('wk_test'));
my $ULID = qr/^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;

sub ulid_ms {
    my ($id) = @_;
    my $alphabet = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    my $ms = 0;
    $ms = $ms * 32 + index($alphabet, $_) for split //, substr($id, 0, 10);
    return $ms;
}

# every item of $site (site1) for which $match is true, once at least $n
# have arrived
sub arrived {
    my ($match, $n, $site) = @_;
    my @got;
    Cio::Test::wait_until(sub {
        @got = grep { $match->($_) } @{ $cio->items($site // 'site1') };
        return @got >= ($n // 1);
    }, 10);
    return @got;
}

sub by_person {
    my ($key, $value) = @_;
    return sub { ($_[0]{identifiers}{$key} // '') eq $value };
}

sub by_name {
    my ($name) = @_;
    return sub { ($_[0]{name} // '') eq $name };
}

# what to send again with messageIds at the end (accepted, refused)
my @again;

# posts a call that must be accepted; returns its items
sub accepted {
    my ($what, $path, $body, $match, $n) = @_;
    my $at = Time::HiRes::time();
    my ($st, undef, $r) = $t->post($path, $body, %auth);
    is($st, 200, "$what: 200") or diag($r);
    my @got = arrived($match, $n);
    push @again, { what => $what, path => $path, body => $body, at => $at,
                   match => $match, n => $n, items => dclone(\@got) }
        if $path =~ m{^/cio/} && ref $body;
    return @got;
}

# the item with its ULID checked and taken out
sub strip_id {
    my ($what, $item) = @_;
    my $id = delete $item->{id};
    like($id // '', $ULID, "$what: a ULID id");
    return $id;
}

sub refused {
    my ($what, $path, $body, $error, %h) = @_;
    my ($st, undef, $r) = $t->post($path, $body, %auth, %h);
    is($st, 400, "$what: 400");
    is_deeply(eval { $json->decode($r) },
        { success => JSON::PP::false, error => $error }, "$what: reason")
        or diag($r);
    push @again, { what => $what, path => $path, body => $body,
                   error => $error, headers => \%h }
        if $path =~ m{^/cio/} && ref $body && !$h{'Content-Encoding'};
}

# an item as both paths must write it: the dedupe ids differ (one hashes
# the call, the other its messageId), a receive time by the time between
# the two posts
sub comparable {
    my ($item) = @_;
    my %c = %$item;
    delete $c{id};
    return (\%c, delete $c{timestamp});
}

sub send_again {
    my ($a) = @_;
    (my $path = $a->{path}) =~ s{^/cio/}{/cio-m/};
    my $what = "$a->{what}, with a messageId";
    my $at = Time::HiRes::time();
    my ($st, undef, $r) = $t->post($path,
        with_message_id($a->{body}, $a->{what}), %auth,
        %{ $a->{headers} || {} });

    if (defined $a->{error}) {
        is($st, 400, "$what: 400");
        is_deeply(eval { $json->decode($r) },
            { success => JSON::PP::false, error => $a->{error} },
            "$what: reason") or diag($r);
        return;
    }

    is($st, 200, "$what: 200") or diag($r);
    my @got = arrived($a->{match}, $a->{n}, 'site2');
    is(scalar @got, scalar @{ $a->{items} }, "$what: as many items");
    my $late = $at - $a->{at};
    for my $i (0 .. $#{ $a->{items} }) {
        my ($want, $wts) = comparable($a->{items}[$i]);
        my ($got, $gts) = comparable($got[$i] // {});
        is_deeply($got, $want, "$what: the same item ($i)")
            or diag($json->encode($got[$i]));
        next unless defined $wts || defined $gts;
        my $d = ($gts // 0) - ($wts // 0);
        ok(defined $wts && defined $gts
           && ($d == 0 || ($d >= int($late) - 1 && $d <= $late + 1)),
           "$what: the same timestamp ($i), or the receive time's")
            or diag(($wts // 'none') . ' ' . ($gts // 'none'));
    }
}

my $before = time();

# --- §3.1 impossible times: the receive time, counted and logged -----------

my ($it) = accepted('a time before 1970', '/cio/v1/track',
    { userId => 'u-1960', event => 'Old', timestamp => '1960-05-01T00:00:00Z' },
    by_person(id => 'u-1960'));
strip_id('a time before 1970', $it);
my $ts = delete $it->{timestamp} // 0;
ok($ts >= $before && $ts <= time(),
    'a time before 1970: the item gets the receive time') or diag($ts);
is_deeply($it, { type => 'person', identifiers => { id => 'u-1960' },
                 action => 'event', name => 'Old', attributes => {} },
    'a time before 1970: exact item');
ok(Cio::Test::wait_until(sub {
        $t->read_file('error.log')
            =~ /\[warn\].*cio: 1 changes to calls to fit Customer\.io's limits and rules since the last such line: .*\(docs\/mapping\.md, section 7\)/ }, 5),
    'a time before 1970: the change is counted and logged');

for my $c (
    [ 'year 0001', { timestamp => '0001-01-01T00:00:00Z' } ],
    [ 'year 9999', { timestamp => '9999-12-31T00:00:00Z' } ],
    [ 'sentAt 0001 (an unbounded correction gave 4049)',
      { timestamp => '2024-01-01T00:00:00Z',
        sentAt => '0001-01-01T00:00:00Z' } ],
) {
    my ($what, $time) = @$c;
    # a person each: 'year 0001' and 'year 9999' once shared one, and the
    # first one's item could be taken for the second's
    (my $user = 'u-' . substr($what, 0, 40)) =~ s/\W/-/g;
    my ($got) = accepted($what, '/cio/v1/track',
        { userId => $user, event => 'Time', %$time }, by_person(id => $user));
    my $s = $got ? $got->{timestamp} : 0;
    ok($s >= $before && $s <= time(), "$what: the receive time") or diag($s);
}

# --- §3.1 a number is seconds or milliseconds by its magnitude -------------

for my $c ([ 'seconds', 1700000000 ], [ 'milliseconds', 1700000000123 ]) {
    my ($what, $n) = @$c;
    ($it) = accepted("numeric timestamp in $what", '/cio/v1/track',
        { userId => "u-$what", event => 'Num', timestamp => $n,
          messageId => "num-$what" }, by_person(id => "u-$what"));
    my $id = strip_id("numeric timestamp in $what", $it);
    is_deeply($it, { type => 'person', identifiers => { id => "u-$what" },
                     action => 'event', name => 'Num', attributes => {},
                     timestamp => 1700000000 },
        "numeric timestamp in $what: exact item") or diag($json->encode($it));
    is(int(ulid_ms($id // '') / 1000), 1700000000,
        "numeric timestamp in $what: the id's time part");
}

# --- §4 a resend without a time keeps its dedupe id -------------------------

my $retry = { userId => 'u-retry', event => 'Retry', messageId => 'm1' };
$t->post('/cio/v1/track', $retry, %auth);
# two receipts a moment apart: the old id took its time part from each
select(undef, undef, undef, 0.3);
$t->post('/cio/v1/track', $retry, %auth);
my @r = arrived(by_person(id => 'u-retry'), 2);
is(scalar @r, 2, 'a resend without a time: both delivered');
is($r[0]{id}, $r[1]{id}, 'a resend without a time: the same dedupe id')
    or diag("$r[0]{id} $r[1]{id}");
my $ms = ulid_ms($r[0]{id} // '');
ok($ms >= timegm(0, 0, 0, 1, 0, 2020) * 1000
   && $ms < timegm(0, 0, 0, 1, 0, 2021) * 1000,
   'a resend without a time: the id time is derived, never the receipt')
    or diag($ms);

# the same without a messageId: the id hashes the call itself (the tree
# mapper's path, docs/mapping.md §4), and its time is derived all the same
my $bare = { userId => 'u-bare', event => 'Bare', properties => { n => 1 } };
$t->post('/cio/v1/track', $bare, %auth);
select(undef, undef, undef, 0.3);
$t->post('/cio/v1/track', { %$bare, sentAt => '2030-01-01T00:00:00Z' },
    %auth);
@r = arrived(by_person(id => 'u-bare'), 2);
is(scalar @r, 2, 'a resend without a time or a messageId: both delivered');
is($r[0]{id}, $r[1]{id},
    'a resend without a time or a messageId: the same dedupe id')
    or diag("$r[0]{id} $r[1]{id}");
$ms = ulid_ms($r[0]{id} // '');
ok($ms >= timegm(0, 0, 0, 1, 0, 2020) * 1000
   && $ms < timegm(0, 0, 0, 1, 0, 2021) * 1000,
   'a resend without a time or a messageId: the id time is derived')
    or diag($ms);

# --- §8 integrations flags --------------------------------------------------

my ($st, $resp);

# twice: without messageIds (the tree mapper maps those) and with them,
# as SDKs send them (the one-pass mapper)
for my $with_id (0, 1) {
    my $u = $with_id ? 'u-int-id' : 'u-int';
    my $n = 0;
    my $call = sub {
        my (%c) = @_;
        $c{messageId} = "$u-" . ++$n if $with_id;
        return { type => 'track', userId => $u, %c };
    };
    my $how = $with_id ? 'integrations, with messageIds' : 'integrations';
    ($st, undef, $resp) = $t->post('/cio/v1/batch', {
        integrations => { All => JSON::PP::false },
        batch => [
            $call->(event => 'Int All Off'),
            $call->(event => 'Int Cio On',
                    integrations => { 'Customer.io' => JSON::PP::true }),
            $call->(event => 'Int Rudder Off',
                    integrations => { All => JSON::PP::true,
                                      'Customer IO' => JSON::PP::false }),
            $call->(event => 'Int Call All On',
                    integrations => { All => JSON::PP::true }),
        ],
    }, %auth);
    is($st, 200, "$how: 200");
    is($resp, '{"success":true}', "$how: dropped calls are accepted");
    my ($single) = $t->post('/cio/v1/track', $call->(
        event => 'Int Single Off',
        integrations => { 'customer.io' => JSON::PP::false }), %auth);
    is($single, 200, "$how: a single dropped call is accepted");
    $t->post('/cio/v1/track', $call->(event => 'Int Last'), %auth);
    arrived(sub { ($_[0]{identifiers}{id} // '') eq $u
                  && ($_[0]{name} // '') eq 'Int Last' });
    is_deeply([ sort map { $_->{name} } arrived(by_person(id => $u), 3) ],
        [ 'Int Call All On', 'Int Cio On', 'Int Last' ],
        "$how: only the calls meant for Customer.io arrive");
}

# --- §5.9 Segment's deletion events ----------------------------------------

($it) = accepted('Object Deleted', '/cio/v1/track',
    { userId => 'u-del', event => 'Object Deleted',
      properties => { objectId => 'acme', object_type_id => '2' } },
    sub { ($_[0]{identifiers}{object_id} // '') eq 'acme' });
is_deeply($it, { type => 'object', action => 'delete',
                 identifiers => { object_type_id => '2',
                                  object_id => 'acme' } },
    'Object Deleted: exact item') or diag($json->encode($it));

($it) = accepted('Relationship Deleted', '/cio/v1/track',
    { userId => 'u-rel', event => 'Relationship Deleted',
      context => { groupId => 'rel-g' } },
    sub { ($_[0]{identifiers}{object_id} // '') eq 'rel-g' });
is_deeply($it, { type => 'object', action => 'delete_relationships',
                 identifiers => { object_type_id => '1',
                                  object_id => 'rel-g' },
                 cio_relationships => [ { identifiers => { id => 'u-rel' } } ]
               },
    'Relationship Deleted: exact item') or diag($json->encode($it));
ok(!(grep { ($_->{name} // '') =~ /Deleted$/ } @{ $cio->items }),
    'deletion events: no plain event named so');

# --- §3.3, §5.1 identify ----------------------------------------------------

($it) = accepted('created_at and createdAt', '/cio/v1/identify',
    { userId => 'u-created', traits => {
        createdAt => '2020-01-01T00:00:00Z',
        created_at => '2021-01-01T00:00:00Z' } },
    by_person(id => 'u-created'));
is_deeply($it, { type => 'person', action => 'identify',
                 identifiers => { id => 'u-created' },
                 attributes => { created_at => timegm(0, 0, 0, 1, 0, 2021) } },
    'created_at wins over createdAt') or diag($json->encode($it));

($it) = accepted('an empty created_at', '/cio/v1/identify',
    { userId => 'u-empty', traits => { created_at => '', plan => 'pro' } },
    by_person(id => 'u-empty'));
is_deeply($it, { type => 'person', action => 'identify',
                 identifiers => { id => 'u-empty' },
                 attributes => { plan => 'pro' } },
    'an empty created_at is dropped') or diag($json->encode($it));

($it) = accepted('identify with a groupId', '/cio/v1/identify',
    { userId => 'u-member', groupId => 'org-1', traits => {
        plan => 'pro', objectTypeId => '2',
        relationshipAttributes => { role => 'admin' } } },
    by_person(id => 'u-member'));
is_deeply($it, { type => 'person', action => 'identify',
                 identifiers => { id => 'u-member' },
                 attributes => { plan => 'pro' },
                 cio_relationships => [ {
                     identifiers => { object_type_id => '2',
                                      object_id => 'org-1' },
                     relationship_attributes => { role => 'admin' } } ] },
    'identify with a groupId relates the person') or diag($json->encode($it));

# --- §2 placeholder anonymous ids, a bare cio_ ------------------------------

($it) = accepted('an all-zero anonymousId', '/cio/v1/identify',
    { userId => 'u-zero',
      anonymousId => '00000000-0000-0000-0000-000000000000',
      traits => { a => 1 } }, by_person(id => 'u-zero'));
is_deeply($it->{attributes}, { a => 1 },
    'an all-zero anonymousId is not merged into the person');
refused('only an all-zero anonymousId', '/cio/v1/track',
    { anonymousId => '00000000-0000-0000-0000-000000000000', event => 'Z' },
    'userId or anonymousId is required');

($it) = accepted('userId cio_ alone', '/cio/v1/track',
    { userId => 'cio_', anonymousId => 'anon-cio', event => 'Bare' },
    by_person(anonymous_id => 'anon-cio'));
strip_id('userId cio_ alone', $it);
delete $it->{timestamp};
is_deeply($it, { type => 'person', action => 'event', name => 'Bare',
                 identifiers => { anonymous_id => 'anon-cio' },
                 attributes => {} },
    'a userId of just cio_ is absent') or diag($json->encode($it));

# cJSON's printer wrote it 9.00719925474099e+15, which is ...990
($it) = accepted('a numeric userId just below 2^53', '/cio/v1/track',
    { userId => 9007199254740989, event => 'Exact' }, by_name('Exact'));
is($json->canonical->encode($it->{identifiers} // {}),
    '{"id":9007199254740989}', 'a numeric userId keeps every digit');

refused('an anonymous User Deleted', '/cio/v1/track',
    { anonymousId => 'anon-del', event => 'User Deleted' },
    '"User Deleted" needs a userId');

# --- §5.5 RudderStack's group action and relationship attributes -----------

($it) = accepted('group traits.action delete', '/cio/v1/group',
    { userId => 'u-g', groupId => 'gone', traits => { action => 'delete' } },
    sub { ($_[0]{identifiers}{object_id} // '') eq 'gone' });
is_deeply($it, { type => 'object', action => 'delete',
                 identifiers => { object_type_id => '1',
                                  object_id => 'gone' } },
    'group traits.action delete: exact item') or diag($json->encode($it));

($it) = accepted('group relationshipAttributes', '/cio/v1/group',
    { userId => 'u-g', groupId => 'kept', traits => { name => 'K',
      relationshipAttributes => { role => 'owner' } } },
    sub { ($_[0]{identifiers}{object_id} // '') eq 'kept' });
is_deeply($it, { type => 'object', action => 'identify',
                 identifiers => { object_type_id => '1',
                                  object_id => 'kept' },
                 attributes => { name => 'K' },
                 cio_relationships => [ {
                     identifiers => { id => 'u-g' },
                     relationship_attributes => { role => 'owner' } } ] },
    'group relationshipAttributes: exact item') or diag($json->encode($it));

($it) = accepted('group with an empty object_type_id', '/cio/v1/group',
    { userId => 'u-g', groupId => 'typed', traits => {
      object_type_id => '', objectTypeId => '2' } },
    sub { ($_[0]{identifiers}{object_id} // '') eq 'typed' });
is_deeply($it && $it->{identifiers}, { object_type_id => '2',
                                       object_id => 'typed' },
    'an empty object_type_id is absent: objectTypeId names the type')
    or diag($json->encode($it));

# --- §5.10 Amplitude --------------------------------------------------------

my $now = time() * 1000;
($st, undef, $resp) = $t->post('/amp/2/httpapi', {
    api_key => 'amp_key',
    events => [
        { user_id => 'amp-valid', event_type => 'E', time => $now },
        { user_id => 'abcd', event_type => 'E', time => $now },
        { user_id => 'Anonymous', event_type => 'E', time => $now },
    ],
});
is($st, 400, 'Amplitude id rules: 400 for the request');
my $a = eval { $json->decode($resp) } // {};
is($a->{code}, 400, 'Amplitude id rules: code 400');
is_deeply($a->{events_with_invalid_fields}, { user_id => [ 1, 2 ] },
    'Amplitude id rules: short and refused user_ids named by index')
    or diag($resp);

($st, undef, $resp) = $t->post('/amp/2/httpapi', {
    api_key => 'amp_key', options => { min_id_length => 3 },
    events => [ { user_id => 'abc', event_type => 'Short Ok', time => $now } ],
});
is($st, 200, 'Amplitude options.min_id_length: 200');
($it) = arrived(by_name('Short Ok'));
is_deeply($it && $it->{identifiers}, { id => 'abc' },
    'Amplitude options.min_id_length: the short id is the person');

($st, undef, $resp) = $t->post('/amp/2/httpapi',
    { events => [ { user_id => 'amp-valid', event_type => 'E' } ] });
is($st, 400, 'Amplitude without api_key: 400');
$a = eval { $json->decode($resp) } // {};
is($a->{code}, 400, 'Amplitude without api_key: code 400');
is($a->{missing_field}, 'api_key',
    'Amplitude without api_key: missing_field api_key');

# --- §7.4 nesting -----------------------------------------------------------

# properties.a is an object, with 31 more below it: 32 levels, the limit
($it) = accepted('properties nested 32 levels', '/cio/v1/track',
    '{"userId":"u-deep32","event":"Deep 32","properties":{"a":'
    . ('{"k":' x 32) . '1' . ('}' x 32) . '}}', by_name('Deep 32'));
ok($it, 'properties nested 32 levels: delivered');

# 997 levels: within cJSON's own limit, once sent and refused as a batch
for my $depth (33, 997) {
    refused("properties nested $depth levels", '/cio/v1/track',
        '{"userId":"u-deep","event":"Deep","properties":{"a":'
        . ('{"k":' x $depth) . '1' . ('}' x $depth) . '}}',
        'properties nest deeper than 32 levels');
}
$t->post('/cio/v1/track', { userId => 'u-after', event => 'After Deep' },
    %auth);
ok(arrived(by_name('After Deep')), 'nesting: the next event is delivered');
ok(!(grep { ($_->{name} // '') eq 'Deep' } @{ $cio->items }),
    'nesting: the deep call was never queued');

# --- §7.6 \u0000 escapes ----------------------------------------------------

for my $c (
    [ 'userId', '{"userId":"ab\u0000cd","event":"Nul"}',
      'userId contains a \u0000 escape' ],
    [ 'e-mail', '{"type":"identify","traits":{"email":'
      . '"victim@x.com\u0000evil"}}', 'traits.email contains a \u0000 escape',
      '/cio/v1/identify' ],
    [ 'event name', '{"userId":"u-nul","event":"Sign\u0000up"}',
      'event contains a \u0000 escape' ],
    [ 'property key', '{"userId":"u-nul","event":"K",'
      . '"properties":{"a\u0000b":1}}', 'a key contains a \u0000 escape' ],
) {
    my ($what, $body, $error, $path) = @$c;
    refused("\\u0000 in the $what", $path // '/cio/v1/track', $body, $error);
}

($it) = accepted('\u0000 in a value', '/cio/v1/track',
    '{"userId":"u-nulv","event":"NulValue","properties":{"v":"x\u0000y"}}',
    by_person(id => 'u-nulv'));
is($it && $it->{attributes}{v}, "x\x{0}y",
    '\u0000 in a value: forwarded intact');

($st) = $t->post('/cio/v1/track',
    '{"userId":"u","event":"E","writeKey":"wk_test\u0000junk"}',
    'Content-Type' => 'text/plain');
is($st, 401, 'a body writeKey with \u0000 after the key: 401');

is_deeply([ grep { ($_->{identifiers}{id} // '') =~ /^(ab|victim)\z/
                   || ($_->{identifiers}{email} // '') =~ /victim/ }
            @{ $cio->items } ], [],
    '\u0000: never another person');

is_deeply([ $t->errors_in_log ], [], 'no alert or sanitizer line in the log');

# --- every /cio/ call again, with messageIds ---------------------------------

send_again($_) for @again;

$t->done;
