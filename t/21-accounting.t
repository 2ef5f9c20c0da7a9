#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The zone's books balance: once everything sent has settled, every item
# accepted was delivered once, and none is left queued or in flight (a
# settled batch that kept one item would be delivered again only when its
# lease ran out, minutes later).  And the endpoint each cio_region sends
# to, as the status page shows it, without sending anything.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(wait_until);

my $json = Cio::Test->json;

sub status_of {
    my ($t) = @_;
    my ($st, undef, $body) = $t->http('GET', '/cio-status');
    return $st == 200 ? eval { $json->decode($body) } : undef;
}

sub site1 {
    my ($s) = @_;
    my ($w) = grep { $_->{site_id} eq 'site1' } @{ $s->{workspaces} || [] };
    return $w ? $w->{stats} : {};
}

# --- every accepted item delivered once, nothing left in the zone -------------

{
    my $t = Cio::Test->new;
    my $cio = $t->standin;
    my $url = $cio->url;

    $t->config(http => Cio::Test::ingest_http(endpoint => $url,
        http => "cio_flush_interval 20ms;\ncio_batch_size 64k;",
        server => "location = /cio-status { cio_status; }"))->run;

    my ($st) = $t->post('/cio/v1/batch', { batch => [
        map { { type => 'track', userId => "u$_", event => "acct-b$_" } }
        1 .. 7 ] });
    is($st, 200, 'a batch of 7 accepted');

    for my $i (1 .. 3) {
        ($st) = $t->post('/cio/v1/track',
                         { userId => 'u', event => "acct-t$i" });
        is($st, 200, "call $i accepted");
    }

    $t->delivered_exactly($cio,
        [ (map { "acct-b$_" } 1 .. 7), (map { "acct-t$_" } 1 .. 3) ],
        'batch and calls');

    # the settle barrier's own item settles just after the stand-in took it
    my $s;
    my $empty = wait_until(sub {
        $s = status_of($t) or return 0;
        my $w = site1($s);
        return defined $w->{queued} && $w->{queued} == 0
            && $w->{in_flight} == 0;
    }, 10);
    ok($empty, 'after the settle nothing is queued or in flight')
        or diag(explain(site1($s)));

    my $w = site1($s);
    is($w->{accepted}, 11, 'accepted: the 10 events and the sentinel');
    is($w->{delivered}, $w->{accepted}, 'delivered: every accepted item');
    is($w->{dead_lettered}, 0, 'none dead-lettered');

    $t->done_part;
}

# --- cio_region: the endpoint it names ----------------------------------------

{
    my $t = Cio::Test->new(workers => 1);

    $t->config(http => <<'END')->run;
    %%ZONE:1m%%

    server {
        listen 127.0.0.1:%%PORT%%;

        location /us/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
        }

        location /eu/ {
            cio_ingest segment;
            cio_site_id site2;
            cio_api_key key2;
            cio_region eu;
        }

        location = /cio-status {
            cio_status;
        }
    }
END

    my $s = status_of($t);
    my %url = map { $_->{site_id} => $_->{url} } @{ $s->{workspaces} || [] };
    is_deeply(\%url, {
        site1 => 'https://track.customer.io/api/v2/batch',
        site2 => 'https://track-eu.customer.io/api/v2/batch',
    }, 'the US endpoint by default, the EU one with cio_region eu');

    $t->done;
}
