#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# What a sender sees (status, body) and what Customer.io receives for each
# call type, end to end: SDK-shaped request -> nginx -> zone -> sender
# thread -> the Customer.io stand-in.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::Local qw(timegm);
use Cio::Test qw(basic);

my $t = Cio::Test->new;
my $cio = $t->standin(workspaces => ['site1:key1']);
my $json = $t->json;

$t->config(http => <<"END")->run;
    %%ZONE:4m%%
    cio_flush_interval 20ms;
    cio_retry_backoff 50ms 500ms;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /cio/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_endpoint ${\ $cio->url };
            cio_write_key wk_test wk_other;
        }

        location /raw/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_endpoint ${\ $cio->url };
            cio_convert_timestamps off;
            cio_device_events "Push Enabled";
        }
    }
END

my %auth = (Authorization => basic('wk_test'));

sub ulid_ms {
    my ($id) = @_;
    my $alphabet = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    my $ms = 0;
    $ms = $ms * 32 + index($alphabet, $_) for split //, substr($id, 0, 10);
    return $ms;
}

my $ts = '2026-11-22T10:00:00.000Z';
my $ts_s = timegm(0, 0, 10, 22, 10, 2026);

# --- each call type --------------------------------------------------------

my @calls = (
    [ 'identify', '/cio/v1/identify', {
        userId => 'u-1', anonymousId => 'anon-1', messageId => 'm-1',
        traits => { email => 'a@example.com', plan => 'pro',
                    createdAt => '2024-01-02T03:04:05Z' } },
      { type => 'person', identifiers => { id => 'u-1' },
        action => 'identify',
        attributes => { email => 'a@example.com', plan => 'pro',
                        created_at => timegm(5, 4, 3, 2, 0, 2024),
                        anonymous_id => 'anon-1' } } ],

    [ 'track', '/cio/v1/track', {
        userId => 'u-1', event => 'Order Completed', messageId => 'm-2',
        properties => { total => 42.5 }, timestamp => $ts },
      { type => 'person', identifiers => { id => 'u-1' }, action => 'event',
        name => 'Order Completed', attributes => { total => 42.5 },
        timestamp => $ts_s } ],

    [ 'page, short route, key in the body', '/cio/v1/p', {
        anonymousId => 'anon-2', name => 'Pricing', messageId => 'm-3',
        properties => { url => 'https://example.com/pricing' },
        timestamp => $ts, writeKey => 'wk_other' },
      { type => 'person', identifiers => { anonymous_id => 'anon-2' },
        action => 'page', name => 'Pricing',
        attributes => { url => 'https://example.com/pricing' },
        timestamp => $ts_s } ],

    [ 'screen', '/cio/v1/screen', {
        userId => 'b@example.com', name => 'Home', messageId => 'm-4',
        properties => { tab => 1 }, timestamp => $ts },
      { type => 'person', identifiers => { email => 'b@example.com' },
        action => 'event', name => 'Viewed Home Screen',
        attributes => { tab => 1 }, timestamp => $ts_s } ],
);

for my $c (@calls) {
    my ($name, $path, $body, undef) = @$c;
    my %h = $body->{writeKey} ? ('Content-Type' => 'text/plain') : %auth;
    my ($status, $hdr, $resp) = $t->post($path, $body, %h);
    is($status, 200, "$name: 200");
    is($resp, '{"success":true}', "$name: success body");
    is($hdr->{'content-type'}, 'application/json', "$name: JSON answer");
}

my $items = $cio->wait_items(scalar @calls, 10);
is(scalar @$items, scalar @calls, 'every call arrived at Customer.io');

