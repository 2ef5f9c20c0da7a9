#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Hostile input: every malformed, oversized, deeply nested, mistyped,
# compressed-bomb or slow body gets its documented 4xx, the workers never
# die (same pids at the end, no "[alert]" in the log), nothing refused
# reaches Customer.io, and no credential shows up in a log.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::INET;
use IO::Compress::Gzip qw(gzip $GzipError);
use Cio::Test qw(basic wait_until);

my $t = Cio::Test->new;
$t->allow_log(qr/\[error\].*client intended to send too large body: 3000000 bytes/);
my $cio = $t->standin(workspaces => ['site1:secret_api_key_1']);
my $json = $t->json;

$t->config(http => <<"END")->run;
    %%ZONE:8m%%
    cio_flush_interval 20ms;

    server {
        listen 127.0.0.1:%%PORT%%;
        client_body_timeout 3s;
        client_max_body_size 2m;

        location /cio/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key secret_api_key_1;
            cio_endpoint ${\ $cio->url };
            cio_write_key secret_write_key;
        }

        location /amp/ {
            cio_ingest amplitude;
            cio_site_id site1;
            cio_api_key secret_api_key_1;
            cio_endpoint ${\ $cio->url };
            cio_write_key secret_write_key;
        }
    }
END

my @workers;
wait_until(sub { @workers = $t->worker_pids; @workers == 2 }, 10);
is(scalar @workers, 2, 'two workers are running');

my %auth = (Authorization => basic('secret_write_key'));

sub gz {
    my ($data) = @_;
    my $out;
    gzip(\$data => \$out) or die $GzipError;
    return $out;
}

sub reason {
    my ($r) = @_;
    my $d = eval { $json->decode($r) } or return "not JSON: $r";
    return $d->{error} // '';
}

