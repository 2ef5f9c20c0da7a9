#!/usr/bin/perl

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
    [ 'no cio_zone', 1, qr/"cio_ingest" needs a "cio_zone"/, <<'END' ],
    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment; cio_site_id s; cio_api_key k;
        }
    }
END
    [ 'no site id', 1, qr/needs "cio_site_id" and "cio_api_key"/, <<'END' ],
    %%ZONE%%
    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ { cio_ingest segment; cio_api_key k; }
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
    [ 'bad region', 1, qr/invalid value "asia"/, <<'END' ],
    %%ZONE%%
    cio_region asia;
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
    [ 'zone without size', 1, qr/must have "name=" and "size="/, <<'END' ],
    cio_zone name=cio;
END
    [ 'two zones', 1, qr/"cio_zone" directive is duplicate/, <<'END' ],
    %%ZONE:1m:a%%
    %%ZONE:1m:b%%
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

done_testing();
