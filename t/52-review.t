#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Defects found by a review of the C code; each part failed on the code
# before its fix (the dead-letter one under ASan or Valgrind):
#  - a batch Customer.io rejected whole, whose answer a worker only reads
#    as it exits, goes back to the queue to be split by the next worker,
#    as a piece of a split does, rather than to the dead-letter file whole
#    with the good events in it;
#  - a request nginx refuses in a cio location and sends to an error page
#    (a body over client_max_body_size, error_page 413) is logged without
#    its write key as $remote_user;
#  - a dead letter of a site id with control characters fits its line
#    (they are escaped to six bytes each);
#  - an "if" or "limit_except" block inside a cio location runs the
#    location's handler (the "if" crashed the worker).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use POSIX qw(:sys_wait_h);
use Test::More;
use Cio::Test qw(basic wait_until);
use Cio::Load qw(dead_letters);
use Cio::Gdb qw($GDB proc_field stop_at stopped release);

sub conf {
    my ($url, $site, $extra) = @_;
    return <<"END";
    cio_zone zone=cio:1m;
    cio_flush_interval 20ms;
    cio_retry_backoff 20ms 100ms;
    cio_drain_timeout 0;
    $extra

    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment;
            cio_site_id "$site";
            cio_api_key key1;
            cio_endpoint $url;
        }
    }
END
}

# one server of site1 with a write key, around the locations given
sub keyed_server {
    my ($url, $key, $locations) = @_;
    return <<"END";
    cio_zone zone=cio:1m;
    cio_flush_interval 20ms;

    server {
        listen 127.0.0.1:%%PORT%%;
        cio_site_id site1;
        cio_api_key key1;
        cio_endpoint $url;
        cio_write_key $key;

$locations
    }
END
}

sub event {
    my ($name) = @_;
    return { type => 'track', userId => 'u1', event => $name,
             messageId => "m-$name" };
}

# --- a whole-batch 400 read by a worker that exits ---------------------------

