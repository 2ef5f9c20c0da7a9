#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The snippets in conf-examples/ as a user drops them into Debian's stock
# /etc/nginx: the tree is copied to the test directory (the machine's own
# is only read), the module's load_module line goes to modules-enabled/,
# each conf.d/ snippet in turn to conf.d/, the location snippet to
# snippets/ and included in the default site; "nginx -t" must pass on
# each.  Then nginx runs with the quick start in that layout: its server
# answers for its own name, and Debian's default site keeps every other
# request.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Path qw(remove_tree);
use Test::More;
use Cio::Test;

plan skip_all => "Debian's nginx layout is not installed"
    unless -f '/etc/nginx/nginx.conf' && -d '/etc/nginx/sites-available'
        && -f '/etc/nginx/sites-available/default';
# the layout goes with Debian's nginx, and the modules it enables
plan skip_all => "CIO_NGINX is not Debian's nginx"
    if ($ENV{CIO_NGINX} // '/usr/sbin/nginx') ne '/usr/sbin/nginx';

my $ex = Cio::Test->top . '/conf-examples';

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or die "$path: $!";
    local $/;
    my $s = <$fh>;
    close $fh;
    return $s;
}

sub spit {
    my ($path, $s) = @_;
    open my $fh, '>', $path or die "$path: $!";
    print $fh $s;
    close $fh;
}

# A copy of /etc/nginx in the test directory, which is also nginx's prefix
# (-p) there.  Paths that point into /etc/nginx point into the copy; the
# logs and the pid go to the test directory.  The stock tree, as the
# package installs it: no module of this project enabled (t/60-deb.t may
# be installing the package right now).
sub layout {
    my ($t, %opts) = @_;
    my $dir = $t->dir;

    for my $d (grep { -e } map { "$dir/$_" }
               qw(conf.d modules-enabled sites-enabled snippets)) {
        remove_tree($d);
    }
    system('cp', '-a', glob('/etc/nginx/*'), "$dir/") == 0
        or die "cannot copy /etc/nginx";
    # load_module modules/... is relative to the prefix, as in Debian's
    # own prefix /usr/share/nginx
    symlink '/usr/share/nginx/modules', "$dir/modules"
        unless -e "$dir/modules";

    for my $sub (qw(modules-enabled sites-enabled)) {
        for my $link (glob "$dir/$sub/*") {
            my $target = readlink $link;
            unlink $link if defined $target;
            next if $link =~ m{/[^/]*cio[^/]*$} || !defined $target
                || !-f $target;
            spit($link, slurp($target));
        }
    }

    # Cio::Test's run waits on this port
    my $port = $t->{port} //= Cio::Test::free_port();
    for my $file ("$dir/nginx.conf", glob("$dir/sites-enabled/*")) {
        my $s = slurp($file);
        $s =~ s{/etc/nginx/}{$dir/}g;
        $s =~ s{/var/log/nginx/}{$dir/}g;
        $s =~ s{^pid \S+;}{pid $dir/nginx.pid;\ndaemon off;}m;
        $s =~ s{^user \S+;}{}m if $> != 0;
        if ($opts{listen}) {
            $s =~ s{listen 80 default_server;}
                   {listen 127.0.0.1:$port default_server;};
            $s =~ s{listen \[::\]:80 default_server;}{};
        }
        spit($file, $s);
    }

    # temporary files of the test's own, not under /var/lib/nginx
    spit("$dir/conf.d/00-test-paths.conf", join '',
        map { "${_}_temp_path $dir/${_}_temp;\n" }
        qw(client_body proxy fastcgi uwsgi scgi));

    # the module, as modules-enabled/50-mod-http-cio.conf loads it
    my $load = slurp("$ex/modules-enabled/50-mod-http-cio.conf");
    $load =~ s{modules/ngx_http_cio_module\.so}{$t->{module}}
        or die 'no load_module line in 50-mod-http-cio.conf';
    spit("$dir/modules-enabled/50-mod-http-cio.conf", $load);
}

sub nginx_t {
    my ($t, $name) = @_;
    my $dir = $t->dir;
    my $cmd = "$t->{nginx} -t -p $dir/ -c $dir/nginx.conf"
        . " -e $dir/error.log";
    # an ASan build of the module needs its runtime loaded first
    local $ENV{LD_PRELOAD} = $ENV{CIO_PRELOAD} if $ENV{CIO_PRELOAD};
    my $out = `$cmd 2>&1`;
    is($? >> 8, 0, "$name: nginx -t passes in Debian's layout")
        or diag($out);
}

my @snippets = glob("$ex/conf.d/*.conf");
ok(@snippets >= 8, 'the conf.d snippets are there');

for my $file (@snippets) {
    my ($name) = $file =~ m{([^/]+)$};
    my $t = Cio::Test->new;
    layout($t);
    spit($t->dir . "/conf.d/$name", slurp($file));
    nginx_t($t, "conf.d/$name");
}

# the location inside the server that is already there
{
    my $t = Cio::Test->new;
    layout($t);
    my $dir = $t->dir;
    spit("$dir/conf.d/cio-zone.conf", slurp("$ex/conf.d/cio-zone.conf"));
    spit("$dir/snippets/cio-location.conf",
        slurp("$ex/snippets/cio-location.conf"));
    my $site = slurp("$dir/sites-enabled/default");
    $site =~ s{(server_name _;)}{$1\n\tinclude snippets/cio-location.conf;}
        or die 'no server_name in the default site';
    spit("$dir/sites-enabled/default", $site);
    nginx_t($t, 'snippets/cio-location.conf in the default site');
}

# the quick start running in Debian's layout
{
    my $t = Cio::Test->new;
    layout($t, listen => 1);
    my $dir = $t->dir;
    my $port = $t->port;

    my $conf = slurp("$ex/conf.d/quickstart.conf");
    $conf =~ s{listen 80;}{listen 127.0.0.1:$port;} or die 'no listen 80';
    spit("$dir/conf.d/quickstart.conf", $conf);
    nginx_t($t, 'quickstart.conf on a test port');

    # Cio::Test's run, on this nginx.conf
    $t->run;

    my $track = '{"userId":"u-1","event":"Signed Up"}';

    # a write key that is not the configured one: the module says so,
    # before anything would be queued or sent anywhere
    my ($st, $h, $body) = Cio::Test::raw_http($port,
        "POST /cio/v1/track HTTP/1.1\r\nHost: events.example.com\r\n"
        . "Connection: close\r\nContent-Type: application/json\r\n"
        . 'Authorization: ' . Cio::Test::basic('not-the-key') . "\r\n"
        . 'Content-Length: ' . length($track) . "\r\n\r\n$track");
    is($st, 401, 'events.example.com/cio/: the module answers');
    like($body, qr/invalid write key/, 'with its own reason');

    # every other host name: Debian's default site, its welcome page
    ($st, $h, $body) = Cio::Test::raw_http($port,
        "GET / HTTP/1.1\r\nHost: www.example.org\r\n"
        . "Connection: close\r\n\r\n");
    is($st, 200, 'another host name: the default site answers');
    like($body, qr/Welcome to nginx/, 'with its own page');

    ($st, $h, $body) = Cio::Test::raw_http($port,
        "POST /cio/v1/track HTTP/1.1\r\nHost: www.example.org\r\n"
        . "Connection: close\r\nContent-Type: application/json\r\n"
        . 'Content-Length: ' . length($track) . "\r\n\r\n$track");
    is($st, 404, 'another host name: no /cio/ there');

    $t->done_part;
}

done_testing();