# [ name, path, body, extra headers, status, reason (string or regex) ]
my @cases = (
    [ 'truncated JSON', '/cio/v1/track', '{"userId":"u","event":"E"',
      {}, 400, 'invalid JSON' ],
    [ 'trailing garbage', '/cio/v1/track', '{"userId":"u","event":"E"} x',
      {}, 400, 'invalid JSON' ],
    [ 'two documents', '/cio/v1/track', '{"userId":"u"}{"event":"E"}',
      {}, 400, 'invalid JSON' ],
    [ 'a bare string', '/cio/v1/track', '"track"',
      {}, 400, 'body must be a JSON object' ],
    [ 'null', '/cio/v1/track', 'null', {}, 400, 'body must be a JSON object' ],
    [ 'NUL inside the body', '/cio/v1/track',
      qq({"userId":"u","event":"E"}\0{"x":1}), {}, 400, 'invalid JSON' ],
    [ 'NUL inside a string', '/cio/v1/track',
      qq({"userId":"u\0v","event":"E"}), {}, 400, 'invalid JSON' ],
    [ 'a userId 01, which cJSON alone reads as the person "1"',
      '/cio/v1/identify', '{"userId":01}', {}, 400, 'invalid JSON' ],
    [ 'a group call whose groupId is +7', '/cio/v1/group',
      '{"userId":"u","groupId":+7}', {}, 400, 'invalid JSON' ],
    [ 'a vertical tab between tokens', '/cio/v1/track',
      qq({"userId":"u",\x0b"event":"E"}), {}, 400, 'invalid JSON' ],
    [ 'a batch with a title cut inside an emoji (a lone surrogate)',
      '/cio/v1/batch', '{"batch":[{"type":"track","userId":"u",'
      . '"event":"SurA","messageId":"sur-a"},{"type":"track","userId":"v",'
      . '"event":"SurB","messageId":"sur-b","properties":'
      . '{"title":"x\\ud83d"}}]}', {}, 200, '' ],
    [ 'a userId with a lone surrogate', '/cio/v1/track',
      '{"userId":"u\\udc00","event":"E"}', {}, 400,
      'userId is not valid UTF-8' ],
    [ 'a \\u0000 in the context url that names a page', '/cio/v1/page',
      '{"userId":"u","context":{"page":{"url":"https://a\\u0000b"}}}', {},
      400, 'context.page.url contains a \\u0000 escape' ],
    [ 'a \\u0000 in a device token beside a context e-mail',
      '/cio/v1/track', '{"userId":"u","event":"Application Installed",'
      . '"context":{"traits":{"email":"a@b.co"},"device":{"token":'
      . '"tok\\u0000evil","type":"ios"}}}', {}, 400,
      'context.device.token contains a \\u0000 escape' ],
    [ 'userId twice (JSON.parse would take the second)', '/cio/v1/track',
      '{"userId":"alice","userId":"bob","event":"E"}', {}, 400,
      'userId appears twice' ],
    [ 'an identify named by an e-mail given twice', '/cio/v1/identify',
      '{"anonymousId":"a","traits":{"email":"a@x.co","email":"b@x.co"}}',
      {}, 400, 'traits.email appears twice' ],
    [ '10,000 levels of nesting', '/cio/v1/track',
      '{"userId":"u","event":"E","properties":' . ('[' x 10000)
      . (']' x 10000) . '}', {}, 400, 'invalid JSON' ],
    [ 'a 200-digit number as userId', '/cio/v1/track',
      '{"userId":' . ('9' x 200) . ',"event":"E"}', {}, 400,
      qr/too large|userId/ ],
    [ 'userId is an object', '/cio/v1/track',
      '{"userId":{"a":1},"event":"E"}', {}, 400,
      'userId or anonymousId is required' ],
    [ 'userId is an array', '/cio/v1/identify',
      '{"userId":["a"],"traits":{}}', {}, 400,
      'userId or anonymousId is required' ],
    [ 'event is a number', '/cio/v1/track', '{"userId":"u","event":5}',
      {}, 400, 'event is required' ],
    [ 'batch is a string', '/cio/v1/batch', '{"batch":"x"}',
      {}, 400, 'batch must be a non-empty array' ],
    [ 'a call is a number', '/cio/v1/batch', '{"batch":[1]}',
      {}, 200, '' ],
    [ '10,000 calls in one batch', '/cio/v1/batch',
      '{"batch":[' . join(',', ('{"type":"track"}') x 10000) . ']}',
      {}, 400, 'too many calls in batch (max 2500)' ],
    [ 'a batch context over 32 KB, gzipped to a few hundred bytes',
      '/cio/v1/batch',
      gz('{"context":{"x":[' . join(',', (0) x 120000) . ']},"batch":['
         . join(',', ('{"type":"track","userId":"u","event":"E",'
                      . '"messageId":"m"}') x 2500) . ']}'),
      { 'Content-Encoding' => 'gzip' }, 400,
      'batch context is larger than 32768 bytes' ],
    [ 'batch integrations over 32 KB', '/cio/v1/batch',
      '{"integrations":{"x":[' . join(',', (0) x 20000) . ']},"batch":['
      . '{"type":"track","userId":"u","event":"E"}]}', {}, 400,
      'batch integrations is larger than 32768 bytes' ],
    [ 'a single call over 32 KB', '/cio/v1/track',
      $json->encode({ userId => 'u', event => 'E',
                      properties => { s => 'x' x 40000 } }),
      {}, 413, 'call is larger than the limit' ],
    [ 'a batch over 500 KB', '/cio/v1/batch',
      $json->encode({ batch => [ map { { type => 'track', userId => 'u',
          event => 'E', properties => { s => 'x' x 30000 } } } 1 .. 20 ] }),
      {}, 413, 'batch is larger than the limit' ],
    [ 'a body over client_max_body_size', '/cio/v1/batch', 'x' x 3_000_000,
      {}, 413, undef ],   # nginx's own [error], allowed below
    [ 'gzip bomb', '/cio/v1/batch', gz(' ' x (50 * 1024 * 1024)),
      { 'Content-Encoding' => 'gzip' }, 413,
      'body is larger than the limit after decompression' ],
    [ 'truncated gzip', '/cio/v1/track',
      substr(gz('{"userId":"u","event":"E"}'), 0, 20),
      { 'Content-Encoding' => 'gzip' }, 400, 'body is not valid gzip data' ],
    [ 'gzip of garbage', '/cio/v1/track', gz("\xff\xfe\x00garbage"),
      { 'Content-Encoding' => 'gzip' }, 400, 'invalid JSON' ],
    [ 'an empty gzip body', '/cio/v1/track', '',
      { 'Content-Encoding' => 'gzip' }, 400, 'request body is empty' ],
    [ 'Amplitude: 2501 events, more than cio_max_batch_calls',
      '/amp/2/httpapi', $json->encode({ api_key => 'secret_write_key',
          events => [ ({ user_id => 'amp-user', event_type => 'E' })
                      x 2501 ] }),
      {}, 413, 'too many events in batch (max 2500)' ],
    [ 'Amplitude: events is an object', '/amp/2/httpapi',
      '{"api_key":"secret_write_key","events":{}}', {}, 400,
      'events must be a non-empty array' ],
    [ 'Amplitude: api_key is a number', '/amp/2/httpapi',
      '{"api_key":5,"events":[{"user_id":"abcdef","event_type":"E"}]}', {},
      400, 'api_key is missing' ],
);