for my $c (@calls) {
    my ($name, undef, $body, $want) = @$c;
    my ($got) = grep {
        $_->{action} eq $want->{action}
        && ($_->{name} // '') eq ($want->{name} // '')
    } @$items;

    ok($got, "$name: item recorded") or next;

    if ($want->{action} ne 'identify') {
        my $id = delete $got->{id};
        like($id // '', qr/^[0-9A-HJKMNP-TV-Z]{26}$/, "$name: ULID id");
        is(ulid_ms($id // ''), $ts_s * 1000, "$name: ULID time is the event's");
    }

    is_deeply($got, $want, "$name: exact Customer.io item")
        or diag($json->encode($got));
}

my @req = grep { $_->{status} == 200 } @{ $cio->requests };
ok(@req >= 1, 'delivered in v2 batch requests');

# --- the same event twice gets the same dedupe id ---------------------------

my $dup = { userId => 'u-9', event => 'Dup', messageId => 'same-id',
            timestamp => $ts };
$t->post('/cio/v1/track', $dup, %auth) for 1 .. 2;

my $dups = [];
Cio::Test::wait_until(sub {
    $dups = [ grep { ($_->{name} // '') eq 'Dup' } @{ $cio->items } ];
    return @$dups == 2;
}, 10);

is(scalar @$dups, 2, 'a retried call is delivered again (at least once)');
is($dups->[0]{id}, $dups->[1]{id}, 'and carries the same dedupe id');

# --- a batch with one bad call --------------------------------------------

my ($status, undef, $resp) = $t->post('/cio/v1/batch', {
    batch => [
        { type => 'track', userId => 'u-2', event => 'First',
          timestamp => $ts },
        { type => 'track', userId => 'u-2' },
        { type => 'identify', userId => 'u-3', traits => { a => 1 } },
    ],
    context => { ip => '192.0.2.1' },
}, %auth);

is($status, 200, 'batch with a bad call: 200');
is_deeply($json->decode($resp), {
    success => JSON::PP::true,
    rejected => [ { index => 1, error => 'event is required' } ],
}, 'batch: the bad call is named by its index');

$items = $cio->wait_items(@calls + 4, 10);
ok((grep { ($_->{name} // '') eq 'First' } @$items),
    'batch: the good track call arrived');
ok((grep { $_->{action} eq 'identify'
           && ($_->{identifiers}{id} // '') eq 'u-3' } @$items),
    'batch: the good identify call arrived');

# --- what a sender sees on errors -------------------------------------------

my @errors = (
    [ 'wrong key in the header', '/cio/v1/track',
      { userId => 'u', event => 'E' },
      { Authorization => basic('nope') }, 401, 'invalid write key' ],
    [ 'wrong key in the body', '/cio/v1/track',
      { userId => 'u', event => 'E', writeKey => 'nope' },
      {}, 401, 'write key is missing or invalid' ],
    [ 'no key at all', '/cio/v1/track', { userId => 'u', event => 'E' },
      {}, 401, 'write key is missing or invalid' ],
    [ 'bad JSON', '/cio/v1/track', '{"userId": "u", "event": ',
      \%auth, 400, 'invalid JSON' ],
    [ 'not an object', '/cio/v1/track', '[1,2]',
      \%auth, 400, 'body must be a JSON object' ],
    [ 'track without event', '/cio/v1/track', { userId => 'u' },
      \%auth, 400, 'event is required' ],
    [ 'no identity', '/cio/v1/track', { event => 'E' },
      \%auth, 400, 'userId or anonymousId is required' ],
    [ 'empty body', '/cio/v1/track', '',
      \%auth, 400, 'request body is empty' ],
    [ 'call over 32 KB', '/cio/v1/track',
      { userId => 'u', event => 'E', properties => { s => 'x' x 40000 } },
      \%auth, 413, 'call is larger than the limit' ],
    [ 'unknown route', '/cio/v1/nope', { userId => 'u' },
      \%auth, 404, 'unknown route' ],
    # the key in the body, as analytics.js sends it: a batch refused as a
    # whole says why, a 401 only for a wrong key
    [ 'an empty batch with the key in the body', '/cio/v1/batch',
      { writeKey => 'wk_test', batch => [] }, {}, 400,
      'batch must be a non-empty array' ],
    [ 'an empty batch with a wrong key in the body', '/cio/v1/batch',
      { writeKey => 'nope', batch => [] }, {}, 401,
      'write key is missing or invalid' ],
);

for my $e (@errors) {
    my ($name, $path, $body, $h, $code, $msg) = @$e;
    my ($st, $hdr, $r) = $t->post($path, $body, %$h);
    is($st, $code, "$name: $code");
    my $doc = eval { $json->decode($r) };
    is_deeply($doc, { success => JSON::PP::false, error => $msg },
        "$name: reason") or diag($r);
}

# a Basic header with no user at all (":") is no key: the body's counts
($status) = $t->post('/cio/v1/track',
    { userId => 'u', event => 'Empty Basic', writeKey => 'wk_test' },
    Authorization => 'Basic Og==');
is($status, 200, 'Basic with an empty user, the key in the body: 200');
($status) = $t->post('/cio/v1/track', { userId => 'u', event => 'E' },
    Authorization => 'Basic Og==');
is($status, 401, 'Basic with an empty user and no key in the body: 401');

($status, my $hdr) = $t->http('GET', '/cio/v1/track');
is($status, 405, 'GET: 405');
is($hdr->{allow}, 'POST, OPTIONS', 'GET: Allow: POST, OPTIONS');

($status, undef, $resp) = $t->post('/cio/v1/m', '{"series":[]}', %auth);
is($status, 200, 'analytics.js metrics: accepted and dropped');

like($t->read_file('error.log'),
    qr/\[info\].*cio: invalid write key in the Authorization header/,
    'a refused key is logged at info');

# --- limits and options ----------------------------------------------------

$t->post('/cio/v1/track', { userId => 'u-5', event => 'L' . ('o' x 120),
                            properties => { when => '2026-01-01T00:00:00Z' } },
         %auth);
$t->post('/raw/v1/track', { userId => 'u-5', event => 'Push Enabled',
                            properties => { when => '2026-01-01T00:00:00Z' },
                            context => { device => { token => 'tk',
                                                     type => 'Android' } } });
my @lim;
Cio::Test::wait_until(sub {
    @lim = grep { ($_->{identifiers}{id} // '') eq 'u-5' } @{ $cio->items };
    return @lim == 3;
}, 10);
my ($long) = grep { ($_->{name} // '') =~ /^Lo/ } @lim;
is(length($long->{name} // ''), 100, 'a long event name is cut to 100 bytes');
is($long->{attributes}{when}, timegm(0, 0, 0, 1, 0, 2026),
    'ISO-8601 properties become unix seconds');
like($t->read_file('error.log'),
    qr/\[warn\].*cio: 1 changes to calls to fit Customer\.io's limits and rules/,
    'the cut is logged');
my ($raw) = grep { ($_->{name} // '') eq 'Push Enabled' } @lim;
is($raw->{attributes}{when}, '2026-01-01T00:00:00Z',
    'cio_convert_timestamps off keeps the string');
ok((grep { $_->{action} eq 'add_device'
           && $_->{device}{token} eq 'tk'
           && $_->{device}{platform} eq 'android' } @lim),
    'cio_device_events: a listed event adds the device');

# nothing refused above reached Customer.io: a last event arrives after them
$t->post('/cio/v1/track', { userId => 'u', event => 'Last' }, %auth);
$items = [];
Cio::Test::wait_until(sub {
    $items = $cio->items;
    return grep { ($_->{name} // '') eq 'Last' } @$items;
}, 10);
is(scalar @$items, @calls + 2 + 2 + 3 + 1 + 1,
    'nothing but the accepted calls reached Customer.io');

$t->done;
