#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Defects of the ingest location found under attack (issue 11): the write
# key in log lines, the key and the size checked before the body is read,
# CORS without credentials unless asked for, answers a sender can act on.
# Each part failed on the code before its fix.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::INET;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(time);
use Cio::Test qw(basic wait_until);

my $t = Cio::Test->new;
my $cio = $t->standin(workspaces => ['site1:key1']);
my $json = $t->json;
my $url = $cio->url;

my $good = 'wk_good_5e1b';
my $wrong_basic = 'wrong_basic_k3y';
my $wrong_query = 'wrong_query_k3y';

mkdir $t->dir . '/www';
mkdir $t->dir . '/www/private';
$t->write_file('www/private/index.html', "private\n");
$t->write_file('htpasswd', "alice:{PLAIN}alicepw\n");

$t->config(http => <<"END")->run;
    %%ZONE:4m%%
    cio_flush_interval 20ms;

    server {
        listen 127.0.0.1:%%PORT%%;

        cio_site_id site1;
        cio_api_key key1;
        cio_endpoint $url;
        cio_write_key $good;

        location /cio/ {
            cio_ingest segment;
        }

        location /small/ {
            cio_ingest segment;
            client_max_body_size 1k;
        }

        location /creds/ {
            cio_ingest segment;
            cio_cors_origins https://app.example;
            cio_cors_credentials on;
        }

        location /amp/ {
            cio_ingest amplitude;
        }

        location /private/ {
            root %%TESTDIR%%/www;
            auth_basic "private";
            auth_basic_user_file %%TESTDIR%%/htpasswd;
        }
    }
END

# nginx's own line for its client_max_body_size
$t->allow_log(qr/\[error\].*client intended to send too large body/);

my $port = $t->port;

sub raw {
    my ($req) = @_;
    return Cio::Test::raw_http($port, $req);
}

sub access_lines {
    return grep { length } split /\n/, $t->read_file('access.log');
}

my $track = $json->encode({ userId => 'u-1', event => 'Key Test' });
my $batch = $json->encode({ batch => [ { type => 'track', userId => 'u-1',
                                         event => 'Key Test' } ] });

# --- 11.7: no write key in any log line ---------------------------------------

my ($st, $h, $r);
my $n = 0;

($st) = $t->post('/cio/v1/track', $track,
    Authorization => basic($wrong_basic));
is($st, 401, 'a wrong key in Basic auth: 401');
$n++;

($st) = $t->post('/cio/v1/track', $track, Authorization => basic($good));
is($st, 200, 'the right key in Basic auth: 200');
$n++;

($st) = $t->post("/cio/beacon/v1/batch?writeKey=$wrong_query", $batch);
is($st, 401, 'a wrong ?writeKey=: 401');
$n++;

($st) = $t->post("/cio/beacon/v1/batch?a=1&writeKey=$good&b=2", $batch);
is($st, 200, 'the right ?writeKey=: 200');
$n++;

# an empty one is none: the body's is read
($st) = $t->post('/cio/v1/track?writeKey=', $json->encode({ userId => 'u-1',
    event => 'Key Test', writeKey => $good }));
is($st, 200, 'an empty ?writeKey= and the right key in the body: 200');
$n++;

my $auth = basic($good);
($st) = raw("POST /cio/v1/track HTTP/1.1\r\nHost: localhost\r\n"
    . "Authorization: $auth\r\nAuthorization: $auth\r\n"
    . "Connection: close\r\nContent-Length: " . length($track) . "\r\n\r\n"
    . $track);
is($st, 400, 'a duplicate Authorization header: 400 from nginx');
$n++;

($st) = raw("TRACE /cio/v1/track HTTP/1.1\r\nHost: localhost\r\n"
    . "Authorization: $auth\r\nConnection: close\r\n\r\n");
is($st, 405, 'TRACE: 405 from nginx');
$n++;

my $big = $json->encode({ userId => 'u-1', event => 'Big',
                          properties => { p => 'x' x 40000 } });
($st) = $t->post("/cio/v1/track?writeKey=$good", $big,
    Authorization => basic($good));
is($st, 413, 'a call over cio_max_call_size: 413');
$n++;

($st) = $t->post("/small/v1/track?writeKey=$good",
    $json->encode({ userId => 'u-1', event => 'x' x 2000 }),
    Authorization => basic($good));
is($st, 413, 'a body over client_max_body_size: 413 from nginx');
$n++;

($st) = $t->http('GET', '/private/', undef,
    Authorization => basic('alice', 'alicepw'));
is($st, 200, 'an auth_basic location of the same server: 200');
$n++;

ok(wait_until(sub { access_lines() >= $n }, 10),
    "every request has its access log line ($n)");

