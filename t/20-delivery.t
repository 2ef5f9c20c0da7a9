#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Delivery: two locations feed two workspaces; events accepted while
# Customer.io is down arrive once it is back, also across a reload; a full
# queue answers 503 with Retry-After and loses nothing it accepted; a body
# nginx buffered to a temporary file is read whole.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(basic wait_until);

my %auth = (Authorization => basic('wk'));

sub names {
    my ($items) = @_;
    return [ sort map { $_->{name} // $_->{action} } @$items ];
}

# --- two workspaces ----------------------------------------------------------

{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1', 'site2:key2']);

    $t->config(http => <<"END")->run;
    %%ZONE%%
    cio_flush_interval 20ms;
    cio_endpoint ${\ $cio->url };
    cio_write_key wk;

    server {
        listen 127.0.0.1:%%PORT%%;
        cio_api_key key1;

        location /one/ {
            cio_ingest segment;
            cio_site_id site1;
        }

        location /two/ {
            cio_ingest segment;
            cio_site_id site2;
            cio_api_key key2;
        }
    }
END

    for my $n (1 .. 3) {
        my ($st) = $t->post('/one/v1/track',
            { userId => 'u', event => "one-$n" }, %auth);
        is($st, 200, "workspace one, event $n accepted");
        ($st) = $t->post('/two/v1/track',
            { userId => 'u', event => "two-$n" }, %auth);
        is($st, 200, "workspace two, event $n accepted");
    }

    $cio->wait_items(6, 10);
    ok($t->settle($cio, path => '/two/v1/track', headers => \%auth),
        'settled');

    is_deeply(names($cio->items('site1')), [qw(one-1 one-2 one-3)],
        'site1 received exactly its events');
    is_deeply(names([ grep { $_->{name} !~ /^settle-/ }
                      @{ $cio->items('site2') } ]), [qw(two-1 two-2 two-3)],
        'site2 received exactly its events');

    # the stand-in knows a request's workspace only from its credentials
    my @sent = @{ $cio->requests };
    is_deeply([ grep { $_->{status} != 200 } @sent ], [],
        'every request was answered 200 (no 401)');
    is_deeply({ map { $_->{site_id} => 1 } @sent }, { site1 => 1, site2 => 1 },
        'each workspace was sent with its own credentials');
    is_deeply([ grep { $_->{request} ne 'POST /api/v2/batch' } @sent ], [],
        'every request was POST /api/v2/batch');

    $t->done_part;
}

# --- Customer.io down, then back; a reload in between ----------------------

{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1']);

    $t->config(http => <<"END")->run;
    %%ZONE%%
    cio_flush_interval 20ms;
    cio_retry_backoff 50ms 300ms;
    cio_connect_timeout 1s;

    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_endpoint ${\ $cio->url };
        }
    }
END

    $cio->stop;

    for my $n (1 .. 5) {
        my ($st) = $t->post('/cio/v1/track',
            { userId => 'u', event => "down-$n" });
        is($st, 200, "event $n accepted while Customer.io is down");
    }

    ok(wait_until(sub {
        $t->read_file('error.log')
            =~ /\[warn\].*cio: sending \d+ events for site "site1" to "[^"]+" failed: .*retrying in \d+ ms/
    }, 10), 'the failed send is logged with a retry');

    ok($t->reload, 'reloaded while events wait');

    my ($st) = $t->post('/cio/v1/track', { userId => 'u', event => 'down-6' });
    is($st, 200, 'an event accepted after the reload');

    $cio->start;

    $cio->wait_names([map { "down-$_" } 1 .. 6], 15);
    $t->delivered_exactly($cio, [map { "down-$_" } 1 .. 6],
        'once Customer.io was back, across the reload');

    $t->done_part;
}

# --- a full queue ----------------------------------------------------------

{
    my $t = Cio::Test->new;
    my $port = Cio::Test::free_port();

    $t->config(http => <<"END")->run;
    %%ZONE:32k%%
    cio_flush_interval 20ms;
    cio_retry_backoff 50ms 200ms;

    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_endpoint http://127.0.0.1:$port;
        }
    }
END

    my ($accepted, $full, $hdr, $body) = (0, 0);

    # bounded: a 32k zone holds far fewer than 300 events of 1 KB
    for my $n (1 .. 300) {
        my ($st, $h, $b) = $t->post('/cio/v1/track',
            { userId => 'u', event => "e-$n",
              properties => { pad => 'x' x 1000 } });
        if ($st == 200) {
            $accepted++;
            next;
        }
        ($full, $hdr, $body) = ($st, $h, $b);
        last;
    }

    ok($accepted > 0, "$accepted events accepted before the queue filled");
    is($full, 503, 'a full queue answers 503');
    is($hdr->{'retry-after'}, '5', 'with Retry-After');
    is($body, '{"success":false,"error":"queue is full, retry later"}',
        'and a JSON reason');
    like($t->read_file('error.log'),
        qr/\[warn\].*cio: queue is full, 1 events refused with 503/,
        'the refusal is logged');

    my $cio = $t->standin(workspaces => ['site1:key1'], port => $port);
    is_deeply($cio->wait_names([map { "e-$_" } 1 .. $accepted], 15), [],
        'every accepted event was delivered');

    # the stand-in has them; the zone frees them once the answer is back
    my $st;
    wait_until(sub {
        ($st) = $t->post('/cio/v1/track', { userId => 'u', event => 'after' });
        return $st == 200;
    }, 10);
    is($st, 200, 'the drained queue accepts again');

    # a small event fits before the batch in flight settles: it waits for
    # that batch, its person's, and the settle sentinel (another person)
    # is no barrier for it
    is_deeply($cio->wait_names(['after'], 15), [], 'and delivers it');
    $t->delivered_exactly($cio, { (map { ("e-$_" => 1) } 1 .. $accepted),
        after => 1 },
        'the accepted events, once each; the refused one never');

    $t->done_part;
}

# --- a body buffered to a temporary file -------------------------------------

{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1']);

    $t->config(http => <<"END")->run;
    %%ZONE%%
    cio_flush_interval 20ms;

    server {
        listen 127.0.0.1:%%PORT%%;
        client_body_buffer_size 1k;

        location /cio/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_endpoint ${\ $cio->url };
        }
    }
END

    my @batch = map {
        { type => 'track', userId => "u$_", event => "file-$_",
          properties => { pad => 'y' x 200 } }
    } 1 .. 20;

    my ($st, undef, $b) = $t->post('/cio/v1/batch', { batch => \@batch });
    is($st, 200, 'a 5 KB batch through a 1 KB body buffer: 200');
    is($b, '{"success":true}', 'with every call accepted');

    like($t->read_file('error.log'),
        qr/a client request body is buffered to a temporary file/,
        'nginx did buffer it to a file');

    $cio->wait_items(20, 10);
    $t->delivered_exactly($cio, [map { "file-$_" } 1 .. 20],
        'a body from a temporary file');

    $t->done_part;
}

done_testing();
