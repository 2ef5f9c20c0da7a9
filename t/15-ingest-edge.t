#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Ingest as real clients send it: compressed and chunked bodies, any
# Content-Type, CORS preflights, the key in the query, Amplitude's HTTP V2
# API and its reply shape, and event filters.  What the sender sees and
# what reaches Customer.io.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Compress::Gzip qw(gzip $GzipError);
use IO::Compress::Deflate qw(deflate $DeflateError);
use Cio::Test qw(basic);

my $t = Cio::Test->new;
my $cio = $t->standin(workspaces => ['site1:key1']);
my $json = $t->json;
my $url = $cio->url;

$t->config(http => <<"END")->run;
    %%ZONE:4m%%
    cio_flush_interval 20ms;

    log_format cio '\$status \$cio_status \$cio_event_type \$cio_events '
                   '"\$cio_reject_reason" \$request_uri';

    server {
        listen 127.0.0.1:%%PORT%%;

        cio_site_id site1;
        cio_api_key key1;
        cio_endpoint $url;

        location /cio/ {
            cio_ingest segment;
            cio_write_key wk_test;
            access_log %%TESTDIR%%/cio.log cio;
            cio_events_deny "Secret Event";
            cio_consent_category C0004;
        }

        location /only/ {
            cio_ingest segment;
            cio_cors_origins https://shop.example http://127.0.0.1:8000;
            cio_events_allow "Order Completed";
        }

        location /nocors/ {
            cio_ingest segment;
            cio_cors_origins off;
        }

        location /amp/ {
            cio_ingest amplitude;
            cio_write_key amp_key;
        }
    }
END

my %auth = (Authorization => basic('wk_test'));

sub gz {
    my ($data) = @_;
    my $out;
    gzip(\$data => \$out) or die $GzipError;
    return $out;
}

