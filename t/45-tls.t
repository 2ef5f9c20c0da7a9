#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# TLS to Customer.io is verified: a certificate from an unknown CA, or for
# another host name, stops delivery (the events wait, the error says why);
# cio_ssl_trusted_certificate names the CAs to trust, and then it works.
# nginx itself plays the TLS front of the Customer.io stand-in.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(basic wait_until);

my %auth = (Authorization => basic('wk'));

sub certs {
    my ($t) = @_;
    my $dir = $t->dir;

    # openssl draws its key generation progress on stderr
    open(my $stderr, '>&', \*STDERR) or die;
    open(STDERR, '>', "$dir/openssl.log") or die;

    for my $c ([ 'good', '/CN=localhost',
                 'subjectAltName=IP:127.0.0.1,DNS:localhost' ],
               [ 'wrong', '/CN=wrong.example',
                 'subjectAltName=DNS:wrong.example' ]) {
        my ($name, $subj, $san) = @$c;
        system('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
               '-days', '2', '-subj', $subj, '-addext', $san,
               '-keyout', "$dir/$name.key", '-out', "$dir/$name.crt") == 0
            or BAIL_OUT('openssl req failed');
    }

    open(STDERR, '>&', $stderr) or die;

    $t->write_file('trusted.crt',
        $t->read_file('good.crt') . $t->read_file('wrong.crt'));
}

sub conf {
    my ($t, $cio, $trust) = @_;
    my $dir = $t->dir;
    my $port = $cio->url =~ s{.*:}{}r;

    return <<"END";
    %%ZONE%%
    cio_flush_interval 20ms;
    cio_retry_backoff 100ms 200ms;
    cio_write_key wk;
    $trust

    server {
        listen 127.0.0.1:%%PORT_1%% ssl;
        ssl_certificate $dir/good.crt;
        ssl_certificate_key $dir/good.key;
        location / { proxy_pass http://127.0.0.1:$port; }
    }

    server {
        listen 127.0.0.1:%%PORT_2%% ssl;
        ssl_certificate $dir/wrong.crt;
        ssl_certificate_key $dir/wrong.key;
        location / { proxy_pass http://127.0.0.1:$port; }
    }

    server {
        listen 127.0.0.1:%%PORT%%;

        location /good/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_endpoint https://127.0.0.1:%%PORT_1%%;
        }

        location /wrongname/ {
            cio_ingest segment;
            cio_site_id site2;
            cio_api_key key2;
            cio_endpoint https://127.0.0.1:%%PORT_2%%;
        }
    }
END
}

sub names {
    my ($cio) = @_;
    return { map { ($_->{name} // '') => 1 } @{ $cio->items } };
}

# --- the CAs named: the right host is reached, the wrong name is not ---------

{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1', 'site2:key2']);
    certs($t);

    $t->config(http => conf($t, $cio,
        'cio_ssl_trusted_certificate ' . $t->dir . '/trusted.crt;'))->run;

    my ($st) = $t->post('/good/v1/track', { userId => 'u', event => 'Good' },
        %auth);
    is($st, 200, 'accepted');
    ($st) = $t->post('/wrongname/v1/track',
        { userId => 'u', event => 'Wrong Name' }, %auth);
    is($st, 200, 'accepted for the misnamed endpoint too');

    ok(wait_until(sub { names($cio)->{Good} }, 10),
        'with cio_ssl_trusted_certificate the event arrives over TLS');

    ok(wait_until(sub {
        $t->read_file('error.log') =~ /cio: sending 1 events for site "site2".*(?:subject name|does not match|no alternative)/i
    }, 10), 'a certificate for another host name is refused, and logged');
    ok(!names($cio)->{'Wrong Name'}, 'so that event was not sent');

    # the refused events are still queued when the test stops nginx
    $t->allow_alert(qr/undelivered events are lost with the zone/);
    $t->done_part;
}

# --- the system CAs only: the private certificate is not trusted -------------

{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1', 'site2:key2']);
    certs($t);

    $t->config(http => conf($t, $cio, ''))->run;

    my ($st) = $t->post('/good/v1/track', { userId => 'u', event => 'Untrusted' },
        %auth);
    is($st, 200, 'accepted');

    ok(wait_until(sub {
        $t->read_file('error.log') =~ /cio: sending 1 events for site "site1".*certificate/i
    }, 10), 'an unknown CA is refused, and logged');
    ok(!names($cio)->{Untrusted}, 'so the event was not sent');

    # the refused events are still queued when the test stops nginx
    $t->allow_alert(qr/undelivered events are lost with the zone/);
    $t->done_part;
}

# --- a bad path fails nginx -t ------------------------------------------------

{
    my $t = Cio::Test->new;
    $t->config(http => <<'END');
    %%ZONE%%
    cio_ssl_trusted_certificate /nonexistent/ca.crt;
END
    my ($rc, $out) = $t->check_config;
    isnt($rc, 0, 'a missing CA file fails nginx -t');
    like($out, qr{cannot read "/nonexistent/ca.crt"}, 'and names it');
}

done_testing();
