#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The Customer.io stand-in itself: the Track API v2 contract it enforces
# (auth, limits, item rules, 207), HTTP/1.1 framing (keep-alive, chunked,
# Expect: 100-continue, concurrent and slow clients), its rate limit, the
# recording files and the control API. No nginx involved.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use POSIX qw(:sys_wait_h);
use Test::More;
use Time::HiRes qw(sleep time);
use Cio::Test;

my $JSON = JSON::PP->new->canonical;
my $dir = tempdir('cio-standin-XXXXXX', TMPDIR => 1, CLEANUP => 1);

# --- helpers ------------------------------------------------------------------

my @started;

sub start {
    my ($name, @args) = @_;
    my $rec = "$dir/$name.jsonl";
    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        close $r;
        open STDOUT, '>&', $w or die;
        open STDERR, '>', "$dir/$name.log" or die;
        exec $^X, "$FindBin::Bin/cio-standin.pl", '--listen', '127.0.0.1:0',
            '--record', $rec, @args;
        exit 127;
    }
    close $w;
    push @started, $pid;

    my ($line, $deadline) = ('', time + 10);
    my $sel = IO::Select->new($r);
    while ($line !~ /\n/ && time < $deadline) {
        next unless $sel->can_read(0.1);
        sysread($r, $line, 256, length $line) or last;
    }
    my ($port) = $line =~ /^listening on 127\.0\.0\.1:(\d+)$/m;
    return { pid => $pid, port => $port, rec => $rec, log => "$dir/$name.log",
             line => $line };
}

sub stop {
    my ($s) = @_;
    kill 'TERM', $s->{pid};
    my $deadline = time + 10;
    while (time < $deadline) {
        if (waitpid($s->{pid}, WNOHANG) == $s->{pid}) {
            @started = grep { $_ != $s->{pid} } @started;
            return 1;
        }
        sleep 0.02;
    }
    return 0;
}

END { kill 'KILL', @started if @started }

sub basic { 'Basic ' . encode_base64(join(':', @_), '') }

sub connect_to {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 5)
        or die "connect: $!";
    $s->autoflush(1);
    return $s;
}

