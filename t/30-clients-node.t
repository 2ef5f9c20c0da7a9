#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Real, unmodified Node SDKs through the module: @segment/analytics-node,
# @customerio/cdp-analytics-node, @rudderstack/rudder-sdk-node (gzip on, as
# by default, and off) and @amplitude/analytics-node, each driven by
# t/clients/node-sdk.js.  For each SDK: the SDK reports success for every
# call, it made exactly the requests expected (no retry), nginx logged the
# same requests answered 200, and the Customer.io stand-in recorded exactly
# the items docs/mapping.md promises.
#
# Needs t/clients/node_modules (scripts/clients-deps.sh installs it).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::Local qw(timegm);
use Cio::Test qw(ulid_ok);

my $CLIENTS = "$FindBin::Bin/clients";

my $NODE = Cio::Test::node_bin();

# missing, they skip the file; under CI they fail it (Cio::Test::ci)
BEGIN {
    my $nm = "$FindBin::Bin/clients/node_modules";
    my $node = Cio::Test::node_bin();
    Cio::Test::prerequisite(-d $nm,
        "$nm is absent: run scripts/clients-deps.sh");
    my $v = `'$node' -p process.versions.node 2>/dev/null` // '';
    Cio::Test::prerequisite($v =~ /^(\d+)\./ && $1 >= 20,
        "the SDKs need Node >= 20, not '$v': run scripts/clients-deps.sh");
}

my $t = Cio::Test->new;
my $json = $t->json;

my $cio = $t->standin(workspaces => [
    'site_seg:key_seg', 'site_cdp:key_cdp', 'site_rud:key_rud',
    'site_amp:key_amp' ]);

my $common = <<"END";
            cio_endpoint ${\ $cio->url };
END

my $amplitude_location = <<"END";
        location /amp/ {
            cio_ingest amplitude;
            cio_site_id site_amp;
            cio_api_key key_amp;
            cio_write_key AMP_API_KEY_abc;
$common
        }
END

my $http = sub {
    my ($amp) = @_;
    return <<"END";
    %%ZONE:4m%%
    cio_flush_interval 20ms;
    cio_retry_backoff 50ms 500ms;

    log_format clients '\$request_method \$uri \$status '
                       'ce="\$http_content_encoding" ct="\$content_type" '
                       'retry="\$http_x_retry_count" len=\$request_length';

    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%TESTDIR%%/clients.log clients;

        location /segment/ {
            cio_ingest segment;
            cio_site_id site_seg;
            cio_api_key key_seg;
            cio_write_key wk_segment;
$common
        }

        location /cdp/ {
            cio_ingest segment;
            cio_site_id site_cdp;
            cio_api_key key_cdp;
            cio_write_key wk_cdp;
$common
        }

        location /rudder/ {
            cio_ingest segment;
            cio_site_id site_rud;
            cio_api_key key_rud;
            cio_write_key wk_rudder;
$common
        }

        # the tests' settle barrier, not an SDK's: not in clients.log
        location /settle/ {
            access_log off;
            cio_ingest segment;
            cio_site_id site_seg;
            cio_api_key key_seg;
$common
        }

${\ ($amp ? $amplitude_location : '') }
    }
END
};

# cio_ingest amplitude may not be there yet: the other SDKs still run
$t->config(http => $http->(1));
my ($rc, $out) = $t->check_config;
my $have_amplitude = $rc == 0;
ok($have_amplitude, 'nginx -t accepts "cio_ingest amplitude"')
    or diag($out);
$t->config(http => $http->(0)) unless $have_amplitude;
$t->run;

my $base = 'http://127.0.0.1:' . $t->port;

# --- helpers ------------------------------------------------------------------

