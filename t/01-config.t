#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Bad configuration fails "nginx -t" with a message that names the problem;
# good configuration passes.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test;

my @cases = (
    [ 'a minimal ingest location', 0, qr/test is successful/, <<'END' ],
    %%ZONE%%
    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_write_key wk1 wk2;
            cio_write_key wk3;
            cio_convert_timestamps off;
            cio_device_events "Push Enabled" "Token Refreshed";
        }
    }
END
    [ 'credentials inherited from http and server', 0,
      qr/test is successful/, <<'END' ],
    %%ZONE%%
    cio_site_id site1;
    cio_region eu;
    server {
        listen 127.0.0.1:%%PORT%%;
        cio_api_key key1;
        location /a/ { cio_ingest segment; }
        location /b/ { cio_ingest segment; cio_site_id site2; }
    }
END
    [ 'an empty device event name', 1,
      qr/invalid name "", it must be 1 to 150 bytes/, <<'END' ],
    %%ZONE%%
    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment; cio_site_id s; cio_api_key k;
            cio_device_events "";
        }
    }
END
    [ 'unknown ingest kind', 1,
      qr/invalid value "rudder", it must be "segment"/, <<'END' ],
    %%ZONE%%
    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ { cio_ingest rudder; cio_site_id s; cio_api_key k; }
    }
END
    [ 'endpoint that is not http(s)', 1,
      qr{"cio_endpoint" must be an http:// or https:// URL}, <<'END' ],
    %%ZONE%%
    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment; cio_site_id s; cio_api_key k;
            cio_endpoint ftp://example.com;
        }
    }
END
    [ 'zone too small', 1, qr/zone "cio" is too small/, <<'END' ],
    %%ZONE:8k%%
END
    [ 'batch size over the API limit', 1, qr/must not be over 500000/,
      <<'END' ],
    %%ZONE%%
    cio_batch_size 600k;
END
    [ 'cio_ingest outside a location', 1,
      qr/"cio_ingest" directive is not allowed here/, <<'END' ],
    %%ZONE%%
    server { listen 127.0.0.1:%%PORT%%; cio_ingest segment; }
END
);

for my $case (@cases) {
    my ($name, $fails, $re, $http) = @$case;
    my $t = Cio::Test->new;
    $t->config(http => $http);
    my ($rc, $out) = $t->check_config;
    is($rc ? 1 : 0, $fails,
        "$name: nginx -t " . ($fails ? 'fails' : 'passes'));
    like($out, $re, "$name: message") or diag($out);
}

# Messages a person acts on: the exact line nginx -t prints, and the file
# and line it points at, found in the file as written.  "at" is [file,
# the line's pattern, which match (1 by default)]; "files" are more files
# in the test directory, for include.
my @exact = (
    {   name => 'no cio_zone, the location in an included file',
        level => 'emerg',
        msg => 'no "cio_zone" is defined in the http block for the '
            . '"cio_ingest" directive',
        at => [ 'site.conf', qr/cio_ingest/ ],
        files => { 'site.conf' => <<'END' },
server {
    listen 127.0.0.1:%%PORT%%;

    location /cio/ {
        cio_site_id s;
        cio_api_key k;
        cio_ingest segment;
    }
}
END
        http => <<'END' },
    include site.conf;
END
    {   name => 'cio_site_id without cio_api_key',
        level => 'emerg',
        msg => 'no "cio_api_key" is defined for the "cio_ingest" directive '
            . '(in its location, server or http block)',
        at => [ 'nginx.conf', qr/cio_ingest segment/ ],
        http => <<'END' },
    %%ZONE%%
    cio_site_id s;
    server {
        listen 127.0.0.1:%%PORT%%;
        location /other/ { return 204; }
        location /cio/ {
            cio_ingest segment;
        }
    }
END
    {   name => 'cio_api_key without cio_site_id',
        level => 'emerg',
        msg => 'no "cio_site_id" is defined for the "cio_ingest" directive '
            . '(in its location, server or http block)',
        at => [ 'nginx.conf', qr/cio_ingest amplitude/ ],
        http => <<'END' },
    %%ZONE%%
    server {
        listen 127.0.0.1:%%PORT%%;
        cio_api_key k;
        location /cio/ { cio_ingest amplitude; }
    }
END
    {   name => 'neither cio_site_id nor cio_api_key',
        level => 'emerg',
        msg => 'no "cio_site_id" and "cio_api_key" are defined for the '
            . '"cio_ingest" directive (in its location, server or http '
            . 'block)',
        at => [ 'nginx.conf', qr/cio_ingest segment/ ],
        http => <<'END' },
    %%ZONE%%
    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ { cio_ingest segment; }
    }
END
    {   name => 'an endpoint that is not http(s)',
        level => 'emerg',
        msg => '"cio_endpoint" must be an http:// or https:// URL, not '
            . '"ftp://example.com", for the "cio_ingest" directive',
        at => [ 'nginx.conf', qr/cio_ingest segment/ ],
        http => <<'END' },
    %%ZONE%%
    cio_endpoint ftp://example.com;
    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_site_id s; cio_api_key k;
            cio_ingest segment;
        }
    }