sub request_text {
    my ($method, $path, $body, %h) = @_;
    $h{Host} //= 'cio';
    $h{'Content-Length'} //= length $body if defined $body;
    return "$method $path HTTP/1.1\r\n"
        . join('', map { "$_: $h{$_}\r\n" } sort keys %h) . "\r\n"
        . ($body // '');
}

my %rbuf;

# Reads one response; () on EOF or after $timeout seconds.
sub read_response {
    my ($s, $timeout) = @_;
    my $buf = \$rbuf{$s};
    $$buf //= '';
    my $deadline = time + ($timeout // 5);
    my $sel = IO::Select->new($s);
    while (1) {
        if ($$buf =~ /\r\n\r\n/) {
            my ($head) = $$buf =~ /^(.*?)\r\n\r\n/s;
            my ($st) = $head =~ m{^HTTP/1\.1 (\d{3})} or return ();
            my %h = map { /^([^:]+):\s*(.*)$/ ? (lc $1 => $2) : () }
                split /\r\n/, $head;
            my $len = $h{'content-length'} // 0;
            if (length $$buf >= length($head) + 4 + $len) {
                substr($$buf, 0, length($head) + 4, '');
                my $body = substr($$buf, 0, $len, '');
                return ($st, \%h, $body);
            }
        }
        my $left = $deadline - time;
        return () if $left <= 0 || !$sel->can_read($left);
        sysread($s, $$buf, 65536, length $$buf) or return ();
    }
}

# One request on its own connection, through the suite's own client; the
# framing tests below speak raw HTTP on sockets of their own.
sub http {
    my ($port, $method, $path, $body, %h) = @_;
    my ($st, $head, $b) = Cio::Test::raw_http($port,
        request_text($method, $path, $body, Connection => 'close', %h));
    return $st ? ($st, $head, $b) : ();
}

sub batch {
    my ($port, $items, $auth) = @_;
    my ($st, $h, $b) = http($port, 'POST', '/api/v2/batch',
        $JSON->encode({ batch => $items }),
        Authorization => $auth // basic('site1', 'key1'),
        'Content-Type' => 'application/json');
    return ($st, $h, $b && eval { $JSON->decode($b) });
}

sub lines {
    my ($file) = @_;
    open my $fh, '<', $file or return [];
    my @l = map { $JSON->decode($_) } grep { /\n\z/ } <$fh>;
    return \@l;
}

sub ev {
    my ($name, %more) = @_;
    return { type => 'person', identifiers => { id => 'u1' },
             action => 'event', name => $name, %more };
}

my $ULID = '01BX5ZZKBKACTAV9WEVGEMMVRY';

# --- start ---------------------------------------------------------------------

my $cio = start('main', '--workspace', 'site1:key1', '--workspace',
    'site2:key2', '--control');
chomp(my $line = $cio->{line});
ok($cio->{port}, "prints the real port: $line") or BAIL_OUT('no stand-in');
my $port = $cio->{port};

# --- 200, recording ------------------------------------------------------------

my @good = (
    { type => 'person', identifiers => { id => 'u1' }, action => 'identify',
      attributes => { plan => 'pro', 'ü' => 'ß' } },
    ev('Signed Up', timestamp => 1700000000, id => $ULID,
       attributes => { price => 29.99 }),
    { type => 'person', identifiers => { email => 'a@example.com' },
      action => 'page', name => '/pricing' },
);

my ($st, $h, $b) = batch($port, \@good);
is($st, 200, 'a valid batch: 200');
is_deeply($b, {}, 'with {}');
like($h->{'content-type'}, qr{^application/json}, 'JSON content type');

my $rec = lines($cio->{rec});
is(scalar @$rec, 3, 'three record lines');
is_deeply([ map { $_->{item} } @$rec ], \@good, 'the items as received');
is_deeply([ map { $_->{index} } @$rec ], [0, 1, 2], 'with their batch index');
ok(!grep({ $_->{site_id} ne 'site1' } @$rec), 'and the site id');
ok(!grep({ $_->{received_ms} !~ /^\d{13}$/ } @$rec), 'and received_ms');
my $seq1 = $rec->[0]{seq};
ok($seq1 >= 1 && !grep({ $_->{seq} != $seq1 } @$rec), 'one seq per request');

my $req = lines("$cio->{rec}.requests");
is(scalar @$req, 1, 'one request summary');
is_deeply([ @{ $req->[0] }{qw(seq request site_id status items accepted)} ],
    [$seq1, 'POST /api/v2/batch', 'site1', 200, 3, 3],
    'seq, request, site, status, items, accepted');
is($req->[0]{bytes}, length $JSON->encode({ batch => \@good }),
    'bytes of the body');

($st) = batch($port, [ ev('two') ], basic('site2', 'key2'));
is($st, 200, 'second workspace accepted');
is(lines($cio->{rec})->[-1]{site_id}, 'site2', 'recorded with its site id');

# --- 401 --------------------------------------------------------------------------

($st, undef, $b) = batch($port, \@good, basic('site1', 'wrong'));
is($st, 401, 'wrong key: 401');
is_deeply($b, { meta => { error => 'Unauthorized request' } }, '401 body');
($st) = batch($port, \@good, basic('site1', 'key2'));
is($st, 401, "another workspace's key: 401");
($st) = http($port, 'POST', '/api/v2/batch', '{"batch":[]}');
is($st, 401, 'no Authorization: 401');
is(scalar @{ lines($cio->{rec}) }, 4, '401s recorded nothing');

# --- 400 ------------------------------------------------------------------------

my %A = (Authorization => basic('site1', 'key1'));
for (['{"batch":[', 'bad JSON'], ['[1,2]', 'an array'],
     ['{"items":[]}', 'no batch'], ['{"batch":[]}', 'an empty batch'],
     ['{"batch":{}}', 'batch an object'], ["\xff\xfe", 'not UTF-8']) {
    my ($body, $what) = @$_;
    ($st, undef, $b) = http($port, 'POST', '/api/v2/batch', $body, %A);
    $b = eval { $JSON->decode($b) } || {};
    ok($st == 400 && $b->{errors}[0]{reason} eq 'invalid'
        && $b->{errors}[0]{field} eq 'batch', "$what: 400 invalid batch");
}

my $big = $JSON->encode({ batch => [ map { ev("e$_", attributes =>
    { pad => 'x' x 900 }) } 1 .. 520 ] });
ok(length $big > 500_000, 'a body over 500000 bytes');
($st, undef, $b) = http($port, 'POST', '/api/v2/batch', $big, %A);
is($st, 400, 'too large: 400');
is_deeply($JSON->decode($b), { errors => [ { reason => 'request_too_large',
    message => 'request must be smaller than 500kb' } ] }, 'request_too_large');

{
    my $s = connect_to($port);
    print $s request_text('POST', '/api/v2/batch', undef, %A,
        'Content-Length' => length $big, Expect => '100-continue');
    ($st) = read_response($s);
    is($st, 400, 'too large with Expect: 400 at once, no 100 Continue');
    close $s;
}

my $ok_big = $JSON->encode({ batch => [ map { ev("e$_", attributes =>
    { pad => 'x' x 900 }) } 1 .. 500 ] });
ok(length $ok_big < 500_000, 'a body just under 500000 bytes');
($st) = http($port, 'POST', '/api/v2/batch', $ok_big, %A);
is($st, 200, 'is accepted');

# --- 207: item rules ----------------------------------------------------------------

my @cases = (
    # [item, undef if valid else the field]
    [ ev('ok'), undef ],
    [ { %{ ev('x') }, identifiers => { id => 'u', email => 'a@b' } }, 'identifiers' ],
    [ { %{ ev('x') }, identifiers => { id => 42 } }, undef ],
    [ { %{ ev('x') }, identifiers => { email => 42 } }, 'identifiers.email' ],
    [ { %{ ev('x') }, identifiers => { id => '' } }, 'identifiers.id' ],
    [ { %{ ev('x') }, identifiers => { id => 'x' x 151 } }, 'identifiers.id' ],
    [ { %{ ev('x') }, identifiers => { id => 'x' x 150 } }, undef ],
    [ { %{ ev('x') }, identifiers => { anonymous_id => 'anon-1' } }, undef ],
    [ { %{ ev('x') }, identifiers => { user_id => 'u' } }, 'identifiers' ],
    [ { %{ ev('x') }, type => 'people' }, 'type' ],
    [ { %{ ev('x') }, action => 'identify_anonymous' }, 'action' ],
    [ ev(''), 'name' ],
    [ ev('n' x 101), 'name' ],
    [ ev('é' x 50), undef ],
    [ ev('é' x 51), 'name' ],
    [ ev('x', timestamp => 1700000000000), 'timestamp' ],
    [ ev('x', timestamp => '1700000000'), 'timestamp' ],
    [ ev('x', timestamp => 1700000000.5), 'timestamp' ],
    [ ev('x', id => 'not-a-ulid'), 'id' ],
    [ ev('x', attributes => [1]), 'attributes' ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'identify',
        attributes => { map { ("a$_" => $_) } 1 .. 301 } }, 'attributes' ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'identify',
        attributes => { 'k' x 151 => 1 } }, 'attributes.' . 'k' x 151 ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'identify',
        attributes => { v => 'v' x 1001 } }, 'attributes.v' ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'identify',
        attributes => { v => 'v' x 1000 } }, undef ],
    [ { type => 'person', action => 'merge', primary => { id => 'a' },
        secondary => { email => 'b@c' } }, undef ],
    [ { type => 'person', action => 'merge', primary => { id => 'a' },
        secondary => { anonymous_id => 'x' } }, 'secondary' ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'add_device',
        device => { token => 't', platform => 'ios' } }, undef ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'add_device',
        device => { platform => 'ios' } }, 'device.token' ],
    [ { type => 'person', identifiers => { id => 'u' },
        action => 'delete_device', device => { token => 't' } }, undef ],
    [ { type => 'object', identifiers => { object_type_id => '1',
        object_id => 'acme' }, action => 'identify',
        cio_relationships => [ { identifiers => { id => 'u' } } ] }, undef ],
    [ { type => 'object', identifiers => { object_type_id => '1' },
        action => 'identify' }, 'identifiers' ],
    [ { type => 'object', identifiers => { object_type_id => '1',
        object_id => 'o' x 151 }, action => 'identify' },
      'identifiers.object_id' ],
    [ { type => 'object', identifiers => { cio_object_id => 'c1' },
        action => 'delete' }, undef ],
    [ { type => 'delivery', identifiers => { id => 'd1' }, action => 'event',
        name => 'opened' }, undef ],
    [ ev('x', attributes => { pad => 'p' x 33000 }), '' ],
    [ 'a string', '' ],

    # unknown keys, at the top and inside a device or a relationship
    [ ev('x', data => {}), 'data' ],
    [ ev('x', anonymous_id => 'a'), 'anonymous_id' ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'identify',
        timestamp => 1700000000, name => 'x' }, 'name' ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'add_device',
        device => { token => 't', id => 't' } }, 'device.id' ],
    [ { type => 'object', identifiers => { object_type_id => '1',
        object_id => 'acme' }, action => 'identify',
        cio_relationships => [ { identifiers => { id => 'u' }, role => 1 } ] },
      'cio_relationships.0.role' ],
    [ { type => 'delivery', identifiers => { id => 'd1', email => 'e' },
        action => 'event', name => 'opened' }, 'identifiers.id' ],

    # limits on event data, at every depth, and on other attributes
    [ ev('x', attributes => { v => 'v' x 1001 }), 'attributes.v' ],
    [ ev('x', attributes => { v => 'v' x 1000 }), undef ],
    [ ev('x', attributes => { 'k' x 151 => 1 }), 'attributes.' . 'k' x 151 ],
    [ ev('x', attributes => { map { ("a$_" => $_) } 1 .. 301 }), 'attributes' ],
    [ ev('x', attributes => { map { ("a$_" => $_) } 1 .. 300 }), undef ],
    [ ev('x', attributes => { o => { p => [ 1, 'v' x 1001 ] } }),
      'attributes.o.p.1' ],
    [ ev('x', attributes => { o => { 'k' x 151 => 1 } }),
      'attributes.o.' . 'k' x 151 ],
    [ ev('x', attributes => { o => { p => [ 'é' x 500 ] } }), undef ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'identify',
        attributes => { o => { v => 'v' x 1001 } } }, 'attributes.o.v' ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'add_device',
        device => { token => 't', attributes => { v => 'v' x 1001 } } },
      'device.attributes.v' ],
    [ { type => 'object', identifiers => { object_type_id => '1',
        object_id => 'acme' }, action => 'identify',
        attributes => { 'k' x 151 => 1 } }, 'attributes.' . 'k' x 151 ],
    [ { type => 'object', identifiers => { object_type_id => '1',
        object_id => 'acme' }, action => 'identify',
        cio_relationships => [ { identifiers => { id => 'u' },
            relationship_attributes => { r => 'r' x 1001 } } ] },
      'cio_relationships.0.relationship_attributes.r' ],
    [ { type => 'object', identifiers => { object_type_id => '1',
        object_id => 'acme' }, action => 'identify',
        cio_relationships => [ { identifiers => { id => 'u' x 151 } } ] },
      'cio_relationships.0.identifiers.id' ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'identify',
        cio_relationships => [ { identifiers => { id => 'u2' } } ] },
      'cio_relationships.0.identifiers' ],

    # integer seconds wherever the API takes a time
    [ { type => 'person', identifiers => { id => 'u' }, action => 'identify',
        attributes => { created_at => 1700000000 } }, undef ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'identify',
        attributes => { created_at => 1700000000000 } },
      'attributes.created_at' ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'identify',
        attributes => { created_at => '2023-11-14T22:13:20Z' } },
      'attributes.created_at' ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'identify',
        attributes => { _timestamp => 1700000000.5 } },
      'attributes._timestamp' ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'add_device',
        device => { token => 't', last_used => 1700000000 } }, undef ],
    [ { type => 'person', identifiers => { id => 'u' }, action => 'add_device',
        device => { token => 't', last_used => 1700000000000 } },
      'device.last_used' ],
);

