#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The real, unmodified @segment/analytics-next (its UMD build, as a CDN
# serves it) in headless Chromium: the page comes from one loopback origin,
# the module listens on another, so the browser applies CORS for real
# (analytics.js adds an Authorization header: every POST needs a
# preflight).  analytics.js fetches its settings from cdnURL, here nginx on
# the page's origin in place of cdn.segment.com.  Each call type is sent in
# the default mode (one POST per call, /v1/i, /v1/t, ...) and in batching
# mode (/v1/b); the test checks that the browser saw no failure, what nginx
# logged (preflights, POSTs, no retry) and the exact Customer.io items.
#
# Needs t/clients/node_modules and Debian's chromium
# (scripts/clients-deps.sh installs both).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::Local qw(timegm);
use Cio::Test qw(ulid_ok);

my $CLIENTS = "$FindBin::Bin/clients";
my $CHROMIUM = $ENV{CIO_CHROMIUM} || '/usr/bin/chromium';

my $NODE = Cio::Test::node_bin();

# missing, they skip the file; under CI they fail it (Cio::Test::ci)
BEGIN {
    my $nm = "$FindBin::Bin/clients/node_modules";
    my $node = Cio::Test::node_bin();
    Cio::Test::prerequisite(
        -d "$nm/playwright-core" && -d "$nm/\@segment/analytics-next",
        "$nm is absent: run scripts/clients-deps.sh");
    my $v = `'$node' -p process.versions.node 2>/dev/null` // '';
    Cio::Test::prerequisite($v =~ /^(\d+)\./ && $1 >= 20,
        "the SDKs need Node >= 20, not '$v': run scripts/clients-deps.sh");
    Cio::Test::prerequisite(-x ($ENV{CIO_CHROMIUM} || '/usr/bin/chromium'),
        'chromium is not installed: run scripts/clients-deps.sh');
}

my $t = Cio::Test->new;
my $json = $t->json;
my $cio = $t->standin(workspaces => ['site_web:key_web']);

# the module on PORT_1, the web site on PORT_2 (and PORT, which the
# harness waits for)
my $api_port = $t->port(1);
my $page_origin = 'http://127.0.0.1:' . $t->port(2);
my $api_origin = "http://127.0.0.1:$api_port";
my $umd = "$CLIENTS/node_modules/\@segment/analytics-next/dist/umd/";

# what cdn.segment.com would answer for a write key
sub settings {
    my ($key, $location) = @_;
    return $json->encode({
        integrations => { 'Segment.io' => {
            apiKey => $key, apiHost => "127.0.0.1:$api_port$location/v1",
            protocol => 'http' } },
        plan => {}, edgeFunction => {},
        analyticsNextEnabled => JSON::PP::true,
        middlewareSettings => {}, enabledMiddleware => {},
        metrics => { sampleRate => 0 },
        legacyVideoPluginsEnabled => JSON::PP::false,
        remotePlugins => [],
    });
}

$t->config(http => <<"END")->run;
    %%ZONE:4m%%
    cio_flush_interval 20ms;
    cio_retry_backoff 50ms 500ms;

    log_format cors '\$request_method \$uri \$status '
                    'origin="\$http_origin" '
                    'acrm="\$http_access_control_request_method" '
                    'acrh="\$http_access_control_request_headers" '
                    'acao="\$sent_http_access_control_allow_origin" '
                    'acah="\$sent_http_access_control_allow_headers" '
                    'ct="\$content_type" retry="\$http_x_retry_count" '
                    'auth="\$http_authorization"';

    # the module, on its own origin
    server {
        listen 127.0.0.1:%%PORT_1%%;
        access_log %%TESTDIR%%/api.log cors;

        location /cio/ {
            cio_ingest segment;
            cio_site_id site_web;
            cio_api_key key_web;
            cio_endpoint ${\ $cio->url };
            cio_write_key wk_browser;
        }

        # the tests' settle barrier, not a browser's: not in api.log
        location /settle/ {
            access_log off;
            cio_ingest segment;
            cio_site_id site_web;
            cio_api_key key_web;
            cio_endpoint ${\ $cio->url };
        }

        # only another site may post here
        location /list/ {
            cio_ingest segment;
            cio_site_id site_web;
            cio_api_key key_web;
            cio_endpoint ${\ $cio->url };
            cio_write_key wk_list;
            cio_cors_origins https://www.example.com;
        }
    }

    # the web site, and the CDN's settings and bundles
    server {
        listen 127.0.0.1:%%PORT_2%%;
        listen 127.0.0.1:%%PORT%%;
        access_log %%TESTDIR%%/page.log;

        location / {
            root $CLIENTS/browser;
        }

        # the browser asks for it; a site without one is not an error
        location = /favicon.ico {
            return 204;
        }

        location /analytics-next/bundles/ {
            alias $umd;
        }

        location = /v1/projects/wk_browser/settings {
            default_type application/json;
            return 200 '${\ settings('wk_browser', '/cio') }';
        }

        location = /v1/projects/wk_list/settings {
            default_type application/json;
            return 200 '${\ settings('wk_list', '/list') }';
        }
    }