my @secrets = ($good, $wrong_basic, $wrong_query);
my @encoded = map { encode_base64("$_:", '') } $good, $wrong_basic;

for my $file ('access.log', 'error.log') {
    my @lines = split /\n/, $t->read_file($file);

    for my $s (@secrets) {
        my @bad = grep { index($_, $s) >= 0 } @lines;
        is_deeply(\@bad, [], "$file: no line holds the key $s");
    }

    # nginx's own info line for a duplicate header quotes both headers
    # (README, Security): the only place a Basic credential may be
    for my $s (@encoded) {
        my @bad = grep { index($_, $s) >= 0
                         && !/client sent duplicate header line/ } @lines;
        is_deeply(\@bad, [], "$file: no line holds the credential $s");
    }
}

my @access = access_lines();
is(scalar(grep { /"(?:POST|TRACE) \/(?:cio|small)\// && !/^\S+ - - \[/ }
              @access), 0,
    'access.log: $remote_user is "-" for every cio request, also those '
    . 'nginx refused before choosing a location');
ok((grep { /writeKey=\*\*\*&b=2/ } @access),
    'access.log: the query key reads "***", the other arguments stay');
ok((grep { /^\S+ - alice \[.*GET \/private\// } @access),
    'access.log: the auth_basic user of another location is logged')
    or diag(join "\n", @access);
ok($t->log_lines(qr/cio: invalid write key .*request: "POST \/cio\/beacon\/v1\/batch\?writeKey=\*\*\* HTTP\/1\.1"/),
    'error.log: the invalid key line shows the request, its key hidden');

# --- 11.8: the key and the size before the body ----------------------------

# Sends the head of a request, reads the first head of an answer (an
# interim "100 Continue" or the final one), waiting 5 s at most:
# (everything read, its status)
sub head_only {
    my ($head) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
        Timeout => 5) or die "connect: $!";
    $s->autoflush(1);
    print $s $head;
    my $got = '';
    my $deadline = time() + 5;
    while ($got !~ /\r\n\r\n/ && time() < $deadline) {
        my $rin = '';
        vec($rin, fileno($s), 1) = 1;
        next unless select(my $rout = $rin, undef, undef, 0.1) > 0;
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $got .= $buf;
    }
    close $s;
    my ($status) = $got =~ m{\AHTTP/1\.1 (\d+)};
    return ($got, $status // 0);
}

my $expect = "Expect: 100-continue\r\nContent-Type: application/json\r\n"
    . "Host: localhost\r\nConnection: close\r\n";

my ($got, $status) = head_only("POST /cio/v1/batch HTTP/1.1\r\n$expect"
    . 'Authorization: ' . basic($wrong_basic) . "\r\n"
    . "Content-Length: 100000\r\n\r\n");
is($status, 401, 'Expect: 100-continue with a wrong Basic key: 401');
unlike($got, qr/100 Continue/, 'and no "100 Continue" before it');

($got, $status) = head_only(
    "POST /cio/beacon/v1/batch?writeKey=$wrong_query HTTP/1.1\r\n$expect"
    . "Content-Length: 100000\r\n\r\n");
is($status, 401, 'Expect: 100-continue with a wrong ?writeKey=: 401');
unlike($got, qr/100 Continue/, 'and no "100 Continue" before it');

($got, $status) = head_only("POST /cio/v1/batch HTTP/1.1\r\n$expect"
    . 'Authorization: ' . basic($good) . "\r\n"
    . "Content-Length: 600000\r\n\r\n");
is($status, 413, 'Expect: 100-continue, Content-Length over '
    . 'cio_max_batch_size: 413');
unlike($got, qr/100 Continue/, 'and no "100 Continue" before it');

($got, $status) = head_only("POST /cio/v1/track HTTP/1.1\r\n$expect"
    . 'Authorization: ' . basic($good) . "\r\n"
    . "Content-Length: 40000\r\n\r\n");
is($status, 413, 'Content-Length over cio_max_call_size: 413 before the '
    . 'body');

($got, $status) = head_only("POST /cio/v1/track HTTP/1.1\r\n$expect"
    . 'Authorization: ' . basic($good) . "\r\n"
    . "Content-Length: 100\r\n\r\n");
is($status, 100, 'the right key within the limit: "100 Continue", the '
    . 'body is wanted');

# a wrong key with the body sent at once: nginx throws it away unread
my $upload = $json->encode({ batch => [ map { { type => 'track',
    userId => 'u-1', event => 'Unread', properties => { p => 'x' x 1000 } } }
    1 .. 150 ] });
my $before = () = $t->log_lines(qr/buffered to a temporary file/);
($st, undef, $r) = $t->post('/cio/v1/batch', $upload,
    Authorization => basic($wrong_basic));
is($st, 401, 'a wrong key with a 150 KB body: 401');
my $after = () = $t->log_lines(qr/buffered to a temporary file/);
is($after, $before, 'a wrong key: the body was not buffered to a '
    . 'temporary file');

my $chunked = $json->encode({ userId => 'u-1', event => 'Chunked',
                              properties => { p => 'x' x 40000 } });
($st) = $t->http('POST', '/cio/v1/track',
    sprintf("%x\r\n%s\r\n0\r\n\r\n", length $chunked, $chunked),
    Authorization => basic($good), 'Transfer-Encoding' => 'chunked');
is($st, 413, 'a chunked call over cio_max_call_size (no length to check '
    . 'before): 413 once read');

# --- 11.9: CORS without credentials, a list of headers ------------------------

($st, $h) = $t->http('OPTIONS', '/cio/v1/t', '',
    Origin => 'https://any.example',
    'Access-Control-Request-Method' => 'POST',
    'Access-Control-Request-Headers' => 'authorization,x-evil-header');
is($st, 204, 'preflight from any origin: 204');
is($h->{'access-control-allow-origin'}, 'https://any.example',
    'preflight: the origin is allowed');
ok(!exists $h->{'access-control-allow-credentials'},
    'preflight: no Access-Control-Allow-Credentials by default');
my @allowed = split /,\s*/, $h->{'access-control-allow-headers'} // '';
is_deeply([ sort @allowed ], [ sort qw(authorization content-type
    content-encoding anonymousid sentat x-retry-count rsa-retry-attempt
    rsa-since-last-attempt rsa-since-first-attempt rsa-retry-reason
    rsa-recovered) ],
    'preflight: the headers the SDKs send, not the requested ones echoed');

($st, $h) = $t->post('/cio/v1/t', $track, Authorization => basic($good),
    Origin => 'https://any.example');
is($st, 200, 'POST from any origin: 200');
ok(!exists $h->{'access-control-allow-credentials'},
    'POST: no Access-Control-Allow-Credentials by default');

($st, $h) = $t->http('OPTIONS', '/creds/v1/t', '',
    Origin => 'https://app.example',
    'Access-Control-Request-Method' => 'POST');
is($h->{'access-control-allow-credentials'}, 'true',
    'cio_cors_credentials on: the listed origin gets credentials');
($st, $h) = $t->post('/creds/v1/t', $track, Authorization => basic($good),
    Origin => 'https://app.example');
is($st, 200, 'cio_cors_credentials on: POST 200');
is($h->{'access-control-allow-credentials'}, 'true',
    'cio_cors_credentials on: and its POST too');

for my $c ([ 'without cio_cors_origins', '' ],
           [ 'with cio_cors_origins *', 'cio_cors_origins *;' ])
{
    my $u = Cio::Test->new;
    $u->config(http => <<"END");
    %%ZONE:1m%%
    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment;
            cio_site_id s;
            cio_api_key k;
            $c->[1]
            cio_cors_credentials on;
        }
    }
END
    my ($rc, $out) = $u->check_config;
    isnt($rc, 0, "cio_cors_credentials on $c->[0]: nginx -t fails");
    like($out, qr/"cio_cors_credentials on" needs a list of origins in "cio_cors_origins"/,
        "cio_cors_credentials on $c->[0]: and says why");
}

# --- 11.11: answers a sender can act on ----------------------------------------

($st) = $t->post('/cio/beacon/v1/batch?writeKey=wk%5Fgood%5f5e1b',
    $json->encode({ batch => [ { type => 'track', userId => 'u-1',
                                 event => 'Encoded Key' } ] }));
is($st, 200, 'a percent-encoded ?writeKey=: decoded, 200');
ok(!@{ $cio->wait_names(['Encoded Key'], 10) },
    'a percent-encoded ?writeKey=: delivered');
ok(wait_until(sub { grep { /writeKey=\*\*\* / } access_lines() }, 5),
    'a percent-encoded ?writeKey=: hidden in the access log too');

{
    # a zone of 16 pages; each call below is cut to some 1 KB of item,
    # packed back to back: 80 of them need more than all of its pages
    my $u = Cio::Test->new;
    my $uc = $u->standin(workspaces => ['site1:key1']);
    my $uurl = $uc->url;
    $u->config(http => <<"END")->run;
    %%ZONE:64k%%
    cio_flush_interval 20ms;
    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_endpoint $uurl;
        }
    }
END

    my $calls = sub {
        my ($n, $name) = @_;
        return $json->encode({ batch => [ map { { type => 'track',
            userId => 'u-1', event => "$name $_",
            properties => { p => 'x' x 3000 } } } 1 .. $n ] });
    };

    my ($ust, $uh, $ur) = $u->post('/cio/v1/batch', $calls->(80, 'Huge'));
    is($ust, 413, 'a batch larger than the whole zone: 413, not 503');
    ok(!exists $uh->{'retry-after'}, 'and no Retry-After');
    is(eval { $json->decode($ur)->{error} },
        'request is larger than the queue can ever hold',
        'and a reason that says why');
    ok($u->log_lines(qr/\[warn\].*cio: 80 events need at least \d+ bytes of the queue, which has \d+ in all: refused with 413/),
        'and a warn line that says what to change');

    ($ust) = $u->post('/cio/v1/batch', $calls->(3, 'Fits'));
    is($ust, 200, 'a batch that fits: 200');
    ok(!@{ $uc->wait_names([ map { "Fits $_" } 1 .. 3 ], 10) },
        'and it is delivered');

    $u->done_part;
}

