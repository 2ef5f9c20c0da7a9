# SPDX-License-Identifier: BSD-2-Clause
package Cio::Test;

# A small harness in the manner of nginx-tests' Test::Nginx: it starts
# nginx with a generated configuration on free loopback ports, starts the
# Customer.io stand-in, talks HTTP to both, waits on conditions with
# deadlines, and at the end fails the test file when the error log holds
# an [error], a [crit], an [alert], an [emerg] the test did not expect
# (allow_log), or when error.log, the master's early stderr (nginx.out) or
# "nginx -t" holds a sanitizer report.
#
#   CIO_TEST_LEAVE=1    keep the test directory
#   CIO_TEST_CATLOG=1   print error.log at the end
#   CIO_MODULE=path     the module to load (default build/...so);
#                       "static": compiled into CIO_NGINX, no load_module
#   CIO_NGINX=path      the nginx binary (default /usr/sbin/nginx)
#   CIO_VALGRIND=1      run nginx (master and workers) under Valgrind

use strict;
use warnings;

use Cwd qw(abs_path);
use Fcntl qw(:flock);
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use POSIX qw(:sys_wait_h);
use Storable qw(dclone);
use Test::More;
use Time::HiRes qw(sleep time);

use Exporter qw(import);
our @EXPORT_OK = qw(wait_until free_port basic zone ingest_http ulid_ok
                    with_message_id);


my $TOP = abs_path(dirname(__FILE__) . '/../../..');

my $JSON = JSON::PP->new->canonical->allow_nonref;

sub new {
    my ($class, %opts) = @_;

    my $dir = tempdir('cio-test-XXXXXX', TMPDIR => 1,
        CLEANUP => !$ENV{CIO_TEST_LEAVE});
    chmod 0755, $dir;

    my $self = bless {
        dir => $dir,
        nginx => $ENV{CIO_NGINX} || '/usr/sbin/nginx',
        module => $ENV{CIO_MODULE} || "$TOP/build/ngx_http_cio_module.so",
        standins => [],
        workers => $opts{workers} // 2,
    }, $class;

    diag("test directory $dir") if $ENV{CIO_TEST_LEAVE};

    return $self;
}

sub dir { $_[0]->{dir} }
sub top { $TOP }

# --- prerequisites ------------------------------------------------------------