END

sub api_log {
    return [ split /\n/, $t->read_file('api.log') ];
}

# runs one page load; returns the driver's report
sub browse {
    my ($mode, $prefix, $posts, $wk) = @_;
    $wk //= 'wk_browser';
    my $url = "$page_origin/index.html?wk=$wk&prefix=$prefix"
        . "&mode=$mode";
    my $err = $t->dir . "/browser-$prefix.err";
    my $raw = `timeout 90 '$NODE' '$CLIENTS/browser.js' '$url' '$api_origin' $posts 2>'$err'`;
    my $res = eval { $json->decode((split /\n/, $raw)[-1] // '') };
    unless ($res) {
        diag("no report from browser.js: $raw\n" . $t->read_file($err));
        $res = { errors => ['no report'], requests => [], blocked => [],
                 console => [], page => undef };
    }
    return $res;
}

sub check_items {
    my ($name, $prefix, $res, $t0) = @_;
    my $p = $prefix;
    my $user = { id => "$p-user-1" };
    my $anon = ($res->{page} // {})->{anonymousId} // '?';
    my $href = ($res->{page} // {})->{href} // '?';
    my ($search) = $href =~ /(\?.*)$/;
    my $now = [ $t0 - 1, time + 1 ];

    my @want = (
        [ 'identify', sub { $_[0]{type} eq 'person'
                          && $_[0]{action} eq 'identify' },
          { type => 'person', identifiers => $user, action => 'identify',
            attributes => { email => "$p\@example.com", plan => 'pro',
                            created_at => timegm(5, 4, 3, 2, 0, 2024),
                            anonymous_id => $anon } } ],
        [ 'track', sub { ($_[0]{name} // '') eq 'Order Completed' },
          { type => 'person', identifiers => $user, action => 'event',
            name => 'Order Completed',
            attributes => { revenue => 9.99, currency => 'EUR',
                            anonymous_id => $anon } },
          timegm(5, 4, 3, 2, 0, 2026) ],
        # analytics.js copies name, category and the page fields into
        # properties, as captured from it
        [ 'page', sub { $_[0]{action} eq 'page' },
          { type => 'person', identifiers => $user, action => 'page',
            name => 'Pricing',
            attributes => { name => 'Pricing', category => 'Docs',
                            path => '/index.html', referrer => '',
                            search => $search // '?',
                            title => 'cio client test', url => $href,
                            anonymous_id => $anon } },
          $now ],
        [ 'screen', sub { ($_[0]{name} // '') =~ /^Viewed .* Screen$/ },
          { type => 'person', identifiers => $user, action => 'event',
            name => 'Viewed Home Screen',
            attributes => { tab => 1, anonymous_id => $anon } },
          $now ],
        [ 'group', sub { $_[0]{type} eq 'object' },
          { type => 'object', action => 'identify',
            identifiers => { object_type_id => '1', object_id => "$p-acme" },
            attributes => { name => 'Acme', plan => 'enterprise' },
            cio_relationships => [ { identifiers => $user } ] } ],
        [ 'alias', sub { $_[0]{action} eq 'merge' },
          { type => 'person', action => 'merge', primary => $user,
            secondary => { id => "$p-old-1" } } ],
    );

    my $mine = sub {
        [ grep { index($json->encode($_), "$p-") >= 0 } @{ $cio->items } ];
    };
    # (a shorter wait when the page already said it failed)
    my $ok = !@{ $res->{errors} } && $res->{page}
             && !@{ $res->{page}{errors} // [] };
    my $items = Cio::Test::wait_until(sub {
        my $i = $mine->();
        return @$i >= @want ? $i : undef;
    }, $ok ? 10 : 2);
    # the settle barrier: anything unexpected that would follow is in
    ok($t->settle($cio, path => '/settle/v1/track',
        headers => { port => $t->port(1) }), "$name: settled");
    $items = $mine->();

    is(scalar @$items, scalar @want,
        "$name: Customer.io received exactly " . scalar(@want) . ' items')
        or diag($json->encode($items));

    my %used;
    for my $w (@want) {
        my ($label, $match, $item, $time) = @$w;
        my ($i) = grep { !$used{$_} && $match->($items->[$_]) } 0 .. $#$items;
        ok(defined $i, "$name: $label: item recorded") or next;
        $used{$i} = 1;
        my $got = { %{ $items->[$i] } };

        ok(ulid_ok(delete $got->{id}), "$name: $label: dedupe id") if $time;
        if (ref $time eq 'ARRAY') {
            my $ts = delete $got->{timestamp};
            ok(defined $ts && $ts >= $time->[0] && $ts <= $time->[1],
                "$name: $label: timestamp is when it was sent")
                or diag('timestamp ', $ts // 'none');
        } elsif (defined $time) {
            is(delete $got->{timestamp}, $time,
                "$name: $label: timestamp is the call's own");
        }
        is_deeply($got, $item, "$name: $label: exact item")
            or diag($json->encode($items->[$i]));
    }
}

# one run: $paths are the routes analytics.js must have POSTed to
sub check_run {
    my ($name, $mode, $prefix, $paths) = @_;

    my $seen = @{ api_log() };
    my $t0 = time;
    my $res = browse($mode, $prefix, scalar @$paths);
    my $page = $res->{page} // {};

    is_deeply($res->{errors}, [], "$name: the page finished");
    is_deeply($page->{errors} // ['no result'], [],
        "$name: analytics.js reported no error and no failed delivery");
    is(scalar @{ $page->{calls} // [] }, 6, "$name: six calls made");
    is_deeply($res->{blocked}, [],
        "$name: nothing was fetched from outside (no cdn.segment.com)");

    my @req = grep { $_->{url} !~ m{/v1/m$} } @{ $res->{requests} };
    my @failed = grep { $_->{failure} } @req;
    is_deeply(\@failed, [], "$name: no request failed in the browser "
        . '(CORS included)') or diag(explain(\@failed));
    my @cors = grep { /CORS|Access-Control/i } @{ $res->{console} };
    is_deeply(\@cors, [], "$name: no CORS error on the console");

    my @posts = grep { $_->{method} eq 'POST' } @req;
    is_deeply([ sort map { $_->{url} =~ m{^\Q$api_origin\E(/[^?]*)}; $1 }
                @posts ],
        [ sort @$paths ], "$name: POSTed once to each route, no retry");
    is(scalar(grep { $_->{status} == 200 } @posts), scalar @posts,
        "$name: each POST answered 200");
    is(scalar(grep { ($_->{acao} // '') eq $page_origin } @posts),
        scalar @posts,
        "$name: each answer has Access-Control-Allow-Origin: $page_origin");

    # nginx's view: a preflight before the POSTs, answered 204 with CORS
    my $log = Cio::Test::wait_until(sub {
        my $l = api_log();
        my @mine = @$l[$seen .. $#$l];
        return (grep { /^POST / && !m{/v1/m } } @mine) >= @$paths
            ? \@mine : undef;
    }, 5) // [ @{ api_log() }[$seen .. $#{ api_log() }] ];
    my @log = grep { !m{ /cio/v1/m } } @$log;

    my @opt = grep { /^OPTIONS / } @log;
    my @post = grep { /^POST / } @log;
    ok(@opt >= 1, "$name: the browser sent preflights");
    is(scalar(grep { / 204 / } @opt), scalar @opt,
        "$name: preflights answered 204") or diag(join "\n", @opt);
    is(scalar(grep { /origin="\Q$page_origin\E".*acao="\Q$page_origin\E"/ }
              @opt), scalar @opt,
        "$name: preflights allow the page's origin")
        or diag(join "\n", @opt);
    is(scalar(grep { /acrh="([^"]*)".*acah="([^"]*)"/ && lc($2) =~ /\Q${\ lc $1}\E/ }
              @opt), scalar @opt,
        "$name: preflights allow the requested headers (authorization)")
        or diag(join "\n", @opt);
    is(scalar(grep { /acrh="[^"]*authorization/i } @opt), scalar @opt,
        "$name: analytics.js asked for authorization");
    is(scalar @post, scalar @$paths, "$name: nginx logged one POST per route")
        or diag(join "\n", @log);
    is(scalar(grep { / 200 .*ct="text\/plain.*retry="-"/ } @post),
        scalar @post, "$name: POSTs text/plain, first attempts, answered 200")
        or diag(join "\n", @post);

    check_items($name, $prefix, $res, $t0);
}

check_run('analytics-next, one request per call', 'standard', 'web',
    [ map { "/cio/v1/$_" } qw(i t p s g a) ]);

check_run('analytics-next, batching', 'batching', 'webb', ['/cio/v1/b']);

# the test notices a CORS failure: a location that allows another origin
{
    my $name = 'analytics-next, origin not allowed';
    my $seen = @{ api_log() };
    my $res = browse('standard', 'webno', 6, 'wk_list');
    my @posts = grep { $_->{method} eq 'POST' && $_->{url} !~ m{/v1/m$} }
                @{ $res->{requests} };
    ok(scalar(grep { $_->{failure} } @posts) >= 6 && !grep({ !$_->{failure} } @posts),
        "$name: the browser refused each POST (the six, and retries)")
        or diag(explain($res->{requests}));
    ok((grep { /CORS/ } @{ $res->{console} }),
        "$name: CORS errors on the console");
    my @log = grep { m{ /list/v1/[^m]} } @{ api_log() }[$seen .. $#{ api_log() }];
    ok(@log >= 1 && !grep({ !/^OPTIONS \S+ 403 / } @log),
        "$name: nginx refused the preflights with 403, no POST got through")
        or diag(join "\n", @log);
    is(scalar(grep { index($json->encode($_), 'webno-') >= 0 }
              @{ $cio->items }), 0, "$name: nothing reached Customer.io");
}

$t->done;

# the helpers above keep $t alive until global destruction, where the
# harness's DESTROY would meet half-destroyed stand-ins: end it here
undef $t;
