#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The Debian package libnginx-mod-http-cio: built by scripts/deb.sh (unless
# build/deb holds one newer than the sources), installed into the system
# nginx with apt-get, checked where dh_nginx put things, loaded by nginx
# through /etc/nginx/modules-enabled, run once end to end, then purged, so
# the machine is left as found (on failure too: END purges).
#
# Root only, since it installs a package: CI runs as root on a throwaway
# machine.  Skipped when the package, or a module installed by hand, is
# already there: the test does not touch what it did not put there.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Find;
use Test::More;
use Cio::Test qw(basic);

my $PKG = 'libnginx-mod-http-cio';
my $SO = '/usr/lib/nginx/modules/ngx_http_cio_module.so';
my $AVAILABLE = '/usr/share/nginx/modules-available/mod-http-cio.conf';
my $ENABLED = '/etc/nginx/modules-enabled/50-mod-http-cio.conf';
my $ABIVARS = '/usr/share/nginx/src/debian/libnginx-mod.abisubstvars';

my $main_pid = $$;
my $installed = 0;

# missing, these skip the file; under CI (CI=true) they fail it
Cio::Test::prerequisite($> == 0,
    'installs a Debian package into the system: root only');
Cio::Test::prerequisite(-x '/usr/bin/apt-get' && -x '/usr/bin/dpkg'
        && -x '/usr/sbin/nginx', 'not a Debian system with apt and nginx');

sub status {
    my $s = `dpkg-query -W -f='\${db:Status-Status}' $PKG 2>/dev/null`;
    return $s eq '' ? 'not-installed' : $s;
}

plan skip_all => "$PKG is already on this machine (" . status() . ')'
    unless status() eq 'not-installed';
for my $f ($SO, $AVAILABLE, $ENABLED, "$ENABLED.removed") {
    plan skip_all => "$f exists (installed by hand?): not touching it"
        if -e $f || -l $f;
}

my $top = Cio::Test->top;
my %dir_before = map { $_ => -d $_ }
    '/usr/lib/nginx', '/usr/lib/nginx/modules',
    '/usr/share/nginx/modules-available';

# --- the package --------------------------------------------------------------

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    return scalar <$fh>;
}

sub newest_source {
    my $newest = 0;
    my @files = ("$top/config", "$top/scripts/deb.sh",
                 glob("$top/*.c"), glob("$top/src/*"));
    find(sub { push @files, $File::Find::name if -f }, "$top/debian");
    for (@files) {
        my $m = (stat $_)[9] // next;
        $newest = $m if $m > $newest;
    }
    return $newest;
}

my ($deb) = glob("$top/build/deb/${PKG}_*.deb");