# runs the driver; returns its JSON report (or a failure report)
sub drive {
    my ($sdk, $path, $key, $prefix, @more) = @_;
    my $err = $t->dir . "/node-$prefix.err";
    my @cmd = ('timeout', '60', $NODE, "$CLIENTS/node-sdk.js", $sdk,
               "$base$path", $key, $prefix, @more);
    my $cmd = join(' ', map { "'$_'" } @cmd) . " 2>'$err'";
    my $raw = `$cmd`;
    my $res = eval { $json->decode((split /\n/, $raw)[-1] // '') };
    unless ($res) {
        diag("$sdk: no report from the driver: $raw\n"
             . $t->read_file($err));
        return { ok => 0, errors => ['no report'], results => [],
                 requests => [] };
    }
    return $res;
}

# the access log lines whose URI starts with $path
sub logged {
    my ($path) = @_;
    return [ grep { (split / /)[1] =~ m{^\Q$path\E} }
             split /\n/, $t->read_file('clients.log') ];
}

# Checks what one SDK run did.  %o: name, path (location), res (driver
# report), requests (how many the SDK must have made), site, want (items).
sub check_run {
    my (%o) = @_;
    my ($name, $res) = @o{qw(name res)};

    subtest "$name: the SDK reports success" => sub {
        ok($res->{ok}, 'every call succeeded, per the SDK')
            or diag(explain($res->{errors}));
        is(scalar @{ $res->{results} }, 6, 'six calls answered');
    };

    my @req = grep { $_->{path} =~ m{^\Q$o{path}\E} } @{ $res->{requests} };
    is(scalar @req, $o{requests},
        "$name: $o{requests} HTTP request(s), no retry")
        or diag(explain(\@req));
    is_deeply([ map { $_->{status} } @req ], [ (200) x @req ],
        "$name: each answered 200");

    my $skip = $o{skip_lines} // 0;
    my $log = sub { my $l = logged($o{path}); [ @$l[$skip .. $#$l] ] };
    # (shorter waits when the SDK already said it failed)
    my $patience = $res->{ok} ? 1 : 0.2;
    my $lines = Cio::Test::wait_until(sub {
        my $l = $log->();
        return @$l >= @req ? $l : undef;
    }, 5 * $patience) // $log->();
    is(scalar @$lines, scalar @req, "$name: nginx logged the same requests")
        or diag(join "\n", @$lines);
    is(scalar(grep { / 200 / } @$lines), scalar @$lines,
        "$name: nginx answered them 200") or diag(join "\n", @$lines);
    if ($o{log_like}) {
        is(scalar(grep { $_ =~ $o{log_like} } @$lines), scalar @$lines,
            "$name: requests as the SDK sends them ($o{log_like})")
            or diag(join "\n", @$lines);
    }

    my @want = @{ $o{want} };
    # only this run's items: those that name its prefix, when told
    my $mine = sub {
        my $all = [ grep { ($_->{name} // '') !~ /^settle-\d+$/ }
                    @{ $cio->items($o{site}) } ];
        return $all unless defined $o{only};
        return [ grep { index($json->encode($_), $o{only}) >= 0 } @$all ];
    };
    my $items = Cio::Test::wait_until(sub {
        my $i = $mine->();
        return @$i >= @want ? $i : undef;
    }, 10 * $patience);
    # the settle barrier: anything unexpected that would follow is in
    ok($t->settle($cio, path => '/settle/v1/track'), "$name: settled");
    $items = $mine->();

    is(scalar @$items, scalar @want,
        "$name: Customer.io received exactly " . scalar(@want) . ' items')
        or diag(explain($items));

    my %used;
    for my $w (@want) {
        my ($label, $match, $item, $time) = @$w;
        my ($i) = grep { !$used{$_} && $match->($items->[$_]) }
                  0 .. $#$items;

        ok(defined $i, "$name: $label: item recorded") or next;
        $used{$i} = 1;
        next unless defined $item;
        my $got = { %{ $items->[$i] } };

        if (exists $got->{id} || $time) {
            ok(ulid_ok(delete $got->{id}), "$name: $label: dedupe id");
        }
        if (ref $time eq 'ARRAY') {
            my $ts = delete $got->{timestamp};
            ok(defined $ts && $ts >= $time->[0] && $ts <= $time->[1],
                "$name: $label: timestamp is when it was sent")
                or diag("timestamp ", $ts // 'none',
                        " not in [$time->[0], $time->[1]]");
        } elsif (defined $time) {
            is(delete $got->{timestamp}, $time,
                "$name: $label: timestamp is the call's own");
        }

        is_deeply($got, $item, "$name: $label: exact item")
            or diag($json->encode($items->[$i]));
    }
}

# the items the six Segment-shaped calls of node-sdk.js become
sub segment_items {
    my ($p, $now, %x) = @_;
    my $user = { id => "$p-user-1" };
    return (
        [ 'identify', sub { $_[0]{action} eq 'identify'
                            && $_[0]{type} eq 'person' },
          { type => 'person', identifiers => $user, action => 'identify',
            attributes => { email => "$p\@example.com", plan => 'pro',
                            created_at => timegm(5, 4, 3, 2, 0, 2024) } } ],
        [ 'track', sub { ($_[0]{name} // '') eq 'Order Completed' },
          { type => 'person', identifiers => $user, action => 'event',
            name => 'Order Completed',
            attributes => { revenue => 9.99, currency => 'EUR' } },
          timegm(5, 4, 3, 2, 0, 2026) ],
        [ 'page', sub { $_[0]{action} eq 'page' },
          { type => 'person', identifiers => { anonymous_id => "$p-anon-1" },
            action => 'page', name => 'Pricing',
            attributes => { url => 'https://example.com/pricing',
                            %{ $x{page_props} // {} } } },
          $now ],
        [ 'screen', sub { ($_[0]{name} // '') eq 'Viewed Home Screen' },
          { type => 'person', identifiers => $user, action => 'event',
            name => 'Viewed Home Screen',
            attributes => { tab => 1, %{ $x{screen_props} // {} } } },
          $now ],
        [ 'group', sub { $_[0]{type} eq 'object' },
          { type => 'object', action => 'identify',
            identifiers => { object_type_id => '1', object_id => "$p-acme" },
            attributes => { name => 'Acme', plan => 'enterprise' },
            cio_relationships => [ { identifiers => $user } ] } ],
        [ 'alias', sub { $_[0]{action} eq 'merge' },
          { type => 'person', action => 'merge', primary => $user,
            secondary => { id => "$p-anon-1" } } ],
    );
}

# --- @segment/analytics-node ----------------------------------------------------

my $t0 = time;
my $res = drive('segment', '/segment', 'wk_segment', 'seg');
check_run(name => '@segment/analytics-node', path => '/segment/',
    res => $res, requests => 1, site => 'site_seg',
    log_like => qr/ce="-" ct="application\/json" retry="-"/,
    want => [ segment_items('seg', [ $t0 - 1, time + 1 ],
                            page_props => { category => 'Docs' }) ]);

# --- @customerio/cdp-analytics-node (no sentAt, no writeKey in the body) -------

$t0 = time;
$res = drive('customerio', '/cdp', 'wk_cdp', 'cdp');
check_run(name => '@customerio/cdp-analytics-node', path => '/cdp/',
    res => $res, requests => 1, site => 'site_cdp',
    log_like => qr/ce="-" ct="application\/json" retry="-"/,
    want => [ segment_items('cdp', [ $t0 - 1, time + 1 ],
                            page_props => { category => 'Docs' }) ]);

# --- @rudderstack/rudder-sdk-node ------------------------------------------------
# the first call goes out alone at once, the other five on flush (§7.5);
# by default gzipped and labelled application/x-www-form-urlencoded (§7.2)

$t0 = time;
$res = drive('rudder', '/rudder', 'wk_rudder', 'rud');
check_run(name => '@rudderstack/rudder-sdk-node (gzip)', path => '/rudder/',
    res => $res, requests => 2, site => 'site_rud',
    log_like => qr/ce="gzip" ct="application\/x-www-form-urlencoded" retry="-"/,
    want => [ segment_items('rud', [ $t0 - 1, time + 1 ]) ]);

# the same without gzip, so that a gzip failure is told from a mapping one
my $seen = @{ logged('/rudder/') };
$t0 = time;
$res = drive('rudder', '/rudder', 'wk_rudder', 'rudplain', 'nogzip');
check_run(name => '@rudderstack/rudder-sdk-node (gzip: false)',
    path => '/rudder/', res => $res, requests => 2, site => 'site_rud',
    skip_lines => $seen, only => 'rudplain-',
    log_like => qr/ce="-" ct="application\/json" retry="-"/,
    want => [ segment_items('rudplain', [ $t0 - 1, time + 1 ]) ]);

# --- @amplitude/analytics-node ---------------------------------------------------

SKIP: {
    skip 'cio_ingest amplitude is not accepted by this build', 1
        unless $have_amplitude;

    $t0 = time;
    $res = drive('amplitude', '/amp', 'AMP_API_KEY_abc', 'amp');
    my $user = { id => 'amp-user-1' };
    my $now = [ $t0 - 1, time + 1 ];

    check_run(name => '@amplitude/analytics-node', path => '/amp/',
        res => $res, requests => 1, site => 'site_amp',
        log_like => qr{^POST /amp/2/httpapi 200 ce="-" ct="application/json" retry="-"},
        want => [
            [ 'track', sub { ($_[0]{name} // '') eq 'Button Clicked' },
              { type => 'person', identifiers => $user, action => 'event',
                name => 'Button Clicked', attributes => { color => 'red' } },
              1704164645 ],
            [ 'identify', sub { $_[0]{action} eq 'identify'
                                && exists $_[0]{attributes}{plan} },
              { type => 'person', identifiers => $user, action => 'identify',
                attributes => { plan => 'pro', first_plan => 'free' } } ],
            [ 'setGroup (an $identify)',
              sub { $_[0]{action} eq 'identify'
                    && exists $_[0]{attributes}{org} },
              { type => 'person', identifiers => $user, action => 'identify',
                attributes => { org => 'amp-acme' } } ],
            # docs/mapping.md §5.10: $groupidentify, like a
            # Segment group call, the group becomes an object
            [ 'groupIdentify', sub { $_[0]{type} eq 'object' },
              { type => 'object', action => 'identify',
                identifiers => { object_type_id => '1',
                                 object_id => 'amp-acme' },
                attributes => { tier => 'gold' },
                cio_relationships => [ { identifiers => $user } ] } ],
            [ 'revenue', sub { ($_[0]{name} // '') eq 'revenue_amount' },
              { type => 'person', identifiers => $user, action => 'event',
                name => 'revenue_amount',
                attributes => { '$productId' => 'sku-1', '$quantity' => 2,
                                '$price' => 9.99 } },
              $now ],
            [ 'track with only a device_id',
              sub { ($_[0]{name} // '') eq 'Anonymous Visit' },
              { type => 'person',
                identifiers => { anonymous_id => 'amp-device-0001' },
                action => 'event', name => 'Anonymous Visit',
                attributes => { ref => 'ad' } },
              $now ],
        ]);
}

$t->done;

# the helpers above keep $t alive until global destruction, where the
# harness's DESTROY would meet half-destroyed stand-ins: end it here
undef $t;