SKIP: {
    skip 'gdb cannot attach under Valgrind', 8 if $ENV{CIO_VALGRIND};
    Cio::Test::skip_unless_ci('gdb is needed to stop the sender thread '
        . 'with an answer in hand (scripts/deps.sh)', 8) unless $GDB;

    my $t = Cio::Test->new(workers => 1);
    my $cio = $t->standin(workspaces => ['site1:key1']);
    my $file = $t->dir . '/dead.jsonl';
    $t->config(http => conf($cio->url, 'site1', "cio_dead_letter $file;"))
        ->run;
    $t->allow_log(
        qr/\[error\].*cio: the batch of 2 events for site "site1" rejected with 400 was sent again in \d+ pieces: 1 delivered, 1 dead-lettered to /,
        qr/\[error\].*cio: Customer\.io rejected a batch of 2 events for site "site1" with 400/);

    $cio->mode({ poison_match => '^poison' });

    my ($w) = $t->worker_pids;
    my $gdb = stop_at($t, $w, 'ngx_http_cio_sender_finish');
    ok(wait_until(sub {
        (proc_field($w, 'TracerPid') // 0) == $gdb
    }, 20), 'gdb attached to the worker') or diag($t->read_file('gdb.log'));

    my ($st) = $t->post('/cio/v1/batch',
        { batch => [ event('good-1'), event('poison-1') ] });
    is($st, 200, 'a batch of a good and a poisoned event accepted');

    # the sender thread has the 400, the event loop has not seen it yet
    ok(stopped($t, $gdb, 20),
       'the worker is stopped with the answer in hand')
        or diag($t->read_file('gdb.log'));

    kill 'TERM', $w;
    release($t, $gdb);

    ok(wait_until(sub { my @p = $t->worker_pids; @p && $p[0] != $w }, 15),
        'the worker exited and another took its place');

    is_deeply($cio->wait_names(['good-1'], 15), [],
        'the good event is delivered by the next worker');
    ok(wait_until(sub { @{ dead_letters($file) } >= 1 }, 10),
        'the poisoned one is dead-lettered');
    is_deeply([ map { $_->{item}{name} } @{ dead_letters($file) } ],
        ['poison-1'], 'and only it');

    $t->done_part;
}

# --- the write key of a request sent to an error page -------------------------

{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1']);
    my $url = $cio->url;
    my $key = 'wk_review_7c2d';
    $t->config(http => keyed_server($url, $key, <<'END'))->run;
        error_page 413 /too-large.json;

        location = /too-large.json {
            return 413 '{"success":false}';
        }

        location /small/ {
            cio_ingest segment;
            client_max_body_size 10;
        }
END
    $t->allow_log(qr/\[error\].*client intended to send too large body/);

    my ($st) = $t->post("/small/v1/track?writeKey=$key",
        { userId => 'u1', event => 'too large for nginx' },
        Authorization => basic($key));
    is($st, 413, 'nginx refuses a body over client_max_body_size: 413');

    my $log = '';
    ok(wait_until(sub { ($log = $t->read_file('access.log')) =~ /" 413 / },
                  10), 'the request is in the access log');
    unlike($log, qr/\Q$key\E/,
        'without the write key, though it went to an error page');

    $t->done_part;
}

# --- an "if" or a "limit_except" inside a cio location -----------------------

# nginx runs the location's handler with the block's configuration: it
# had no workspace (the worker crashed on the first event queued), and a
# limit_except's methods went to the static handler (405)
{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1']);
    my $url = $cio->url;
    my $key = 'wk_block_4f1a';
    $t->config(http => keyed_server($url, $key, <<'END'))->run;
        location /if/ {
            cio_ingest segment;
            if ($request_method = POST) {
                set $cio_seen 1;
            }
        }

        location /lmt/ {
            cio_ingest segment;
            limit_except OPTIONS {
                allow 127.0.0.1;
                deny all;
            }
        }

        location /amp/ {
            cio_ingest amplitude;
            if ($request_method = POST) {
                set $cio_seen 1;
            }
        }
END

    my ($st, undef, $body) = $t->post("/if/v1/track?writeKey=$key",
        { userId => 'u-if', event => 'in-if', messageId => 'm-if' });
    is($st, 200, 'a call to a location with an "if": 200');
    is($body, '{"success":true}', 'with the SDK\'s answer');

    ($st, undef, $body) = $t->post('/lmt/v1/track',
        { userId => 'u-lmt', event => 'in-limit-except',
          messageId => 'm-lmt' }, Authorization => basic($key));
    is($st, 200, 'a call to a location with a "limit_except": 200');

    ($st, undef, $body) = $t->post('/amp/2/httpapi', {
        api_key => $key,
        events => [ { user_id => 'u-amp', event_type => 'in-amp',
                      insert_id => 'i-amp' } ] });
    is($st, 200, 'an Amplitude call to a location with an "if": 200');
    like($body, qr/"code":200/, 'with Amplitude\'s answer');

    is_deeply($cio->wait_names([ 'in-if', 'in-limit-except', 'in-amp' ],
                               15), [], 'all three delivered');
    my %who = map { $_->{name} => $_->{identifiers}{id} } @{ $cio->items };
    is_deeply(\%who, { 'in-if' => 'u-if', 'in-limit-except' => 'u-lmt',
                       'in-amp' => 'u-amp' }, 'each as its own person');

    my $log = '';
    ok(wait_until(sub {
        ($log = $t->read_file('access.log')) =~ m{/if/v1/track}
    }, 10), 'the "if" location\'s request is in the access log');
    unlike($log, qr/\Q$key\E/, 'without the write key');

    $t->done_part;
}

# --- control characters in a site id and a dead letter -----------------------

{
    my $site = 's' . ("\x01" x 80);
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1']);
    my $file = $t->dir . '/dead.jsonl';
    $t->config(http => conf($cio->url, $site,
        "cio_dead_letter $file;\n    cio_retry_max 0;"))->run;
    $t->allow_log(
        qr/\[error\].*cio: Customer\.io rejected a batch of 1 events for site/);

    $cio->mode({ status => 400 });

    my ($st) = $t->post('/cio/v1/track', event('ctl-1'));
    is($st, 200, 'an event accepted');
    ok(wait_until(sub { @{ dead_letters($file) } >= 1 }, 10),
        'its batch, rejected with 400, is dead-lettered');
    $cio->mode({ status => undef });

    my $d = dead_letters($file)->[0];
    is($d->{site_id}, $site, 'with the site id, control characters escaped');
    is($d->{item}{name}, 'ctl-1', 'and the item');

    $t->done;
}