# every case twice: as written, and with a messageId, as every SDK sends
# it, which takes the one-pass mapper's path (it must refuse, or hand the
# call to the tree mapper, exactly as the tree alone would)
sub with_mid {
    my ($body, $n) = @_;
    return $body =~ /^\{"/ ? qq({"messageId":"mid-hostile-$n",) . substr($body, 1)
        : $body;
}

my $n = 0;
for my $c (@cases, map { [ @$_ ] } @cases) {
    my ($name, $path, $body, $h, $status, $why) = @$c;
    if ($n++ >= @cases) {
        next if $body eq with_mid($body, $n);
        ($name, $body) = ("$name, with a messageId", with_mid($body, $n));
    }
    my %h = (%auth, %$h);
    delete $h{Authorization} if $path =~ m{^/amp/};
    my ($st, undef, $r) = $t->post($path, $body, %h,
        'Content-Type' => 'application/json');
    is($st, $status, "$name: $status");
    next unless defined $why;
    if (ref $why) {
        like(reason($r), $why, "$name: reason");
    } elsif ($status == 200) {
        ok(eval { $json->decode($r)->{success} }, "$name: answered in JSON");
    } else {
        is(reason($r), $why, "$name: reason");
    }
}

for my $mid ('', 'mid-hostile') {
    my $with = $mid ? ', with a messageId' : '';
    my $e = $mid ? 'M' : 'E';
    my %m = $mid ? (messageId => "$mid-evil") : ();
    my $m = $mid ? qq("messageId":"$mid-NAME",) : '';

    # --- strings that try to escape their JSON or an HTTP header ------------

    my $evil = "u\r\nSet-Cookie: x=1\r\n\r\n<script>\"\\\x{7f}";
    my ($st, $hdr, $r) = $t->post('/cio/v1/track', { userId => $evil,
        event => "$e\r\nX-Injected: 1", properties => { "k\"ey" => "v\r\n" },
        %m }, %auth);
    is($st, 200, "CR/LF and quotes in ids are data, not syntax$with");
    ok(!exists $hdr->{'set-cookie'} && !exists $hdr->{'x-injected'},
        "nothing reached the answer headers$with");

    my @items;
    wait_until(sub {
        @items = grep { ($_->{name} // '') =~ /^$e\r\n/ } @{ $cio->items };
    }, 10);
    is($items[0]{identifiers}{id}, $evil, "the id arrived intact, escaped$with");
    is($items[0]{attributes}{"k\"ey"}, "v\r\n",
        "the property arrived intact$with");

    # invalid UTF-8 is repaired, not forwarded
    ($st) = $t->post('/cio/v1/track', '{' . ($m =~ s/NAME/latin1/r)
        . qq("userId":"u","event":"Latin1$e","properties":{"k":"caf\xe9"}}),
        %auth);
    is($st, 200, "invalid UTF-8: accepted$with");
    wait_until(sub {
        @items = grep { ($_->{name} // '') eq "Latin1$e" } @{ $cio->items };
    }, 10);
    is($items[0]{attributes}{k}, "caf\x{fffd}",
        "invalid UTF-8 became U+FFFD$with");

    # but not in an id: "jos\xe9" and "jos\xe8" would be one person
    ($st, undef, $r) = $t->post('/cio/v1/track', '{'
        . ($m =~ s/NAME/latin1-id/r)
        . qq("userId":"jos\xe9","event":"Latin1 id$e"}), %auth);
    is($st, 400, "a userId that is not UTF-8: 400$with");
    is(reason($r), 'userId is not valid UTF-8', "and why$with");

    # a key a rule reads, twice: JSON.parse and Go would read the second,
    # cJSON the first, so the call is refused rather than read either way
    ($st, undef, $r) = $t->post('/cio/v1/track', '{'
        . ($m =~ s/NAME/dup-event/r)
        . qq("userId":"u","event":"Dup$e","event":"Other$e"}), %auth);
    is($st, 400, "an event name twice: 400$with");
    is(reason($r), 'event appears twice', "and why$with");

    # other duplicate keys: cJSON keeps the first, so does what reaches
    # Customer.io
    ($st) = $t->post('/cio/v1/track', '{' . ($m =~ s/NAME/dup/r)
        . qq("userId":"u","event":"Dup$e",)
        . '"properties":{"a":1,"a":2}}', %auth);
    is($st, 200, "duplicate keys: accepted$with");
    wait_until(sub {
        @items = grep { ($_->{name} // '') =~ /^(Dup|Other)$e$/ }
            @{ $cio->items };
    }, 10);
    is(scalar @items, 1, "duplicate keys: one event$with");
    is_deeply([ map { $_->{name} } @items ], ["Dup$e"], "the first key wins$with");
    is_deeply($items[0]{attributes}, { a => 1 }, "one attribute$with");
}

my $st;

# --- slow bodies -------------------------------------------------------------

# a client that sends half a body and stalls holds no worker: others are
# served meanwhile, and nginx closes it after client_body_timeout
my @slow;
for (1 .. 20) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port)
        or last;
    print $s "POST /cio/v1/track HTTP/1.1\r\nHost: x\r\n"
        . "Authorization: $auth{Authorization}\r\n"
        . "Content-Length: 1000\r\n\r\n{\"userId\":";
    push @slow, $s;
}
is(scalar @slow, 20, '20 stalled uploads are open');

($st) = $t->post('/cio/v1/track', { userId => 'u', event => 'Meanwhile' },
    %auth);
is($st, 200, 'a normal call is served while they stall');

# served before their timeout: all of them are still open at this point
my $open = grep {
    $_->blocking(0);
    !defined sysread($_, my $buf, 1) && $!{EAGAIN};
} @slow;
is($open, scalar @slow, 'and without waiting for them to time out');

my $closed = 0;
wait_until(sub {
    $closed = 0;
    for my $s (@slow) {
        $s->blocking(0);
        my $n = sysread($s, my $buf, 4096);
        $closed++ if defined $n && ($n == 0 || $buf =~ /^HTTP\/1.1 408/);
    }
    return $closed == @slow;
}, 10);
is($closed, scalar @slow, 'nginx ended every stalled upload');
close $_ for @slow;

# --- the workers survived, nothing refused was sent ---------------------------

($st) = $t->post('/cio/v1/track', { userId => 'u', event => 'Last' }, %auth);
is($st, 200, 'a last event after it all: 200');

is_deeply([ $t->worker_pids ], \@workers, 'no worker died or was replaced');

# the lone surrogates' batch was posted twice, as every case
$t->delivered_exactly($cio, { (map { $_ => 1 } "E\r\nX-Injected: 1",
    'Latin1E', 'DupE', "M\r\nX-Injected: 1", 'Latin1M', 'DupM',
    'Meanwhile', 'Last'), SurA => 2, SurB => 2 },
    'exactly the accepted events reached Customer.io',
    headers => \%auth);

# --- credentials stay out of logs -----------------------------------------

$cio->control({ status => 401, count => 2 });
($st) = $t->post('/cio/v1/track', { userId => 'u', event => 'After 401' },
    %auth);
is($st, 200, 'an event while Customer.io answers 401: 200');
is_deeply($cio->wait_names(['After 401'], 20), [],
    'it arrives once the key is taken again');

my $log = $t->read_file('error.log') . $t->read_file('access.log');
like($t->read_file('error.log'),
    qr/\[alert\].*cio: Customer\.io answered 401 for site "site1"/,
    'the 401 from Customer.io is an alert');
$t->allow_alert(qr/cio: Customer\.io answered 401 for site "site1"/);
unlike($log, qr/secret_api_key_1|secret_write_key/,
    'neither the API key nor the write key appears in a log');
unlike($log, qr/\Q@{[ basic('secret_write_key') =~ s{^Basic }{}r ]}\E/,
    'nor their base64 form');

$t->done;