# --- the mapper's leftovers: Amplitude's answers -------------------------------

($st, undef, $r) = $t->post('/amp/2/httpapi', { api_key => $good, events => [
    { user_id => 'amp-user-1', event_type => 'E', time => time() * 1000 },
    { device_id => 'abc', event_type => 'E', time => time() * 1000 },
    { user_id => 'amp-user-2', device_id => 'null',
      event_type => 'E', time => time() * 1000 },
    { user_id => 'amp-user-3', time => time() * 1000 },
] });
is($st, 400, 'Amplitude, invalid device_ids: 400');
my $a = eval { $json->decode($r) } // {};
is_deeply($a->{events_with_invalid_fields}, { device_id => [ 1, 2 ] },
    'Amplitude: invalid device_ids named under device_id, not event')
    or diag($r);
is_deeply($a->{events_with_missing_fields}, { event_type => [ 3 ] },
    'Amplitude: a missing event_type under event_type') or diag($r);

($st, undef, $r) = $t->post('/amp/2/httpapi',
    { events => [ { user_id => 'amp-user-1', event_type => 'E' } ] });
is($st, 400, 'Amplitude without api_key: 400');
is_deeply(eval { $json->decode($r) }, { code => 400,
    error => 'api_key is missing', missing_field => 'api_key' },
    'Amplitude without api_key: missing_field, as Amplitude answers')
    or diag($r);