# CI runs with CI=true: there every prerequisite must be present, and a
# missing one fails the test instead of skipping it.
sub ci { ($ENV{CI} // '') =~ /^(?:1|true|yes)$/i ? 1 : 0 }

# For a whole file: returns when $ok, else skips the file, or fails it
# under CI.  (Usable in BEGIN, before any plan.)
sub prerequisite {
    my ($ok, $why) = @_;
    return 1 if $ok;
    if (ci()) {
        plan(tests => 1);
        fail("a prerequisite is missing under CI: $why");
        exit 1;
    }
    plan(skip_all => $why);
}

# For a SKIP: block: skips $n tests, and under CI fails first.
sub skip_unless_ci {
    my ($why, $n) = @_;
    fail("a prerequisite is missing under CI: $why") if ci();
    skip($why, $n);
}

# The node the client tests run: the Node 20 that scripts/clients-deps.sh
# put into t/clients/.node when the system's is older, else the system's.
sub node_bin {
    my $local = "$TOP/t/clients/.node/bin/node";
    return -x $local ? $local : 'node';
}

# A port nobody listens on, below the kernel's ephemeral range (where
# every outgoing connection and every bind to port 0 takes its port), and
# held for as long as this test runs by a lock on a file named after it:
# test files run side by side (make test's prove -j2) never get the same
# port, though nginx binds it only later, and more than once.
my (%held, $top);

sub free_port {
    unless ($top) {
        my ($lo) = read_file(undef, '/proc/sys/net/ipv4/ip_local_port_range')
            =~ /^(\d+)/;
        $top = ($lo && $lo > 11000) ? $lo : 32768;
    }
    my $dir = File::Spec->tmpdir . '/cio-test-ports';
    mkdir $dir;

    for (1 .. 1000) {
        my $port = 10000 + int rand($top - 10000);
        next if $held{$port};
        open my $lock, '>>', "$dir/$port" or next;
        next unless flock $lock, LOCK_EX | LOCK_NB;
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
            LocalPort => $port, Proto => 'tcp', Listen => 1, ReuseAddr => 1)
            or next;
        close $s;
        $held{$port} = $lock;
        return $port;
    }

    die "cannot find a free port in 10000-$top\n";
}

# a Customer.io dedupe id: a ULID in Crockford's base32, its time part in
# range (the first character at most 7)
sub ulid_ok {
    my ($id) = @_;
    return defined $id && !ref $id && $id =~ /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;
}

# A copy of a call (or of a /v1/batch body) with a messageId in every
# call that has none, as SDKs send them: the one-pass mapper maps those,
# the tree mapper the calls without one (t/11, t/12 send both).
sub with_message_id {
    my ($body, $label) = @_;
    my $copy = dclone($body);
    my $n = 0;
    for my $call ($copy->{batch} ? @{ $copy->{batch} } : $copy) {
        $call->{messageId} = "mid-$label-" . $n++
            if ref $call eq 'HASH' && !exists $call->{messageId};
    }
    return $copy;
}

sub basic {
    my ($user, $pass) = @_;
    return 'Basic ' . encode_base64("$user:" . ($pass // ''), '');
}

# Polls $cond every 20 ms until it returns true or $timeout seconds pass.
sub wait_until {
    my ($cond, $timeout) = @_;
    # Valgrind slows nginx down some twentyfold
    my $deadline = time() + scale($timeout // 10);

    while (time() < $deadline) {
        my $v = $cond->();
        return $v if $v;
        sleep 0.02;
    }

    return $cond->();
}

# a file of the test's directory, or any file by its absolute path (then
# callable as read_file(undef, $path)); '' when it cannot be read
sub read_file {
    my ($self, $name) = @_;
    my $path = $name =~ m{^/} ? $name : "$self->{dir}/$name";
    open my $fh, '<', $path or return '';
    local $/;
    my $s = <$fh>;
    close $fh;
    return $s // '';
}

sub write_file {
    my ($self, $name, $content) = @_;
    open my $fh, '>', "$self->{dir}/$name" or die "$name: $!";
    print $fh $content;
    close $fh;
}

# --- the Customer.io stand-in ---------------------------------------------

sub standin {
    my ($self, %opts) = @_;

    my $n = scalar @{ $self->{standins} };
    my $s = Cio::Test::Standin->new(
        dir => $self->{dir},
        name => "standin$n",
        %opts);

    push @{ $self->{standins} }, $s;
    $s->start;

    return $s;
}

# --- nginx ----------------------------------------------------------------

# The cio_zone directive: the one place that knows its syntax.
sub zone {
    my ($size, $name) = @_;
    return 'cio_zone zone=' . ($name // 'cio') . ':' . ($size // '1m') . ';';
}

# The inside of http{} for the common case: a zone, one server on %%PORT%%
# with one ingest location sending to the stand-in.  Options, with their
# defaults:
#   zone => '4m'          its size
#   http => ''            more directives at http level (cio_retry_max ...)
#   endpoint => undef     cio_endpoint (the stand-in's url); none if undef
#   site => 'site1', key => 'key1'   cio_site_id, cio_api_key
#   ingest => 'segment', location => '/cio/'
#   write_key => undef    cio_write_key's arguments
#   directives => ''      more directives inside the location
#   server => ''          more inside the server (other locations)
sub ingest_http {
    my (%o) = @_;
    my $loc = join "\n", grep { length }
        "cio_ingest " . ($o{ingest} // 'segment') . ';',
        'cio_site_id ' . ($o{site} // 'site1') . ';',
        'cio_api_key ' . ($o{key} // 'key1') . ';',
        (defined $o{endpoint} ? "cio_endpoint $o{endpoint};" : ''),
        (defined $o{write_key} ? "cio_write_key $o{write_key};" : ''),
        $o{directives} // '';
    $loc =~ s/^[ \t]*/            /mg;
    my $http = join "\n", grep { length } zone($o{zone} // '4m'),
        $o{http} // '';
    $http =~ s/^[ \t]*/    /mg;
    my $server = $o{server} // '';
    $server =~ s/^[ \t]*/        /mg;
    my $location = $o{location} // '/cio/';
    return <<"END";
$http

    server {
        listen 127.0.0.1:%%PORT%%;
$server
        location $location {
$loc
        }
    }
END
}

# http => the inside of the http{} block; %%PORT%% is the listening port,
# %%PORT_n%% further free ports, %%TESTDIR%% the test directory, %%ZONE%%
# the cio_zone directive (%%ZONE:8k%%, %%ZONE:1m:name%% with a size, a
# name).
sub config {
    my ($self, %opts) = @_;

    $self->{port} //= free_port();

    my $user = $> == 0 ? "user root;\n" : '';
    my $workers = $opts{workers} // $self->{workers};
    my $master = $opts{master} // 'on';
    $self->{nworkers} = $master eq 'off' ? 0 : $workers;
    my $main = $opts{main} // '';

    my $load = $self->{module} eq 'static'
        ? '' : "load_module $self->{module};";

    my $conf = <<"EOF";
$load
$user
daemon off;
master_process $master;
worker_processes $workers;
pid %%TESTDIR%%/nginx.pid;
error_log %%TESTDIR%%/error.log info;
$main

events {
    worker_connections 512;
}

http {
    access_log %%TESTDIR%%/access.log;

    client_body_temp_path %%TESTDIR%%/client_body_temp;
    proxy_temp_path %%TESTDIR%%/proxy_temp;
    fastcgi_temp_path %%TESTDIR%%/fastcgi_temp;
    uwsgi_temp_path %%TESTDIR%%/uwsgi_temp;
    scgi_temp_path %%TESTDIR%%/scgi_temp;

$opts{http}
}
EOF

    $conf =~ s/%%ZONE(?::([^:%]+))?(?::([^:%]+))?%%/zone($1, $2)/ge;
    $conf =~ s/%%TESTDIR%%/$self->{dir}/g;
    $conf =~ s/%%PORT%%/$self->{port}/g;
    $conf =~ s/%%PORT_(\d+)%%/$self->{ports}{$1} \/\/= free_port()/ge;

    $self->write_file('nginx.conf', $conf);

    return $self;
}

sub port {
    my ($self, $n) = @_;
    return $self->{port} unless defined $n;
    return $self->{ports}{$n} //= free_port();
}

# nginx -t on the written configuration: (exit code, output); a sanitizer
# report in the output fails the test there and then
sub check_config {
    my ($self) = @_;
    local $ENV{LD_PRELOAD} = $ENV{CIO_PRELOAD} if $ENV{CIO_PRELOAD};
    my $out = `$self->{nginx} -t -p $self->{dir}/ -c nginx.conf -e $self->{dir}/error.log 2>&1`;
    my $rc = $? >> 8;
    my @san = sanitizer_reports($out);
    if (@san) {
        fail('nginx -t: no sanitizer report');
        diag(join "\n", @san);
    }
    return ($rc, $out);
}

sub sanitizer_reports {
    my ($text) = @_;
    return grep { /Sanitizer|runtime error:/ } split /\n/, $text // '';
}

# Scales a time bound for a slow run: Valgrind slows nginx down some
# twentyfold, ASan some twofold.
sub scale {
    my ($seconds) = @_;
    return $seconds * ($ENV{CIO_VALGRIND} ? 6 : $ENV{CIO_PRELOAD} ? 2 : 1);
}

sub run {
    my ($self) = @_;

    unlink "$self->{dir}/nginx.pid";

    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        $ENV{LD_PRELOAD} = $ENV{CIO_PRELOAD} if $ENV{CIO_PRELOAD};
        open STDOUT, '>>', "$self->{dir}/nginx.out";
        open STDERR, '>&', \*STDOUT;
        my @vg = $ENV{CIO_VALGRIND}
            ? ('valgrind', '-q', '--trace-children=yes',
               '--leak-check=no', '--error-exitcode=0',
               "--log-file=$self->{dir}/valgrind.%p.log")
            : ();
        exec @vg, $self->{nginx}, '-p', "$self->{dir}/", '-c', 'nginx.conf',
            '-e', "$self->{dir}/error.log";
        exit 127;
    }

    $self->{nginx_pid} = $pid;

    my $up = wait_until(sub {
        return 0 if waitpid($pid, WNOHANG) == $pid;
        return 0 unless -s "$self->{dir}/nginx.pid";
        my $c = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$self->{port}",
            Timeout => 1);
        return $c ? 1 : 0;
    }, $ENV{CIO_VALGRIND} ? 60 : 10);

    unless ($up) {
        diag($self->read_file('nginx.out'));
        diag($self->read_file('error.log'));
        BAIL_OUT('nginx did not start');
    }

    # the master listens before its workers are up: on a loaded machine a
    # test could find none, or attach gdb to one still initializing
    wait_until(sub { $self->workers_ready }, 10) if $self->{nworkers};

    return $self;
}

# all the workers forked, each past its init (it names itself then;
# under Valgrind, which keeps its own name, forked is all one can see)
sub workers_ready {
    my ($self) = @_;
    my @w = $self->worker_pids;
    return 0 if @w < $self->{nworkers};
    return 1 if $ENV{CIO_VALGRIND};
    for my $pid (@w) {
        open my $fh, '<', "/proc/$pid/cmdline" or return 0;
        my $cmd = <$fh> // '';
        return 0 unless $cmd =~ /worker process/;
    }
    return 1;
}

sub master_pid { $_[0]->{nginx_pid} }

sub worker_pids {
    my ($self) = @_;
    my $ppid = $self->{nginx_pid} or return ();
    return sort { $a <=> $b }
        map { $_->[0] } grep { $_->[1] == $ppid } nginx_procs();
}

# every nginx process (or Valgrind's, running one): [pid, parent pid]
sub nginx_procs {
    my @procs;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // '';
        close $fh;
        # pid (comm) state ppid ...
        my ($pid, $comm, $parent) = $line =~ /^(\d+) \((.*)\) \S+ (\d+)/
            or next;
        push @procs, [ $pid, $parent ] if $comm =~ /nginx|memcheck/;
    }
    return @procs;
}

# HUP, then wait until a new set of workers has replaced the old one
sub reload {
    my ($self) = @_;
    my %old = map { $_ => 1 } $self->worker_pids;

    kill 'HUP', $self->{nginx_pid};

    return wait_until(sub {
        my @now = $self->worker_pids;
        return 0 unless @now;
        return !grep { $old{$_} } @now;
    }, 15);
}

# SIGKILL to every worker; waits until the master has replaced them all
sub kill_workers {
    my ($self) = @_;
    my @old = $self->worker_pids;
    my %old = map { $_ => 1 } @old;
    kill 'KILL', @old;
    return wait_until(sub {
        my @now = $self->worker_pids;
        return @now >= @old && !grep { $old{$_} } @now;
    }, 15);
}

# SIGKILL to the master and every worker at once, as a crash of the whole
# server (the OOM killer, a power loss); true once none of them is left
sub kill_all {
    my ($self) = @_;
    my @pids = ($self->master_pid, $self->worker_pids);
    kill 'KILL', @pids;
    waitpid($self->master_pid, 0);
    delete $self->{nginx_pid};
    return wait_until(sub { !grep { kill 0, $_ } @pids }, 10);
}

# waits (up to $secs) until the sender's first attempts failed for at
# least $n events, which then wait for their retry: none is on the wire
sub failed_once {
    my ($self, $n, $secs) = @_;
    return wait_until(sub {
        my $failed = 0;
        $failed += $_ for map { /sending (\d+) events .* failed/ }
            $self->log_lines(qr/failed: .*retrying in \d+ ms/);
        return $failed >= $n;
    }, $secs);
}

# t/shim/NAME.c built into the test's directory, for LD_PRELOAD; its path
sub shim {
    my ($self, $name) = @_;
    my $cc = $ENV{CC} // 'gcc';
    my $so = $self->dir . "/$name.so";
    system($cc, '-shared', '-fPIC', '-O2', '-o', $so,
           "$TOP/t/shim/$name.c", '-ldl') == 0
        or Test::More::BAIL_OUT("$cc could not build t/shim/$name.c");
    return $so;
}

# the shim preloaded into every nginx the test starts from now on, after
# ASan's runtime, which must come first
sub preload {
    my ($self, $name) = @_;
    $ENV{CIO_PRELOAD} = join ' ', grep { $_ } $ENV{CIO_PRELOAD},
        $self->shim($name);
}

# the lines of error.log matching $re
sub log_lines {
    my ($self, $re) = @_;
    return grep { $_ =~ $re } split /\n/, $self->read_file('error.log');
}

sub stop {
    my ($self, $signal) = @_;
    my @workers = $self->worker_pids;
    my $pid = delete $self->{nginx_pid} or return;

    kill $signal // 'QUIT', $pid;

    my $gone = wait_until(sub { waitpid($pid, WNOHANG) == $pid }, 20);

    unless ($gone) {
        diag('nginx did not stop in 20 s, killing it');
        kill 'KILL', $pid, @workers;
        waitpid($pid, 0);
    }

    return $gone;
}

# --- HTTP -----------------------------------------------------------------

# (status, {lower-case header => value}, body)
sub http {
    my ($self, $method, $path, $body, %headers) = @_;

    my $port = delete $headers{port} // $self->{port};
    $body //= '';

    my $req = "$method $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Connection: close\r\n";

    for my $h (sort keys %headers) {
        $req .= "$h: $headers{$h}\r\n";
    }

    $req .= "Content-Length: " . length($body) . "\r\n"
        unless $headers{'Transfer-Encoding'} || $method eq 'GET';
    $req .= "\r\n$body";

    return raw_http($port, $req);
}

# a workspace's counters on the cio_status page at $path; {} when the
# page cannot be read or does not show that workspace
sub ws_stats {
    my ($self, $path, $site) = @_;
    my ($st, undef, $body) = $self->http('GET', $path);
    my $s = $st == 200 ? eval { $JSON->decode($body) } : undef;
    my ($w) = grep { $_->{site_id} eq $site } @{ $s->{workspaces} || [] };
    return $w ? $w->{stats} : {};
}

sub post {
    my ($self, $path, $data, %headers) = @_;
    my $body = ref $data ? $JSON->encode($data) : $data;
    $headers{'Content-Type'} //= 'application/json';
    return $self->http('POST', $path, $body, %headers);
}

sub raw_http {
    my ($port, $req) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
        Timeout => 5) or return (0, {}, "connect: $!");

    local $SIG{ALRM} = sub { die "timeout\n" };
    my $resp = '';

    eval {
        alarm 10;
        $s->autoflush(1);
        print $s $req;
        while (1) {
            my $n = sysread($s, my $buf, 65536);
            last unless $n;
            $resp .= $buf;
        }
        alarm 0;
    };
    alarm 0;
    close $s;

    return (0, {}, "no answer: $@") unless $resp =~ /\r\n\r\n/;

    my ($head, $content) = split /\r\n\r\n/, $resp, 2;
    my ($status_line, @lines) = split /\r\n/, $head;
    my ($status) = $status_line =~ m{^HTTP/\d\.\d (\d+)};
    my %h;

    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $h{lc $k} = $v;
    }

    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        my $out = '';
        while ($content =~ s/^([0-9a-fA-F]+)\r\n//) {
            my $len = hex $1;
            last if $len == 0;
            $out .= substr($content, 0, $len, '');
            $content =~ s/^\r\n//;
        }
        $content = $out;
    }

    return ($status, \%h, $content);
}

sub json { $JSON }

# --- exact accounting ---------------------------------------------------------

# The settle barrier: posts a sentinel event after everything the test sent
# and waits until the stand-in records it, so that what was sent before has
# had its chance to arrive, or to arrive twice.  Returns the sentinel's name,
# or undef when it did not arrive in time.  %o: path (default
# /cio/v1/track), headers, timeout.
sub settle {
    my ($self, $cio, %o) = @_;
    my $name = 'settle-' . ++$self->{settles};
    my ($st) = $self->post($o{path} // '/cio/v1/track',
        { userId => 'settle', event => $name }, %{ $o{headers} || {} });
    return undef unless $st == 200;
    my $missing = $cio->wait_names([$name], $o{timeout} // 15);
    return @$missing ? undef : $name;
}

# After a settle: every name in %$want (name => times recorded; an array of
# names means once each) was recorded that many times, each name under a
# single dedupe id that is a ULID, and no other name (sentinels aside).
sub delivered_exactly {
    my ($self, $cio, $want, $what, %o) = @_;
    $want = { map { $_ => 1 } @$want } if ref $want eq 'ARRAY';
    # the sentinel is another person's: with two workers, or two batches
    # in flight, it can be recorded before an earlier batch is, so the
    # wanted names are waited for first, the sentinel then catches what
    # would arrive again or besides them
    Cio::Test::wait_until(sub {
        my $seen = $cio->names($o{site});
        return !grep { @{ $seen->{$_} || [] } < $want->{$_} } keys %$want;
    }, $o{timeout} // 15);
    my $settled = $self->settle($cio, %o);
    ok($settled, "$what: the settle barrier arrived");
    my $seen = $cio->names($o{site});
    my %got = map { $_ => scalar @{ $seen->{$_} } }
        grep { !/^settle-\d+$/ } keys %$seen;
    is_deeply(\%got, $want, "$what: every name recorded exactly as often as "
        . 'sent, nothing else') or diag(explain(\%got));
    my @bad = grep { my %u = map { $_ => 1 } @{ $seen->{$_} };
                     keys %u != 1 || !ulid_ok((keys %u)[0]) } sort keys %got;
    is_deeply(\@bad, [], "$what: one ULID dedupe id per name");
    return \%got;
}

# --- the end of a test file ------------------------------------------------

# Lines a test expects at [error], [crit], [alert] or [emerg], e.g. the
# alert for a wrong API key or the error for a refused item: every other
# line at those levels fails the test file at done/done_part.
sub allow_log {
    my ($self, @re) = @_;
    push @{ $self->{allowed} }, @re;
    return $self;
}

# (the older name, for the alerts it was made for)
sub allow_alert { shift->allow_log(@_) }

sub errors_in_log {
    my ($self) = @_;
    my @allowed = @{ $self->{allowed} || [] };
    my $bad = sub {
        my ($line) = @_;
        return $line =~ /\[(error|crit|alert|emerg)\]|Sanitizer|runtime error:/
            && !grep { $line =~ $_ } @allowed;
    };
    # error.log, and the stderr of nginx (before error.log is open, and
    # what a sanitizer writes)
    return (grep { $bad->($_) } split /\n/, $self->read_file('error.log')),
        (map { "nginx.out: $_" } grep { $bad->($_) } split /\n/,
             $self->read_file('nginx.out'));
}

sub done {
    my ($self) = @_;
    $self->done_part;
    done_testing();
}

# stops everything and checks the log, for files that run several nginx
sub done_part {
    my ($self) = @_;

    $self->stop if $self->{nginx_pid};
    $_->stop for @{ $self->{standins} };

    # a worker whose master died is no child of it any more: found by
    # the files of this test it has open
    my @left = $self->strays;
    kill 'KILL', @left;
    ok(!@left, 'no nginx process of the test outlives its master')
        or diag("left running: @left");

    my @bad = $self->errors_in_log;
    ok(!@bad, 'no unexpected error, crit, alert, emerg or sanitizer report '
        . 'in error.log or nginx.out')
        or diag(join "\n", @bad);

    if ($ENV{CIO_VALGRIND}) {
        my @vg = grep { -s $_ } glob "$self->{dir}/valgrind.*.log";
        ok(!@vg, 'no Valgrind report')
            or diag(join "\n", map { $self->read_file($_) } @vg);
    }

    diag($self->read_file('error.log')) if $ENV{CIO_TEST_CATLOG};
}

sub DESTROY {
    my ($self) = @_;
    local $?;
    if ($self->{nginx_pid}) {
        # the workers too: a worker outlives a killed master, with the
        # port and the zone (a test that failed halfway leaves it there)
        my @workers = $self->worker_pids;
        my $pid = delete $self->{nginx_pid};
        kill 'KILL', $pid, @workers;
        waitpid($pid, 0);
    }
    kill 'KILL', $self->strays if $self->{dir};
    $_ && $_->stop for @{ $self->{standins} || [] };
}

# nginx processes (or Valgrind's, running one) with a file of this test's
# directory open, whoever their parent is
sub strays {
    my ($self) = @_;
    my $dir = $self->{dir};
    my @pids;
    for my $pid (map { $_->[0] } nginx_procs()) {
        opendir my $dh, "/proc/$pid/fd" or next;
        for my $fd (readdir $dh) {
            my $to = readlink "/proc/$pid/fd/$fd" // next;
            if (index($to, "$dir/") == 0) {
                push @pids, $pid;
                last;
            }
        }
    }
    return @pids;
}


# --- a running stand-in -----------------------------------------------------

package Cio::Test::Standin;

use strict;
use warnings;

use IO::Handle;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);

sub new {
    my ($class, %opts) = @_;
    my $self = bless {%opts}, $class;
    $self->{record} //= "$opts{dir}/$opts{name}.jsonl";
    $self->{workspaces} //= ['site1:key1'];
    return $self;
}

sub port { $_[0]->{port} }
sub url { 'http://127.0.0.1:' . $_[0]->{port} }

sub start {
    my ($self) = @_;

    my @args = ('--listen', '127.0.0.1:' . ($self->{port} // 0),
        '--record', $self->{record}, '--control');
    push @args, map { ('--workspace', $_) } @{ $self->{workspaces} };
    # the stand-in limits the rate as Customer.io does unless rate => 0
    push @args, '--rate', $self->{rate} if defined $self->{rate};
    push @args, '--burst', $self->{burst} if $self->{burst};
    push @args, '--anonymous-id', $self->{anonymous_id}
        if defined $self->{anonymous_id};
    push @args, '--nested-limits', $self->{nested_limits}
        if defined $self->{nested_limits};
    push @args, '--quiet' unless $ENV{CIO_TEST_VERBOSE};

    pipe(my $r, my $w) or die "pipe: $!";

    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        close $r;
        open STDOUT, '>&', $w;
        open STDERR, '>>', "$self->{dir}/$self->{name}.log";
        exec $^X, Cio::Test->top . '/t/cio-standin.pl', @args;
        exit 127;
    }

    close $w;
    $self->{pid} = $pid;

    my $line = '';
    my $deadline = time() + 10;
    my $rin = '';
    vec($rin, fileno($r), 1) = 1;

    while (time() < $deadline && $line !~ /\n/) {
        my $rout = $rin;
        next unless select($rout, undef, undef, 0.1);
        sysread($r, my $buf, 256) or last;
        $line .= $buf;
    }

    close $r;

    my ($port) = $line =~ /listening on 127\.0\.0\.1:(\d+)/
        or die "the stand-in did not start: $line";

    $self->{port} = $port;

    return $self;
}

sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    kill 'TERM', $pid;
    my $deadline = time() + 10;
    while (time() < $deadline) {
        return if waitpid($pid, WNOHANG) == $pid;
        sleep 0.02;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
}

sub running { defined $_[0]->{pid} }

# standing faults (see t/lib/Cio/Standin.pm): mode({fail_rate => 0.3})
sub mode {
    my ($self, $what) = @_;
    my $body = encode_json($what);
    my ($status) = Cio::Test::raw_http($self->{port},
        "POST /__standin/mode HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\nContent-Length: "
        . length($body) . "\r\n\r\n" . $body);
    return $status;
}

sub stats {
    my ($self) = @_;
    my ($status, undef, $body) = Cio::Test::raw_http($self->{port},
        "GET /__standin/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    return $status == 200 ? decode_json($body) : undef;
}

# recorded event names: { name => [ids...] }, one id per time recorded
sub names {
    my ($self, $site) = @_;
    my %seen;
    for my $item (@{ $self->items($site) }) {
        next unless defined $item->{name};
        push @{ $seen{ $item->{name} } }, $item->{id} // '';
    }
    return \%seen;
}

# waits until every name in @$names is recorded; returns the missing ones
sub wait_names {
    my ($self, $names, $timeout) = @_;
    my @missing;
    Cio::Test::wait_until(sub {
        my $seen = $self->names;
        @missing = grep { !$seen->{$_} } @$names;
        return !@missing;
    }, $timeout // 10);
    return \@missing;
}

# the accepted items, as recorded: [{site_id, seq, index, item}, ...]
sub records {
    my ($self) = @_;
    open my $fh, '<', $self->{record} or return [];
    my @r;
    while (my $line = <$fh>) {
        next unless $line =~ /\n\z/;
        push @r, decode_json($line);
    }
    close $fh;
    return \@r;
}

sub items {
    my ($self, $site) = @_;
    return [ map { $_->{item} }
             grep { !defined $site || $_->{site_id} eq $site }
             @{ $self->records } ];
}

# waits until at least $n items are recorded; returns them
sub wait_items {
    my ($self, $n, $timeout, $site) = @_;
    my $items;
    Cio::Test::wait_until(sub {
        $items = $self->items($site);
        return @$items >= $n;
    }, $timeout // 10);
    return $items;
}

sub requests {
    my ($self) = @_;
    open my $fh, '<', "$self->{record}.requests" or return [];
    my @r;
    while (my $line = <$fh>) {
        push @r, decode_json($line) if $line =~ /\n\z/;
    }
    close $fh;
    return \@r;
}

sub control {
    my ($self, $what) = @_;
    my ($status) = Cio::Test::raw_http($self->{port},
        "POST /__standin/fault HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\nContent-Length: "
        . length(encode_json($what)) . "\r\n\r\n" . encode_json($what));
    return $status;
}

sub DESTROY { $_[0]->stop }

1;