if (!$deb || (stat $deb)[9] < newest_source()) {
    my $t0 = time;
    my $out = `$top/scripts/deb.sh`;
    is($?, 0, 'scripts/deb.sh builds the package')
        or BAIL_OUT('no package');
    ($deb) = $out =~ m{^(/\S+\.deb)$}m;
    diag('built ' . ($deb // '?') . ' in ' . (time - $t0) . ' s');
}

ok($deb && -f $deb, 'there is a .deb') or BAIL_OUT('no package');

my ($abi) = `cat $ABIVARS` =~ /^nginx:abi=(\S+)/m;
ok($abi, "nginx-dev declares the nginx ABI ($ABIVARS)");
like(`dpkg-query -W -f='\${Provides}' nginx`, qr/\Q$abi\E/,
    "the installed nginx provides $abi");
like(`dpkg-deb -f $deb Depends`, qr/(^|, )\Q$abi\E(,|$)/m,
    "the .deb depends on $abi");

# --- install ------------------------------------------------------------------

sub purge {
    $installed = 0;
    return `dpkg --purge $PKG 2>&1`;
}

END {
    # not in the children the harness forks (nginx, the stand-in)
    if ($installed && $$ == $main_pid) {
        local $?;
        print STDERR map { "# $_\n" } "purging $PKG", split /\n/, purge();
    }
}

$SIG{INT} = $SIG{TERM} = sub { exit 1 };

$installed = 1;
my $out = `DEBIAN_FRONTEND=noninteractive apt-get install -y -q \\
    --no-install-recommends -o DPkg::Lock::Timeout=120 $deb 2>&1`;
is($?, 0, 'apt-get installs the package') or diag($out);

is(status(), 'installed', 'dpkg: installed');
my $depends = `dpkg-query -W -f='\${Depends}' $PKG`;
like($depends, qr/(^|, )\Q$abi\E(,|$)/,
    "dpkg -s: Depends on $abi");
like($depends, qr/\blibcurl4\b/, "dpkg -s: Depends on libcurl4 (shlibs)");
like($depends, qr/\blibcjson1\b/, "dpkg -s: ... and libcjson1");

ok(-f $SO, "the module is at $SO");
like(`dpkg -S $SO 2>&1`, qr/^\Q$PKG\E: /, "... and belongs to $PKG");

is(slurp($AVAILABLE),
    "load_module modules/ngx_http_cio_module.so;\n",
    "the load snippet is $AVAILABLE");
is(readlink($ENABLED), $AVAILABLE, "... enabled as $ENABLED");

# --- the system's module set and sites plus a server using cio ---------------

my $t = Cio::Test->new;
my $dir = $t->dir;
my $port = Cio::Test::free_port();

$t->write_file('nginx.conf', <<"END");
pid $dir/nginx.pid;
error_log $dir/error.log;

include /etc/nginx/modules-enabled/*.conf;

events {
    worker_connections 64;
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log $dir/access.log;

    client_body_temp_path $dir/client_body_temp;
    proxy_temp_path $dir/proxy_temp;
    fastcgi_temp_path $dir/fastcgi_temp;
    uwsgi_temp_path $dir/uwsgi_temp;
    scgi_temp_path $dir/scgi_temp;

    include /etc/nginx/conf.d/*.conf;
    include /etc/nginx/sites-enabled/*;

    @{[ Cio::Test::zone() ]}

    server {
        listen 127.0.0.1:$port;

        location /cio/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_write_key wk_test;
        }
    }
}
END

# nginx's own prefix (no -p): the snippet's "modules/..." is relative to it
my $check = `/usr/sbin/nginx -t -c $dir/nginx.conf -e $dir/error.log 2>&1`;
my $rc = $? >> 8;
is($rc, 0, 'nginx -t: modules-enabled, conf.d, sites-enabled and cio_*')
    or diag($check);
like($check, qr/test is successful/, 'nginx -t: test is successful');
unlike($check, qr/unknown directive/, 'nginx -t: the cio_* directives known');

# --- the packaged module, end to end ------------------------------------------

{
    # the package is not built with the sanitizers
    local $ENV{CIO_PRELOAD};
    local $ENV{CIO_MODULE} = $SO;

    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1']);

    $t->config(http => <<"END")->run;
    @{[ Cio::Test::zone() ]}
    cio_flush_interval 20ms;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /cio/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_endpoint ${\ $cio->url };
            cio_write_key wk_test;
        }
    }
END

    my ($status) = $t->post('/cio/v1/track',
        { userId => 'u-1', event => 'Packaged', messageId => 'deb-1' },
        Authorization => basic('wk_test'));
    is($status, 200, 'the packaged module takes a call');

    my $items = $cio->wait_items(1, 10);
    is($items->[0]{name} // '', 'Packaged', '... and delivers it');

    $t->done_part;
}

# --- purge --------------------------------------------------------------------

$out = purge();
is(status(), 'not-installed', 'dpkg --purge removes the package')
    or diag($out);
ok(!-e $SO, "$SO is gone");
ok(!-e $AVAILABLE, "$AVAILABLE is gone");
ok(!-e $ENABLED && !-l $ENABLED && !-l "$ENABLED.removed",
    "$ENABLED is gone");
for my $d (sort keys %dir_before) {
    is(!!-d $d, !!$dir_before{$d},
        "$d is " . ($dir_before{$d} ? 'still there' : 'gone again'));
}

done_testing();