# --- dead letters that could not be written are not counted as written ----

{
    # /dev/full: every write fails with ENOSPC
    my $u = Cio::Test->new(workers => 1);
    my $uc = $u->standin(workspaces => ['site1:key1']);
    my $uurl = $uc->url;
    $u->allow_log(
        qr/\[error\].*cio: Customer\.io refused \d+ of \d+ events for site "site1" \(207\)/,
        qr/\[error\].*cio: the batch of \d+ events for site "site1" rejected with 400/,
        qr/\[crit\].*cio: writing to the dead-letter file "\/dev\/full" failed/);
    $u->config(http => <<"END")->run;
    %%ZONE:1m%%
    cio_flush_interval 20ms;
    cio_dead_letter /dev/full;
    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_endpoint $uurl;
        }
    }
END

    my $calls = sub {
        return $json->encode({ batch => [ map { { type => 'track',
            userId => 'u-1', event => $_ } } @_ ] });
    };

    $uc->mode({ refuse_match => '^lost-' });
    my ($ust) = $u->post('/cio/v1/batch', $calls->(map { "lost-$_" } 1 .. 3));
    is($ust, 200, 'three events to be refused: 200');
    ok(wait_until(sub { $u->log_lines(qr/Customer\.io refused 3 of 3 events/) },
                  10), 'Customer.io refused them (207)');
    ok($u->log_lines(qr/\[error\].*cio: Customer\.io refused 3 of 3 events for site "site1" \(207\), 0 dead-lettered to \/dev\/full, 3 lost \(write failed\)$/),
        'the 207 line counts the lost dead letters apart')
        or diag(join "\n", $u->log_lines(qr/refused 3 of 3/));

    $uc->mode({ refuse_match => undef, poison_match => '^poison-' });
    ($ust) = $u->post('/cio/v1/batch',
        $calls->('poison-1', map { "fine-$_" } 1 .. 3));
    is($ust, 200, 'a batch with a poisoned event: 200');
    ok(wait_until(sub { $u->log_lines(qr/cio: the batch of 4 events/) }, 10),
        'Customer.io rejected it whole, it was split');
    ok($u->log_lines(qr/\[error\].*cio: the batch of 4 events for site "site1" rejected with 400 was sent again in \d+ pieces: 3 delivered, 0 dead-lettered to \/dev\/full, 1 lost \(write failed\), 0 queued again/),
        'the split line counts the lost dead letter apart')
        or diag(join "\n", $u->log_lines(qr/the batch of 4/));

    $u->done_part;
}

$t->done;
