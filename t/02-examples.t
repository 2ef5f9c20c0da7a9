#!/usr/bin/perl

# Every file in conf-examples/ passes "nginx -t" with the module built here,
# so the examples the README points to cannot rot.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test;

my @examples = glob(Cio::Test->top . '/conf-examples/*.conf');
ok(@examples >= 6, 'the examples are there') or diag("@examples");

for my $file (@examples) {
    my ($name) = $file =~ m{([^/]+)$};
    my $t = Cio::Test->new;
    my $dir = $t->dir;

    open my $fh, '<', $file or die "$file: $!";
    my $conf = do { local $/; <$fh> };
    close $fh;

    # the module built here; every file nginx writes inside the test dir
    $conf =~ s{^load_module \S+;}{load_module $t->{module};\n}m
        or fail("$name: has no load_module line");
    $conf =~ s{^(events \{)}{pid $dir/nginx.pid;\n$1}m;
    $conf =~ s{^(http \{)}{$1
    access_log $dir/access.log;
    client_body_temp_path $dir/client_body_temp;
    proxy_temp_path $dir/proxy_temp;
    fastcgi_temp_path $dir/fastcgi_temp;
    uwsgi_temp_path $dir/uwsgi_temp;
    scgi_temp_path $dir/scgi_temp;
}m;

    $t->write_file('nginx.conf', $conf);

    my ($rc, $out) = $t->check_config;
    is($rc, 0, "$name: nginx -t passes") or diag($out);
    like($out, qr/test is successful/, "$name: test is successful");
}

done_testing();