sub named {
    my ($name) = @_;
    return grep { ($_->{name} // '') eq $name } @{ $cio->items };
}

sub arrives {
    my ($name, $n) = @_;
    $n //= 1;
    my @got;
    Cio::Test::wait_until(sub { @got = named($name); @got >= $n }, 10);
    return @got;
}

# --- bodies as the SDKs encode them ----------------------------------------

my $ev = sub { $json->encode({ userId => 'u-1', event => $_[0] }) };

my ($st, $h, $r) = $t->post('/cio/v1/track', gz($ev->('Gzipped')),
    %auth, 'Content-Encoding' => 'gzip');
is($st, 200, 'gzip body: 200') or diag($r);
ok(arrives('Gzipped'), 'gzip body: the event arrived');

my $z;
my $plain = $ev->('Deflated');
deflate(\$plain => \$z) or die $DeflateError;
($st) = $t->post('/cio/v1/track', $z, %auth, 'Content-Encoding' => 'deflate');
is($st, 200, 'deflate (zlib) body: 200');
ok(arrives('Deflated'), 'deflate body: the event arrived');

# the Rudder node SDK: gzip labelled as a form
($st) = $t->post('/cio/v1/batch',
    gz($json->encode({ batch => [ { type => 'track', userId => 'u-1',
                                    event => 'Form Gzip' } ] })),
    %auth, 'Content-Type' => 'application/x-www-form-urlencoded',
    'Content-Encoding' => 'gzip');
is($st, 200, 'gzip labelled as a form: 200');
ok(arrives('Form Gzip'), 'gzip labelled as a form: arrived');

# analytics.js: text/plain with the key in the body
($st) = $t->post('/cio/v1/t',
    $json->encode({ userId => 'u-1', event => 'Plain', writeKey => 'wk_test' }),
    'Content-Type' => 'text/plain');
is($st, 200, 'text/plain body: 200');
ok(arrives('Plain'), 'text/plain body: arrived');

# analytics-kotlin: chunked and gzipped
my $gzb = gz($ev->('Chunked'));
my $half = int(length($gzb) / 2);
my $chunked = sprintf("%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n",
    $half, substr($gzb, 0, $half),
    length($gzb) - $half, substr($gzb, $half));
($st) = $t->http('POST', '/cio/v1/track', $chunked, %auth,
    'Transfer-Encoding' => 'chunked', 'Content-Encoding' => 'gzip',
    'Content-Type' => 'application/json');
is($st, 200, 'chunked gzip body: 200');
ok(arrives('Chunked'), 'chunked gzip body: arrived');

($st, $h, $r) = $t->post('/cio/v1/track', 'not gzip at all', %auth,
    'Content-Encoding' => 'gzip');
is($st, 400, 'broken gzip: 400');
like($r, qr/"success":false,"error":"[^"]*gzip/, 'broken gzip: reason');

# a gzip bomb: 20 MB of zeros in about 20 KB
($st, $h, $r) = $t->post('/cio/v1/batch', gz("\0" x (20 * 1024 * 1024)),
    %auth, 'Content-Encoding' => 'gzip');
is($st, 413, 'gzip bomb: 413 after inflating no more than the limit');
is_deeply(eval { $json->decode($r) }, { success => JSON::PP::false,
    error => 'body is larger than the limit after decompression' },
    'gzip bomb: reason');

# a call within 32 KB compressed but not inflated
($st) = $t->post('/cio/v1/track', gz($json->encode({ userId => 'u',
    event => 'Big', properties => { s => 'x' x 40000 } })), %auth,
    'Content-Encoding' => 'gzip');
is($st, 413, 'the call limit applies to the inflated size');

($st, $h, $r) = $t->post('/cio/v1/track', $ev->('Br'), %auth,
    'Content-Encoding' => 'br');
is($st, 415, 'unknown Content-Encoding: 415');

# RudderStack's beacon: the key in the query
($st) = $t->post('/cio/beacon/v1/batch?writeKey=wk_test',
    $json->encode({ batch => [ { type => 'track', userId => 'u-1',
                                 event => 'Beacon' } ] }),
    'Content-Type' => 'text/plain');
is($st, 200, 'writeKey in the query: 200');
ok(arrives('Beacon'), 'writeKey in the query: arrived');

($st) = $t->post('/cio/beacon/v1/batch?writeKey=nope',
    $json->encode({ batch => [ { type => 'track', userId => 'u-1',
                                 event => 'Beacon refused' } ] }));
is($st, 401, 'a wrong writeKey in the query: 401');
ok($t->settle($cio, headers => { Authorization => basic('wk_test') }),
    'settled');
is_deeply([ named('Beacon refused') ], [],
    'a wrong writeKey in the query: nothing sent');

# --- CORS -----------------------------------------------------------------

($st, $h, $r) = $t->http('OPTIONS', '/cio/v1/t', '',
    Origin => 'https://www.example.org',
    'Access-Control-Request-Method' => 'POST',
    'Access-Control-Request-Headers' => 'authorization,content-type,sentat');
is($st, 204, 'preflight: 204');
is($h->{'access-control-allow-origin'}, 'https://www.example.org',
    'preflight: the origin is echoed');
ok(!exists $h->{'access-control-allow-credentials'},
    'preflight: no credentials by default');
like($h->{'access-control-allow-headers'} // '',
    qr/^(?=.*\bauthorization\b)(?=.*\bcontent-type\b)(?=.*\bsentat\b)/,
    'preflight: the requested headers are allowed');
like($h->{'access-control-allow-methods'} // '', qr/POST/,
    'preflight: POST allowed');
ok(($h->{'access-control-max-age'} // 0) > 0, 'preflight: max-age');

($st, $h) = $t->post('/cio/v1/t', $ev->('Cors Post'), %auth,
    Origin => 'https://www.example.org');
is($st, 200, 'POST with an Origin: 200');
is($h->{'access-control-allow-origin'}, 'https://www.example.org',
    'POST with an Origin: Access-Control-Allow-Origin');

($st, $h) = $t->http('OPTIONS', '/only/v1/t', '',
    Origin => 'https://shop.example',
    'Access-Control-Request-Method' => 'POST');
is($st, 204, 'cio_cors_origins: a listed origin gets its preflight');
is($h->{'access-control-allow-origin'}, 'https://shop.example',
    'cio_cors_origins: and the header');

($st, $h, $r) = $t->http('OPTIONS', '/only/v1/t', '',
    Origin => 'https://evil.example',
    'Access-Control-Request-Method' => 'POST');
is($st, 403, 'cio_cors_origins: another origin is refused');
ok(!exists $h->{'access-control-allow-origin'},
    'cio_cors_origins: without CORS headers');

($st, $h) = $t->post('/only/v1/t', $ev->('Evil Post'),
    Origin => 'https://evil.example', 'Content-Type' => 'text/plain');
is($st, 403, 'cio_cors_origins: a simple POST from another origin is '
    . 'refused too');

($st, $h) = $t->post('/nocors/v1/t', $ev->('No Cors'),
    Origin => 'https://www.example.org');
is($st, 200, 'cio_cors_origins off: the call is served');
ok(!exists $h->{'access-control-allow-origin'},
    'cio_cors_origins off: no CORS headers');

# --- filters --------------------------------------------------------------
# twice: without messageIds (the tree mapper) and with them (the one-pass
# mapper, every SDK's path), each applying the filters itself

for my $pass (0, 1) {
    my $with = $pass ? ', with messageIds' : '';
    my $m = sub {
        $pass ? Cio::Test::with_message_id($_[0], "filter-$_[1]") : $_[0];
    };

    ($st, $h, $r) = $t->post('/cio/v1/batch', $m->({ batch => [
        { type => 'track', userId => 'u-2', event => 'Secret Event' },
        { type => 'track', userId => 'u-2', event => 'Consented Out',
          context => { consentManagement => {
              deniedConsentIds => [ 'C0002', 'C0004' ] } } },
        { type => 'track', userId => 'u-2', event => 'Kept' },
    ] }, 'batch'), %auth);
    is($st, 200, "filtered calls: 200$with");
    is_deeply(eval { $json->decode($r) }, { success => JSON::PP::true },
        "filtered calls are not reported as rejected$with");

    ($st) = $t->post('/only/v1/track',
        $m->({ userId => 'u-2', event => 'Not Listed' }, 'unlisted'));
    is($st, 200, "cio_events_allow: an unlisted event is answered 200$with");
    ($st) = $t->post('/only/v1/track',
        $m->({ userId => 'u-2', event => 'Order Completed' }, 'listed'));
    is($st, 200, "cio_events_allow: a listed event is answered 200$with");

    is(scalar(arrives('Kept', 1 + $pass)), 1 + $pass,
        "the unfiltered call of the batch arrived$with");
    is(scalar(arrives('Order Completed', 1 + $pass)), 1 + $pass,
        "the allowed event arrived$with");
}

# an allow list of events does not drop a deletion: it is no event
($st) = $t->post('/only/v1/track', { userId => 'u-gone', event => 'User Deleted' });
is($st, 200, 'cio_events_allow: a User Deleted is answered 200');
ok(Cio::Test::wait_until(sub {
    grep { ($_->{action} // '') eq 'delete'
           && ($_->{identifiers}{id} // '') eq 'u-gone' } @{ $cio->items };
}, 10), 'and deletes the person, although the list does not name it');

# --- Amplitude HTTP V2 ------------------------------------------------------

my $now_ms = time() * 1000;

($st, $h, $r) = $t->post('/amp/2/httpapi', {
    api_key => 'amp_key',
    events => [
        { user_id => 'amp-user-1', event_type => 'Song Played',
          time => $now_ms, insert_id => 'ins-1',
          event_properties => { genre => 'jazz' } },
        { device_id => 'device-12345', event_type => 'App Open',
          time => $now_ms },
    ],
});
is($st, 200, 'Amplitude: 200');
my $a = eval { $json->decode($r) } // {};
is($a->{code}, 200, 'Amplitude: "code":200 in the body');
is($a->{events_ingested}, 2, 'Amplitude: events_ingested');
ok(($a->{payload_size_bytes} // 0) > 0, 'Amplitude: payload_size_bytes');
ok(abs(($a->{server_upload_time} // 0) - $now_ms) < 60_000,
    'Amplitude: server_upload_time in ms');

my ($song) = arrives('Song Played');
is_deeply($song && $song->{identifiers}, { id => 'amp-user-1' },
    'Amplitude: user_id identifies the person');
is($song && $song->{attributes}{genre}, 'jazz',
    'Amplitude: event_properties are the attributes');
is($song && $song->{timestamp}, int($now_ms / 1000),
    'Amplitude: time in ms becomes seconds');
my ($open) = arrives('App Open');
is_deeply($open && $open->{identifiers}, { anonymous_id => 'device-12345' },
    'Amplitude: device_id is the anonymous id');

# Amplitude dedupes an insert_id per device: two devices' events with the
# same insert_id are two events, with two ids
($st) = $t->post('/amp/2/httpapi', {
    api_key => 'amp_key',
    events => [ map { { device_id => "device-$_", event_type => 'Buy',
                        time => $now_ms, insert_id => 'order-1' } } 'A', 'B' ],
});
is($st, 200, 'Amplitude: one insert_id on two devices: 200');
my @buys = arrives('Buy', 2);
is(scalar(keys %{{ map { (($_->{id} // '') => 1) } @buys }}), 2,
    'Amplitude: both arrive, with two dedupe ids');

($st, $h, $r) = $t->post('/amp/batch', {
    api_key => 'amp_key',
    events => [ { user_id => 'amp-user-2', event_type => 'Batch Route' } ],
});
is($st, 200, 'Amplitude /batch: 200');
ok(arrives('Batch Route'), 'Amplitude /batch: arrived');

($st, $h, $r) = $t->post('/amp/2/httpapi', {
    api_key => 'wrong', events => [ { user_id => 'x1234', event_type => 'E' } ],
});
is($st, 401, 'Amplitude, wrong api_key: 401');
is(eval { $json->decode($r)->{code} }, 401,
    'Amplitude, wrong api_key: the code is in the body');

($st, $h, $r) = $t->post('/amp/2/httpapi', {
    api_key => 'amp_key',
    events => [ { user_id => 'amp-user-3', event_type => 'Valid' },
                { user_id => 'amp-user-3' } ],
});
is($st, 400, 'Amplitude, an invalid event: 400 for the request');
$a = eval { $json->decode($r) } // {};
is($a->{code}, 400, 'Amplitude, an invalid event: code 400');
is_deeply($a->{events_with_missing_fields}, { event_type => [1] },
    'Amplitude, an invalid event: named by index, so the SDK drops it');

($st, $h, $r) = $t->post('/amp/2/httpapi', '{"api_key":', 'Content-Type' =>
    'application/json');
is($st, 400, 'Amplitude, bad JSON: 400');
is(eval { $json->decode($r)->{code} }, 400, 'Amplitude, bad JSON: code');

($st) = $t->post('/amp/v1/track', { userId => 'u', event => 'E' });
is($st, 404, 'an Amplitude location does not serve Segment routes');

# --- $cio_* variables in the access log -------------------------------------

$t->post('/cio/v1/track?log=1', { userId => 'u-7', event => 'Logged' }, %auth);
$t->post('/cio/v1/track?log=2', { userId => 'u-7' }, %auth);
$t->post('/cio/v1/track?log=3', { userId => 'u-7', event => 'E' },
         Authorization => basic('nope'));
$t->post('/cio/v1/batch?log=4', { batch => [
    { type => 'track', userId => 'u-7', event => 'Secret Event' } ] }, %auth);
$t->post('/cio/v1/batch?log=5', { batch => [
    { type => 'track', userId => 'u-7', event => 'B1' },
    { type => 'identify', userId => 'u-7' } ] }, %auth);
$t->post('/cio/v1/batch?log=6', { batch => [
    { type => 'track', userId => 'u-7' },
    { type => 'track', userId => 'u-7', event => 'Secret Event' } ] },
    %auth);

my %log;
Cio::Test::wait_until(sub {
    %log = map { /\?log=(\d)$/ ? ($1 => $_) : () }
        split /\n/, $t->read_file('cio.log');
    return keys %log == 6;
}, 10);
is($log{1}, '200 queued track 1 "-" /cio/v1/track?log=1',
    '$cio_status queued, $cio_event_type, $cio_events');
is($log{2}, '400 rejected track 1 "event is required" /cio/v1/track?log=2',
    '$cio_reject_reason');
is($log{3}, '401 unauthorized - 0 "invalid write key" /cio/v1/track?log=3',
    'unauthorized');
is($log{4}, '200 filtered batch 1 "-" /cio/v1/batch?log=4', 'filtered');
is($log{5}, '200 queued batch 2 "-" /cio/v1/batch?log=5', 'a batch');
is($log{6}, '200 rejected batch 2 "-" /cio/v1/batch?log=6',
    'a batch none of whose calls was queued, one invalid, one filtered');

# --- nothing filtered or refused reached Customer.io ----------------------

$t->post('/cio/v1/track', { userId => 'u-9', event => 'Last' }, %auth);
arrives('Last');

my %names = map { ($_->{name} // '') => 1 } @{ $cio->items };
ok(!$names{$_}, "'$_' did not reach Customer.io")
    for 'Secret Event', 'Consented Out', 'Not Listed', 'Evil Post', 'Valid',
        'Big';

$t->done;