($st, undef, $b) = batch($port, [ map { $_->[0] } @cases ]);
is($st, 207, 'a batch with invalid items: 207');
my %err = map { $_->{batch_index} => $_ } @{ $b->{errors} || [] };
for my $i (0 .. $#cases) {
    my $want = $cases[$i][1];
    my $got = $err{$i};
    if (!defined $want) {
        ok(!$got, "item $i valid") or diag($JSON->encode($got));
    } else {
        ok($got && $got->{reason} eq 'invalid' && $got->{field} eq $want
            && length $got->{message}, "item $i refused, field '$want'")
            or diag($JSON->encode($got // {}));
    }
}
$rec = lines($cio->{rec});
my $seq = $rec->[-1]{seq};
is_deeply([ map { $_->{index} } grep { $_->{seq} == $seq } @$rec ],
    [ grep { !defined $cases[$_][1] } 0 .. $#cases ],
    'exactly the valid items were recorded');
{
    open my $fh, '<', $cio->{rec} or die;
    my @raw = grep { /"seq":$seq,/ } <$fh>;
    like($raw[1], qr/"identifiers":\{"id":42\}/,
        'a numeric id is recorded as a number');
}
is_deeply([ @{ lines("$cio->{rec}.requests")->[-1] }{qw(status items accepted)} ],
    [207, scalar @cases, scalar grep { !defined $_->[1] } @cases],
    'the summary counts the refused items');

# --- /api/v2/entity, region, 404 -------------------------------------------------

($st, undef, $b) = http($port, 'POST', '/api/v2/entity',
    $JSON->encode(ev('single')), %A);
is_deeply([$st, $b], [200, '{}'], 'entity: 200 {}');
is(lines($cio->{rec})->[-1]{item}{name}, 'single', 'entity recorded');
is(lines("$cio->{rec}.requests")->[-1]{request}, 'POST /api/v2/entity',
    'the summary names the path');
($st, undef, $b) = http($port, 'POST', '/api/v2/entity',
    $JSON->encode(ev('n' x 101)), %A);
is($st, 400, 'an invalid entity: 400');
is($JSON->decode($b)->{errors}[0]{field}, 'name', 'naming the field');

($st, undef, $b) = http($port, 'GET', '/api/v1/accounts/region', undef, %A);
is($st, 200, 'region: 200');
is_deeply($JSON->decode($b), { url => "http://127.0.0.1:$port",
    region => 'us', environment_id => 1 }, 'region body');
($st) = http($port, 'GET', '/api/v1/accounts/region');
is($st, 401, 'region without auth: 401');

for (['GET', '/api/v2/batch'], ['POST', '/api/v1/customers/1/events'],
     ['PUT', '/']) {
    ($st, undef, $b) = http($port, @$_, '{}', %A);
    is_deeply([$st, $b], [404, '{"errors":[{"message":"not found"}]}'],
        "$_->[0] $_->[1]: 404");
}

# --- HTTP/1.1 framing ------------------------------------------------------------

{
    my $s = connect_to($port);
    my $body = $JSON->encode({ batch => [ ev('ka1') ] });
    print $s request_text('POST', '/api/v2/batch', $body, %A);
    my ($st1, $h1) = read_response($s);
    print $s request_text('POST', '/api/v2/batch', $body =~ s/ka1/ka2/r, %A,
        Connection => 'close');
    my ($st2, $h2) = read_response($s);
    is_deeply([$st1, $st2], [200, 200], 'keep-alive: two requests, one connection');
    is($h1->{connection}, 'keep-alive', 'first answer keeps the connection');
    is($h2->{connection}, 'close', 'Connection: close is honoured');
    ok(!read_response($s, 3), 'and the server closes');
    close $s;

    # two requests in one write (pipelined)
    $s = connect_to($port);
    print $s request_text('GET', '/nope', undef)
        . request_text('POST', '/api/v2/batch', $body, %A);
    my @st = ((read_response($s))[0], (read_response($s))[0]);
    is_deeply(\@st, [404, 200], 'pipelined requests answered in order');
    close $s;
}

{
    my $body = $JSON->encode({ batch => [ ev('chunked') ] });
    my $chunked = join('', map { sprintf("%x\r\n%s\r\n", length, $_) }
        unpack('(a7)*', $body)) . "0\r\n\r\n";
    my $s = connect_to($port);
    print $s request_text('POST', '/api/v2/batch', undef, %A,
        'Transfer-Encoding' => 'chunked');
    print $s substr($chunked, 0, 20);
    sleep 0.05;
    print $s substr($chunked, 20);
    ($st) = read_response($s);
    is($st, 200, 'a chunked body in pieces: 200');
    is(lines($cio->{rec})->[-1]{item}{name}, 'chunked', 'and recorded');

    print $s request_text('POST', '/api/v2/batch', undef, %A,
        'Transfer-Encoding' => 'chunked') . "zz\r\n";
    ($st) = read_response($s);
    is($st, 400, 'broken chunked framing: 400');
    close $s;
}

{
    my $body = $JSON->encode({ batch => [ ev('expect') ] });
    my $s = connect_to($port);
    print $s request_text('POST', '/api/v2/batch', undef, %A,
        'Content-Length' => length $body, Expect => '100-continue');
    my $sel = IO::Select->new($s);
    my $got = '';
    while ($got !~ /\r\n\r\n/ && $sel->can_read(5)) {
        sysread($s, $got, 1024, length $got) or last;
    }
    is($got, "HTTP/1.1 100 Continue\r\n\r\n", 'Expect: 100-continue gets 100 first');
    print $s $body;
    ($st) = read_response($s);
    is($st, 200, 'then the final 200');
    close $s;
}

{
    # a slow client holding half a request does not block the others
    my $slow = connect_to($port);
    print $slow "POST /api/v2/batch HTTP/1.1\r\nHost: x\r\n";
    my @socks = map { connect_to($port) } 1 .. 50;
    my $body = $JSON->encode({ batch => [ ev('many') ] });
    print $_ request_text('POST', '/api/v2/batch', $body, %A) for @socks;
    my @ok = grep { ((read_response($_))[0] // 0) == 200 } @socks;
    is(scalar @ok, 50, '50 concurrent connections, beside a stalled one, all 200');
    close $_ for @socks, $slow;

    my $s = connect_to($port);
    print $s "BLAH\r\n\r\n";
    ($st) = read_response($s);
    is($st, 400, 'a malformed request line: 400');
    close $s;
    ($st) = http($port, 'GET', '/api/v1/accounts/region', undef, %A);
    is($st, 200, 'and the stand-in still answers');
}

# --- control: faults and stats -----------------------------------------------------

sub fault {
    my ($what) = @_;
    my ($st) = http($port, 'POST', '/__standin/fault', $JSON->encode($what));
    return $st;
}

sub stats {
    my (undef, undef, $b) = http($port, 'GET', '/__standin/stats');
    return $JSON->decode($b);
}

my $before = stats();
is(fault({ status => 500, count => 2 }), 200, 'fault accepted');
my $n = @{ lines($cio->{rec}) };
my @st = map { (batch($port, [ ev("f$_") ]))[0] } 1 .. 3;
is_deeply(\@st, [500, 500, 200], 'status 500 twice, then normal');
is(scalar @{ lines($cio->{rec}) }, $n + 1, 'the 500s recorded nothing');

fault({ status => 429, count => 1 });
($st, $h, $b) = batch($port, [ ev('r') ]);
is_deeply([$st, $b], [429, { meta => { error => 'rate limited' } }], 'injected 429');

fault({ refuse_index => [1, 3], count => 1 });
($st, undef, $b) = batch($port, [ map { ev("ri$_") } 0 .. 4 ]);
is($st, 207, 'refuse_index: 207');
is_deeply([ map { $_->{batch_index} } @{ $b->{errors} } ], [1, 3],
    'refusing exactly those indexes');
is_deeply([ map { $_->{item}{name} } @{ lines($cio->{rec}) }[-3 .. -1] ],
    [qw(ri0 ri2 ri4)], 'recording the others');

fault({ close => 1, count => 1 });
{
    my $s = connect_to($port);
    print $s request_text('POST', '/api/v2/batch',
        $JSON->encode({ batch => [ ev('closed') ] }), %A);
    ok(!read_response($s, 5), 'close: the connection closes with no answer');
    close $s;
}
isnt(lines($cio->{rec})->[-1]{item}{name}, 'closed', 'and nothing recorded');

fault({ delay_ms => 800, count => 1 });
{
    my $t0 = time;
    my $slow = connect_to($port);
    print $slow request_text('POST', '/api/v2/batch',
        $JSON->encode({ batch => [ ev('delayed') ] }), %A);
    sleep 0.1;
    ($st) = batch($port, [ ev('quick') ]);
    my $quick = time - $t0;
    is($st, 200, 'while one answer is delayed, another request gets 200');
    ok($quick < 0.6, sprintf('at once (%.2fs)', $quick));
    ($st) = read_response($slow, 5);
    my $late = time - $t0;
    is($st, 200, 'the delayed request gets its 200');
    ok($late >= 0.75, sprintf('after the delay (%.2fs)', $late));
    close $slow;
    is_deeply([ map { $_->{item}{name} } @{ lines($cio->{rec}) }[-2, -1] ],
        [qw(quick delayed)], 'both recorded, in the order answered');
}

fault({ status => 503, count => 5 });
is(fault({ reset => 1 }), 200, 'reset accepted');
($st) = batch($port, [ ev('after reset') ]);
is($st, 200, 'reset cleared the pending faults');

is(fault([1]), 400, 'a fault that is not an object: 400');

# the switches for what the real API has not confirmed
{
    my $anon = ev('anon', identifiers => { anonymous_id => 'a-1' });
    my $deep = ev('deep', attributes => { o => { v => 'v' x 1001 } });
    my @st;
    push @st, (batch($port, [ $anon, $deep ]))[0];
    http($port, 'POST', '/__standin/mode',
        $JSON->encode({ anonymous_id => 0, nested_limits => 0 }));
    ($st, undef, $b) = batch($port, [ $anon, $deep ]);
    push @st, $st;
    is_deeply(\@st, [207, 207], 'the switches flip what is refused');
    is_deeply([ map { $_->{field} } @{ $b->{errors} } ], ['identifiers'],
        'anonymous_id 0: {anonymous_id} refused; nested_limits 0: '
        . 'a long nested value accepted');
    http($port, 'POST', '/__standin/mode',
        $JSON->encode({ anonymous_id => undef, nested_limits => undef }));
    is((batch($port, [ $anon ]))[0], 200, 'cleared: anonymous_id accepted');
}

is_deeply([ @{ stats() }{qw(rate burst)} ], [1000, 3000],
    'a rate limit is on by default: 1000/s, bursts of 3000');

my $after = stats();
is($after->{requests} - $before->{requests}, 12, 'stats: requests');
is($after->{by_status}{500} - ($before->{by_status}{500} // 0), 2,
    'stats: by_status');
is($after->{items_accepted} - $before->{items_accepted}, 10,
    'stats: items_accepted');

ok(stop($cio), 'SIGTERM stops it');
my $log = do { local (@ARGV, $/) = $cio->{log}; <> };
unlike($log, qr/ at \S+ line \d+/, 'no Perl warning or error on stderr');

# --- control routes off without --control; rate limit -------------------------------

my $rl = start('rate', '--workspace', 'site1:key1', '--workspace', 'site2:key2',
    '--rate', 2, '--burst', 3);
$port = $rl->{port};
ok($port, 'a stand-in with --rate 2 --burst 3');
($st) = http($port, 'GET', '/__standin/stats');
is($st, 404, 'control routes are off without --control');

@st = map { (batch($port, [ ev("b$_") ]))[0] } 1 .. 4;
is_deeply(\@st, [200, 200, 200, 429], 'a burst of 3, then 429');
($st, $h, $b) = batch($port, [ ev('x') ]);
is_deeply([$st, $b], [429, { meta => { error => 'rate limited' } }], '429 body');
ok(!exists $h->{'retry-after'}, 'no Retry-After header');
($st) = batch($port, [ ev('other') ], basic('site2', 'key2'));
is($st, 200, 'the limit is per workspace');

my $deadline = time + 5;
do { sleep 0.1; ($st) = batch($port, [ ev('refill') ]) }
    until $st == 200 || time > $deadline;
is($st, 200, 'tokens refill at the rate');
is(scalar(grep { $_->{status} == 429 } @{ lines("$rl->{rec}.requests") }) >= 2,
    1, '429s are in the request summaries');
ok(!grep({ $_->{item}{name} eq 'x' } @{ lines($rl->{rec}) }),
    'and recorded nothing');

ok(stop($rl), 'the rate-limited stand-in stops');
like(do { local (@ARGV, $/) = $rl->{log}; <> },
    qr{^standin: POST /api/v2/batch 200 items=1 bytes=\d+$}m,
    'one log line per request on stderr');

my $q = start('quiet', '--workspace', 'site1:key1', '--quiet', '--control',
    '--rate', 0);
is_deeply([ @{ $JSON->decode((http($q->{port}, 'GET', '/__standin/stats'))[2]) }{
    qw(rate burst)} ], [0, 0], '--rate 0: no rate limit');
batch($q->{port}, [ ev('q') ]);
ok(stop($q), 'quiet stand-in stopped');
is(-s $q->{log}, 0, '--quiet logs nothing');

done_testing();
