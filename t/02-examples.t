#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Every snippet in conf-examples/ passes "nginx -t" with the module built
# here (or CIO_NGINX with CIO_MODULE), so the examples the README points
# to cannot rot: each conf.d/ file included in http {} on its own, and the
# location snippet inside a server {}.  t/03-snippets.t puts them into
# Debian's stock /etc/nginx.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test;

my $ex = Cio::Test->top . '/conf-examples';

my @snippets = glob("$ex/conf.d/*.conf");
ok(@snippets >= 8, 'the conf.d snippets are there') or diag("@snippets");

sub check {
    my ($name, $http) = @_;

    my $t = Cio::Test->new;
    $t->config(http => $http);

    my ($rc, $out) = $t->check_config;
    is($rc, 0, "$name: nginx -t passes") or diag($out);
    like($out, qr/test is successful/, "$name: test is successful");
}

for my $file (@snippets) {
    my ($name) = $file =~ m{(conf\.d/[^/]+)$};

    open my $fh, '<', $file or die "$file: $!";
    my $conf = do { local $/; <$fh> };
    close $fh;

    # read inside http {}: a main-context directive there is an error
    unlike($conf, qr/^\s*(load_module|events|worker_\w+)\b/m,
        "$name: nothing that belongs outside http {}");
    # the site already running keeps the requests that are not ours
    unlike($conf, qr/^[^#]*default_server/m,
        "$name: takes no default_server");

    check($name, "    include $file;\n");
}

check('snippets/cio-location.conf', <<"EOF");
    include $ex/conf.d/cio-zone.conf;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name www.example.com;

        include $ex/snippets/cio-location.conf;
    }
EOF

done_testing();