END
    {   name => 'cio_region mars',
        level => 'emerg',
        msg => 'invalid value "mars", it must be "us" or "eu"',
        at => [ 'nginx.conf', qr/cio_region/ ],
        http => <<'END' },
    %%ZONE%%
    cio_region mars;
END
    {   name => 'cio_screen_views with an unknown value',
        level => 'emerg',
        msg => 'invalid value "page", it must be "event" or "native"',
        at => [ 'nginx.conf', qr/cio_screen_views/ ],
        http => <<'END' },
    %%ZONE%%
    cio_screen_views page;
END
    {   name => 'a second cio_zone',
        level => 'emerg',
        msg => '"cio_zone" directive is duplicate: one zone serves all the '
            . 'locations, declare it once in the http block',
        at => [ 'nginx.conf', qr/cio_zone/, 2 ],
        http => <<'END' },
    %%ZONE:1m:a%%
    server { listen 127.0.0.1:%%PORT%%; }
    %%ZONE:1m:b%%
END
    {   name => 'the old cio_zone syntax',
        level => 'emerg',
        msg => 'invalid parameter "name=cio", the zone is given as '
            . '"zone=NAME:SIZE"',
        at => [ 'nginx.conf', qr/cio_zone/ ],
        http => <<'END' },
    cio_zone name=cio size=1m;
END
    {   name => 'a zone without a size',
        level => 'emerg',
        msg => 'invalid zone "zone=cio", it must be like "zone=cio:64m"',
        at => [ 'nginx.conf', qr/cio_zone/ ],
        http => <<'END' },
    cio_zone zone=cio;
END
    {   name => 'a zone without a name',
        level => 'emerg',
        msg => 'invalid zone "zone=:1m", it must be like "zone=cio:64m"',
        at => [ 'nginx.conf', qr/cio_zone/ ],
        http => <<'END' },
    cio_zone zone=:1m;
END
    {   name => 'a bad zone size',
        level => 'emerg',
        msg => 'invalid zone size "zone=cio:lots"',
        at => [ 'nginx.conf', qr/cio_zone/ ],
        http => <<'END' },
    cio_zone zone=cio:lots;
END
    {   name => 'one site, two API keys',
        level => 'warn',
        msg => 'site "s" has another "cio_api_key" in an earlier location '
            . 'with the same endpoint: their events share one queue and '
            . 'are all sent with the earlier key, for the "cio_ingest" '
            . 'directive',
        at => [ 'nginx.conf', qr/cio_api_key k2/ ],
        http => <<'END' },
    %%ZONE%%
    server {
        listen 127.0.0.1:%%PORT%%;
        location /a/ { cio_ingest segment; cio_site_id s; cio_api_key k1; }
        location /b/ { cio_ingest segment; cio_site_id s; cio_api_key k2; }
        location /eu/ {
            cio_ingest segment; cio_site_id s; cio_api_key k3;
            cio_region eu;
        }
    }
END
    {   name => 'cio_max_batch_size over client_max_body_size',
        level => 'warn',
        msg => '"cio_max_batch_size" 614400 is over "client_max_body_size" '
            . '524288: nginx answers larger batches with its own 413 page, '
            . 'raise "client_max_body_size" for the "cio_ingest" directive',
        at => [ 'nginx.conf', qr/cio_ingest segment/ ],
        http => <<'END' },
    %%ZONE%%
    client_max_body_size 512k;
    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment; cio_site_id s; cio_api_key k;
            cio_max_batch_size 600k;
        }
        location /small/ {
            cio_ingest segment; cio_site_id s; cio_api_key k;
            cio_max_batch_size 100k;
        }
    }
END
);

for my $c (@exact) {
    my $t = Cio::Test->new;
    $t->config(http => $c->{http});

    for my $f (keys %{ $c->{files} // {} }) {
        (my $text = $c->{files}{$f}) =~ s/%%PORT%%/$t->port/ge;
        $t->write_file($f, $text);
    }

    my ($file, $re, $nth) = @{ $c->{at} };
    my @lines = split /\n/, $t->read_file($file), -1;
    my @at = grep { $lines[$_] =~ $re } 0 .. $#lines;
    my $line = $at[ ($nth // 1) - 1 ] + 1;
    my $want = "nginx: [$c->{level}] $c->{msg} in " . $t->dir
        . "/$file:$line";

    my ($rc, $out) = $t->check_config;
    my $fails = $c->{level} eq 'emerg';
    is($rc ? 1 : 0, $fails ? 1 : 0,
        "$c->{name}: nginx -t " . ($fails ? 'fails' : 'passes'));
    my @said = grep { /^nginx: \[(?:emerg|warn)\]/ } split /\n/, $out;
    is_deeply(\@said, [ $want ], "$c->{name}: the message, where")
        or diag($out);
}

done_testing();
