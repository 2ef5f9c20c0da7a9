package Cio::Test;

# A small harness in the manner of nginx-tests' Test::Nginx: it starts
# nginx with a generated configuration on free loopback ports, starts the
# Customer.io stand-in, talks HTTP to both, waits on conditions with
# deadlines, and at the end fails the test file when the error log holds
# an [alert], an [emerg] or a sanitizer report.
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
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use POSIX qw(:sys_wait_h);
use Test::More;
use Time::HiRes qw(sleep time);

use Exporter qw(import);
our @EXPORT_OK = qw(wait_until free_port basic);


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

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
        Proto => 'tcp', Listen => 1, ReuseAddr => 1)
        or die "cannot find a free port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

sub basic {
    my ($user, $pass) = @_;
    return 'Basic ' . encode_base64("$user:" . ($pass // ''), '');
}

# Polls $cond every 20 ms until it returns true or $timeout seconds pass.
sub wait_until {
    my ($cond, $timeout) = @_;
    # Valgrind slows nginx down some twentyfold
    my $deadline = time() + ($timeout // 10) * ($ENV{CIO_VALGRIND} ? 6 : 1);

    while (time() < $deadline) {
        my $v = $cond->();
        return $v if $v;
        sleep 0.02;
    }

    return $cond->();
}

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

# http => the inside of the http{} block; %%PORT%% is the listening port,
# %%PORT_n%% further free ports, %%TESTDIR%% the test directory.
sub config {
    my ($self, %opts) = @_;

    $self->{port} //= free_port();

    my $user = $> == 0 ? "user root;\n" : '';
    my $workers = $opts{workers} // $self->{workers};
    my $master = $opts{master} // 'on';
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

# nginx -t on the written configuration: (exit code, output)
sub check_config {
    my ($self) = @_;
    local $ENV{LD_PRELOAD} = $ENV{CIO_PRELOAD} if $ENV{CIO_PRELOAD};
    my $out = `$self->{nginx} -t -p $self->{dir}/ -c nginx.conf -e $self->{dir}/error.log 2>&1`;
    return ($? >> 8, $out);
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

    return $self;
}

sub master_pid { $_[0]->{nginx_pid} }

sub worker_pids {
    my ($self) = @_;
    my $ppid = $self->{nginx_pid} or return ();
    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // '';
        close $fh;
        # pid (comm) state ppid ...
        my ($pid, $comm, $parent) = $line =~ /^(\d+) \((.*)\) \S+ (\d+)/
            or next;
        push @pids, $pid
            if $parent == $ppid && $comm =~ /nginx|memcheck/;
    }
    return sort { $a <=> $b } @pids;
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

# the lines of error.log matching $re
sub log_lines {
    my ($self, $re) = @_;
    return grep { $_ =~ $re } split /\n/, $self->read_file('error.log');
}

sub stop {
    my ($self, $signal) = @_;
    my $pid = delete $self->{nginx_pid} or return;

    kill $signal // 'QUIT', $pid;

    my $gone = wait_until(sub { waitpid($pid, WNOHANG) == $pid }, 20);

    unless ($gone) {
        diag('nginx did not stop in 20 s, killing it');
        kill 'KILL', $pid;
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

# --- the end of a test file ------------------------------------------------

# lines a test expects at [alert], e.g. the alert for a wrong API key
sub allow_alert {
    my ($self, $re) = @_;
    push @{ $self->{allowed} }, $re;
    return $self;
}

sub errors_in_log {
    my ($self) = @_;
    my $log = $self->read_file('error.log');
    my @allowed = @{ $self->{allowed} || [] };
    return grep {
        my $line = $_;
        /\[(alert|emerg)\]|Sanitizer|runtime error:/
            && !grep { $line =~ $_ } @allowed
    } split /\n/, $log;
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

    my @bad = $self->errors_in_log;
    ok(!@bad, 'no alert, emerg or sanitizer report in error.log')
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
    if (my $pid = delete $self->{nginx_pid}) {
        kill 'KILL', $pid;
        waitpid($pid, 0);
    }
    $_ && $_->stop for @{ $self->{standins} || [] };
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
    push @args, '--rate', $self->{rate} if $self->{rate};
    push @args, '--burst', $self->{burst} if $self->{burst};
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
    my ($self) = @_;
    my %seen;
    for my $item (@{ $self->items }) {
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
