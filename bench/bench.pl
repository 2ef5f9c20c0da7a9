#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The benchmark suite behind `make bench` (bench/README.md): everything
# measured side by side in one run on this machine, printed as a table
# and written to bench/results.md with the machine's description.
#
#   perl bench/bench.pl            (make bench builds what it needs first)
#
# Environment (all optional):
#   BENCH_EVENTS=N     backlog of the delivery run (default 1000000)
#   BENCH_SECONDS=S    length of one wrk run in the edge part (default 4)
#   BENCH_ROUNDS=N     rounds of the edge part, best kept (default 3)
#   BENCH_RATE=N       the stand-in's request rate limit (default 100,
#                      Customer.io's Track API fair-use limit)
#   BENCH_OUT=FILE     where the results go (default bench/results.md)
#   BENCH_JOURNAL=ARGS cio_journal in every nginx, with these parameters
#                      ("sync=1s", "sync=always"; "on" for the defaults)
#   BENCH_ONLY=LIST    only these parts: standin,map,zone,edge,latency,
#                      delivery,journal (the others' rows are left out of
#                      the table; journal is not run unless named here)
#   BENCH_JOURNAL_SYNC=ARGS  the journal part's cio_journal parameters
#                      (default "sync=1s")
#   BENCH_PERF=DIR     the journal part: perf record of each nginx worker
#                      during round 1's batch runs (BENCH_PERF_ROUND=N:
#                      round N's; BENCH_PERF_CASE=single: the single
#                      calls' runs), reports in DIR
#   CIO_MODULE=PATH    another build of the module (t/lib/Cio/Test.pm)
#   BENCH_KEEP=1       keep the nginx test directories (CIO_TEST_LEAVE)
#   BENCH_CONNS=N      wrk's connections in the edge part (default 32;
#                      with 4 the worker is still busy 96 % of the time:
#                      a closed loop keeps it saturated, and part 1l
#                      measures latency at a fixed rate instead)
#   BENCH_LAT_LOADS=L  part 1l's offered loads, fractions of the reading-
#                      body baseline's capacity or (above 1) requests/s
#                      (default 0.25,0.5)
#   BENCH_LAT_CONNS=N  part 1l's connections (default 16)
#   BENCH_EDGE_HOLD=1  the edge part's stand-in holds its answers while
#                      wrk runs, as the journal part's does: the accept
#                      path without delivery on the same two cores
#   BENCH_BATCH_SIZE=N cio_batch_size of every nginx (default: the
#                      module's, 500,000 bytes)
#
# Every load loop is bounded in count and in time, everything listens on
# 127.0.0.1 only, and every process started here is stopped by its pid.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../t/lib";

BEGIN { $ENV{CIO_TEST_LEAVE} = 1 if $ENV{BENCH_KEEP} }

use Cio::Test qw(wait_until);
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use POSIX qw(ceil floor strftime :sys_wait_h);
use Time::HiRes qw(time sleep);

$| = 1;

my $TOP = Cio::Test->top;
my $BIN = "$TOP/build/bench";
my $PAY = "$TOP/bench/payloads";
my $CONNS = $ENV{BENCH_CONNS} || 32;
my $HOLD = $ENV{BENCH_EDGE_HOLD};
my $WRK = "$TOP/bench/wrk";
my @LAT_FRACS = split /,/, $ENV{BENCH_LAT_LOADS} || '0.25,0.5';
my $LAT_CONNS = $ENV{BENCH_LAT_CONNS} || 16;

my $EVENTS = $ENV{BENCH_EVENTS} || 1_000_000;
my $SECS = $ENV{BENCH_SECONDS} || 4;
my $ROUNDS = $ENV{BENCH_ROUNDS} || 3;
my $RATE = $ENV{BENCH_RATE} || 100;
my $OUT = $ENV{BENCH_OUT} || "$TOP/bench/results.md";

# the fair edge baseline: stock nginx that reads the body into memory
# (Debian's libnginx-mod-http-echo, scripts/bench-deps.sh)
my $ECHO = $ENV{BENCH_ECHO_MODULE}
    || '/usr/lib/nginx/modules/ngx_http_echo_module.so';
$ECHO = undef unless -r $ECHO;

my $CAP = 500_000;              # cio_batch_size, Customer.io's limit
my $NODE_HEADER = 48;           # offsetof(ngx_http_cio_node_t, data)
my $SITE = 'site1';
my $KEY = 'key1';
my $WRITE_KEY = 'wk_bench';
my $WK_BASIC = encode_base64("$WRITE_KEY:", '');
my $CIO_BASIC = encode_base64("$SITE:$KEY", '');

my $JSON = JSON::PP->new->canonical;
my $T0 = time;
my %R;                          # results
my @notes;                      # lines for results.md

die "bench: the tools in $BIN are missing: run make bench\n"
    if grep { !-x "$BIN/$_" } qw(map_cost cio-standin-fast openloop);

my @pids;                       # started here, stopped at exit
END { stop_pid($_) for @pids }
$SIG{INT} = $SIG{TERM} = sub { exit 130 };

my %ONLY = map { $_ => 1 } split /[\s,]+/, $ENV{BENCH_ONLY} // '';
sub want { !%ONLY || $ONLY{ $_[0] } }

say_phase('machine');
$R{machine} = machine();
printf "  %s\n", $_ for @{ $R{machine}{lines} };

if (want('standin')) {
    say_phase('0. the Customer.io stand-ins: 500,000-byte batches they take');
    standin_capacity();
}

if (want('map')) {
    say_phase('3. mapper cost (callgrind)');
    mapper_cost();
}

if (want('zone')) {
    say_phase('4a. zone bytes per queued event');
    zone_cost();
}

if (want('edge')) {
    say_phase('1. edge accept rate (wrk)');
    edge();
}

if (want('latency')) {
    say_phase('1l. latency at a fixed offered rate (openloop)');
    if ($ECHO) {
        latency();
    } else {
        # its baseline is /read/: without the echo module it is a 404
        push @notes, '1l: not run: the reading-body baseline needs '
            . 'libnginx-mod-http-echo (scripts/bench-deps.sh)';
        print "  not run: no echo module for the baseline\n";
    }
}

if ($ONLY{journal}) {
    say_phase('1j. edge accept rate with cio_journal vs without (wrk)');
    journal_cost();
}

if (want('delivery')) {
    say_phase('2. delivery of a backlog under the rate limit, 4b. worker RSS');
    delivery();
    say_phase('2. the v1 ceiling: one request per event under the same limit');
    v1_ceiling();
}

$R{machine}{load_after} = loadavg();
$R{elapsed} = time - $T0;

report();

exit 0;


# --- helpers ------------------------------------------------------------------

sub say_phase {
    printf "\n== %s  [%.0f s]\n", $_[0], time - $T0;
}

sub fmt_int {
    my ($n) = @_;
    return '-' unless defined $n;
    my $s = sprintf '%.0f', $n;
    1 while $s =~ s/^(-?\d+)(\d{3})/$1,$2/;
    return $s;
}

sub fmt_num {
    my ($n, $d) = @_;
    return '-' unless defined $n;
    return sprintf "%.${d}f", $n;
}

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    my $s = <$fh>;
    close $fh;
    return $s // '';
}

sub loadavg {
    my ($l) = split /\s+/, slurp('/proc/loadavg');
    return $l;
}

sub machine {
    my %m;
    my $cpu = `lscpu 2>/dev/null`;
    ($m{cpu}) = $cpu =~ /^Model name:\s*(.+)$/m;
    ($m{hyper}) = $cpu =~ /^Hypervisor vendor:\s*(.+)$/m;
    $m{cores} = `nproc` + 0;
    my ($mem) = slurp('/proc/meminfo') =~ /MemTotal:\s+(\d+)/;
    $m{mem_gib} = sprintf '%.1f', ($mem // 0) / 1024 / 1024;
    chomp($m{kernel} = `uname -r`);
    chomp($m{debian} = slurp('/etc/debian_version'));
    ($m{nginx}) = `/usr/sbin/nginx -v 2>&1` =~ m{nginx/(\S+)};
    ($m{wrk}) = `wrk -v 2>&1` =~ /^wrk (\S+)/m;
    ($m{valgrind}) = `valgrind --version 2>&1` =~ /(\S+)/;
    ($m{gcc}) = `gcc -dumpfullversion 2>&1` =~ /(\S+)/;
    ($m{cjson}) = `dpkg-query -W -f='\${Version}' libcjson1 2>/dev/null`;
    ($m{curl}) = `dpkg-query -W -f='\${Version}' libcurl4 2>/dev/null`;
    $m{load_before} = loadavg();
    $m{date} = strftime('%Y-%m-%d %H:%M UTC', gmtime);
    $m{lines} = [
        "$m{date}; $m{cores} cores, $m{cpu}"
            . ($m{hyper} ? " ($m{hyper} guest)" : '') . ", $m{mem_gib} GiB",
        "Debian $m{debian}, Linux $m{kernel}, nginx $m{nginx}, wrk $m{wrk},"
            . " gcc $m{gcc}, valgrind $m{valgrind}, cJSON $m{cjson},"
            . " libcurl $m{curl}",
        "load average at start: $m{load_before}",
    ];
    return \%m;
}

sub run_capture {
    my ($cmd) = @_;
    my $out = `$cmd 2>&1`;
    return ($? >> 8, $out);
}

sub last_json {
    my ($out) = @_;
    for my $line (reverse split /\n/, $out) {
        next unless $line =~ /^\{.*\}\s*$/;
        my $v = eval { $JSON->decode($line) };
        return $v if $v;
    }
    return undef;
}

# --- the fast stand-in ------------------------------------------------------------

sub standin_start {
    my (%o) = @_;
    my @args = ('--listen', '127.0.0.1:0', '--workspace', "$SITE:$KEY");
    push @args, '--rate', $o{rate}, '--burst', $o{burst} // $o{rate}
        if $o{rate};
    push @args, '--hold' if $o{hold};

    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        close $r;
        open STDOUT, '>&', $w;
        # Customer.io is not on this machine: its stand-in takes the CPU
        # that nginx and wrk leave, not theirs
        setpriority(0, 0, 19) if $o{nice};
        exec "$BIN/cio-standin-fast", @args;
        exit 127;
    }
    close $w;
    push @pids, $pid;

    my $line = '';
    my $deadline = time + 10;
    my $rin = '';
    vec($rin, fileno($r), 1) = 1;
    while (time < $deadline && $line !~ /\n/) {
        my $rout = $rin;
        next unless select($rout, undef, undef, 0.1);
        sysread($r, my $buf, 256) or last;
        $line .= $buf;
    }
    close $r;
    my ($port) = $line =~ /listening on 127\.0\.0\.1:(\d+)/
        or die "bench: the fast stand-in did not start: $line\n";
    return { pid => $pid, port => $port };
}

sub stop_pid {
    my ($pid) = @_;
    return unless $pid && kill 0, $pid;
    kill 'TERM', $pid;
    my $deadline = time + 5;
    while (time < $deadline) {
        return if waitpid($pid, WNOHANG) == $pid;
        sleep 0.05;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
}

sub standin_stop {
    my ($s) = @_;
    stop_pid($s->{pid});
    @pids = grep { $_ != $s->{pid} } @pids;
}

sub standin_stats {
    my ($s) = @_;
    my ($status, undef, $body) = Cio::Test::raw_http($s->{port},
        "GET /__standin/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    return $status == 200 ? $JSON->decode($body) : undef;
}

sub standin_post {
    my ($s, $what) = @_;
    my ($status) = Cio::Test::raw_http($s->{port},
        "POST /__standin/$what HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        . "Content-Length: 0\r\n\r\n");
    return $status;
}

# the events a wrk run had answered 200, $events to a request
sub accepted {
    my ($w, $events) = @_;
    return ($w->{requests} - $w->{non2xx}) * $events;
}

# Each wrk run starts once the stand-in has what the runs before it had
# answered 200, so no run is measured beside another nginx's backlog
# draining; returns the seconds that took (60 at most).
sub drained {
    my ($s, $want) = @_;
    my $t0 = time;
    standin_settle($s, $want, 60);
    return time - $t0;
}

# waits until the stand-in's accepted items stop growing (or reach $want)
sub standin_settle {
    my ($s, $want, $timeout) = @_;
    my ($last, $since) = (-1, time);
    my $deadline = time + $timeout;
    my $st;
    while (time < $deadline) {
        $st = standin_stats($s) or last;
        return $st if defined $want && $st->{items_accepted} >= $want;
        if ($st->{items_accepted} != $last) {
            ($last, $since) = ($st->{items_accepted}, time);
        } elsif (!defined $want && time - $since > 1.5) {
            return $st;
        }
        sleep 0.1;
    }
    return $st;
}

# --- nginx ------------------------------------------------------------------

sub nginx_start {
    my (%o) = @_;
    my $t = Cio::Test->new(workers => $o{workers});
    my $jargs = $o{journal} // $ENV{BENCH_JOURNAL};
    my $journal = !$jargs ? ''
        : 'cio_journal %%TESTDIR%%/journal max_size=4g '
          . ($jargs eq 'on' ? '' : $jargs) . ';';
    my $batch = $ENV{BENCH_BATCH_SIZE}
        ? "cio_batch_size $ENV{BENCH_BATCH_SIZE};" : '';
    my $http = <<"EOF";
    cio_zone zone=bench:$o{zone};
    $journal
    $batch
    cio_timeout $o{timeout};
    cio_connect_timeout 5s;

    server {
        listen 127.0.0.1:%%PORT%%;
        access_log off;
        keepalive_requests 1000000;
        client_max_body_size 1m;
        client_body_buffer_size 512k;

        location /cio/ {
            cio_ingest segment;
            cio_site_id $SITE;
            cio_api_key $KEY;
            cio_endpoint http://127.0.0.1:$o{standin};
            cio_write_key $WRITE_KEY;
        }

        # stock nginx: reads the body, discards it, answers 204
        location /base/ {
            return 204;
        }
EOF
    # stock nginx that reads the body into memory, as the module must
    $http .= <<"EOF" if $ECHO;

        location /read/ {
            echo_read_request_body;
            echo_status 204;
        }
EOF
    $http .= "    }\n";
    $t->config(http => $http,
        main => "worker_rlimit_nofile 8192;\n"
            . ($ECHO ? "load_module $ECHO;\n" : ''));
    $t->run;
    return $t;
}

sub nginx_stop {
    my ($t) = @_;
    $t->stop;
    my @bad = $t->errors_in_log;
    push @notes, "nginx error.log had: " . join(' | ', @bad[0 .. ($#bad > 2 ? 2 : $#bad)])
        if @bad;
}

sub rss {
    my ($t) = @_;
    my @w;
    for my $pid ($t->worker_pids) {
        my $s = slurp("/proc/$pid/status");
        my %v = map { $_ => ($s =~ /^$_:\s+(\d+) kB/m ? $1 : 0) }
            qw(VmRSS RssAnon RssShmem);
        push @w, { pid => $pid, %v };
    }
    return \@w;
}

# --- wrk ----------------------------------------------------------------------

sub wrk {
    my (%o) = @_;
    my $script = $o{script} // "$WRK/post.lua";
    my $cmd = sprintf 'timeout -k 5 %d wrk -t%d -c%d -d%ds --timeout 10s '
        . '-s %s %s -- %s %s %s %s',
        $o{secs} + 30, $o{threads} // 1, $o{conns} // 32, $o{secs}, $script,
        $o{url}, $o{body}, $o{ctype} // 'text/plain',
        length($o{auth} // '') ? $o{auth} : '""',
        join(' ', @{ $o{extra} || [] });
    my ($rc, $out) = run_capture($cmd);
    my $v = last_json($out);
    die "bench: wrk failed ($rc): $cmd\n$out\n" unless $v;
    return $v;
}

# --- 0. stand-in capacity ------------------------------------------------------------

# t/cio-standin.pl as the tests run it (JSON::PP, every item recorded)
# against the C one, both on the batch body the module sends under load
sub standin_capacity {
    my $body = "/tmp/bench-batch.$$.json";
    my ($items) = `$BIN/map_cost -b $CAP batch $PAY/batch20.json 2>&1 >$body`
        =~ /items=(\d+)/;
    my $rec = "/tmp/bench-perl-standin.$$.jsonl";

    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        close $r;
        open STDOUT, '>&', $w;
        open STDERR, '>', '/dev/null';
        exec $^X, "$TOP/t/cio-standin.pl", '--listen', '127.0.0.1:0',
            '--workspace', "$SITE:$KEY", '--record', $rec, '--control',
            '--quiet';
        exit 127;
    }
    close $w;
    push @pids, $pid;
    my $line = '';
    my $deadline = time + 10;
    while (time < $deadline && $line !~ /\n/) {
        sysread($r, my $buf, 256) or last;
        $line .= $buf;
    }
    close $r;
    my ($port) = $line =~ /:(\d+)/;

    my %cap;
    if ($port) {
        my $wp = wrk(url => "http://127.0.0.1:$port/api/v2/batch",
            body => $body, ctype => 'application/json', auth => $CIO_BASIC,
            secs => 5, threads => 1, conns => 1);
        my ($st, undef, $json) = Cio::Test::raw_http($port,
            "GET /__standin/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        my $stats = eval { $JSON->decode($json) } || {};
        my $ok = $stats->{by_status}{200} // 0;
        $cap{perl} = { rps => $ok / $wp->{seconds},
            eps => ($stats->{items_accepted} // 0) / $wp->{seconds} };
    }
    stop_pid($pid);
    @pids = grep { $_ != $pid } @pids;
    unlink $rec, "$rec.requests";

    my $s = standin_start();
    my $wc = wrk(url => 'http://127.0.0.1:' . $s->{port} . '/api/v2/batch',
        body => $body, ctype => 'application/json', auth => $CIO_BASIC,
        secs => 3, threads => 1, conns => 1);
    my $st = standin_stats($s);
    standin_stop($s);
    unlink $body;
    $cap{c} = { rps => $st->{by_status}{200} / $wc->{seconds},
        eps => $st->{items_accepted} / $wc->{seconds} };
    $cap{items} = $items;
    $R{standin} = \%cap;

    for my $k (qw(perl c)) {
        next unless $cap{$k};
        printf "  %-4s stand-in: %8.1f requests/s of %s items = %s events/s\n",
            $k eq 'c' ? 'C' : 'Perl', $cap{$k}{rps}, fmt_int($items),
            fmt_int($cap{$k}{eps});
    }
}

# --- 3. mapper cost -------------------------------------------------------------

sub callgrind_ir {
    my ($route, $file, $iter, $prog, $tree) = @_;
    $prog //= 'map_cost';
    my $cg = "/tmp/bench-callgrind.$$.out";
    # BENCH_MAP_TREE=1: the cJSON tree mapper alone, as before issue 14
    my ($rc, $out) = run_capture(($tree ? 'BENCH_MAP_TREE=1 ' : '')
        . "valgrind --tool=callgrind "
        . "--collect-atstart=no --toggle-collect=bench_map_once "
        . "--callgrind-out-file=$cg $BIN/$prog $route $file $iter");
    unlink $cg;
    my ($ir) = $out =~ /Collected\s*:\s*(\d+)/;
    die "bench: callgrind failed: $out\n" if $rc || !$ir;
    my ($items) = $out =~ /items=(\d+)/;
    my ($item_bytes) = $out =~ /item_bytes=(\d+)/;
    my ($body) = $out =~ /body=(\d+)/;
    return ($ir, $items, $item_bytes, $body);
}

sub mapper_cost {
    my @cases = (
        [identify => 'identify', "$PAY/identify.json"],
        [track => 'track', "$PAY/track.json"],
        [page => 'page', "$PAY/page.json"],
        [batch20 => 'batch', "$PAY/batch20.json"],
    );
    for my $c (@cases) {
        my ($name, $route, $file) = @$c;
        # the first calls run on a fresh heap and cost less: the marginal
        # cost of calls 11 to 50 is the steady state of a busy worker
        my ($ir10) = callgrind_ir($route, $file, 10);
        my ($ir50, $items, $item_bytes, $body) = callgrind_ir($route, $file, 50);
        my $per_call = ($ir50 - $ir10) / 40;
        my ($t) = `$BIN/map_cost -t $route $file 0.3` =~ /ns_per_call=(\d+)/;
        $R{map}{$name} = { per_call => $per_call, items => $items,
            per_event => $per_call / $items, first10 => $ir10 / 10,
            body => $body, item_bytes => $item_bytes,
            ns_per_event => ($t // 0) / $items };
        my ($t10) = callgrind_ir($route, $file, 10, undef, 1);
        my ($t50) = callgrind_ir($route, $file, 50, undef, 1);
        $R{map_tree}{$name} = ($t50 - $t10) / 40 / $items;
        printf "  %-9s body %5d B -> %2d item(s), %5d B: %s instructions "
            . "per event (%s per call; first 10 calls %s each), %.1f us/event\n",
            $name, $body, $items, $item_bytes,
            fmt_int($per_call / $items), fmt_int($per_call),
            fmt_int($ir10 / 10), ($t // 0) / $items / 1000;
        printf "            the cJSON tree mapper alone (before issue 14): %s\n",
            fmt_int($R{map_tree}{$name});
    }
}

# --- 4a. zone cost ------------------------------------------------------------------

# a node as queue.c packs it into a run: header and item, 8-aligned
sub node_bytes {
    my ($n) = @_;
    return 8 * ceil($n / 8);
}

sub zone_cost {
    my $zone_mb = 32;
    for my $c ([batch20 => 'batch', "$PAY/batch20.json", '/cio/v1/batch',
                'application/json', $WK_BASIC, 20],
               [track => 'track', "$PAY/track.json", '/cio/v1/t',
                'text/plain', '', 1])
    {
        my ($name, $route, $file, $path, $ctype, $auth, $per_req) = @$c;
        my $s = standin_start(hold => 1);
        my $t = nginx_start(workers => 1, zone => "${zone_mb}m",
            timeout => '300s', standin => $s->{port});

        # until the first 503: the zone is full (at most 60 s)
        my $f = wrk(script => "$WRK/fill.lua", secs => 60, conns => 8,
            url => "http://127.0.0.1:" . $t->port . $path, body => $file,
            ctype => $ctype, auth => $auth, extra => [0, 1]);
        my $rss_full = rss($t);

        standin_post($s, 'release');
        my $st = standin_settle($s, undef, 60);
        nginx_stop($t);
        standin_stop($s);

        my $items = $st->{items_accepted};
        my $reqs = $st->{by_status}{200};
        # {"batch":[ ... ]} and the commas between items
        my $item_avg = ($st->{bytes_accepted} - 12 * $reqs - ($items - $reqs))
            / ($items || 1);
        my $per_event = $zone_mb * 1024 * 1024 / ($items || 1);

        # what the queue's runs should take, from the mapper's own sizes
        my @len = split /\n/, `$BIN/map_cost -l $route $file`;
        my ($sum_len, $sum_slot, $sum_ring) = (0, 0, 0);
        for (@len) {
            $sum_len += $_;
            $sum_slot += node_bytes($_ + $NODE_HEADER);
            # what-if: items packed back to back with a 24-byte header
            $sum_ring += 8 * ceil(($_ + 24) / 8);
        }

        $R{zone}{$name} = { zone_mb => $zone_mb, events => $items,
            answers_200 => $f->{ok}, full => $f->{full},
            per_event => $per_event, item_avg => $item_avg,
            overhead => $per_event / $item_avg - 1,
            slot_avg => $sum_slot / @len, len_avg => $sum_len / @len,
            ring_overhead => $sum_ring / $sum_len - 1,
            rss_shmem_kb => $rss_full->[0]{RssShmem} };
        printf "  %-8s %d MiB zone full at %s events (wrk saw %s x 200, "
            . "%d x 503): %.0f zone bytes per event for %.0f-byte items, "
            . "+%.0f%% (packed nodes: %.0f B for %.0f + %d header)\n",
            $name, $zone_mb, fmt_int($items), fmt_int($f->{ok}), $f->{full},
            $per_event, $item_avg, 100 * ($per_event / $item_avg - 1),
            $sum_slot / @len, $sum_len / @len, $NODE_HEADER;
    }
}

# --- 1. edge --------------------------------------------------------------------

sub edge {
    my $s = standin_start(nice => 1, rate => $RATE, burst => $RATE);
    my $t = nginx_start(workers => 1, zone => '512m', timeout => '10s',
        standin => $s->{port});
    my $base = 'http://127.0.0.1:' . $t->port;

    my %cases = (
        single => { file => "$PAY/track.json", ctype => 'text/plain',
                    auth => '', events => 1, path => 'v1/t' },
        batch => { file => "$PAY/batch20.json", ctype => 'application/json',
                   auth => $WK_BASIC, events => 20, path => 'v1/batch' },
    );

    my $run = sub {
        my ($case, $loc, $secs) = @_;
        my $c = $cases{$case};
        return wrk(url => "$base/$loc/$c->{path}", body => $c->{file},
            ctype => $c->{ctype}, auth => $c->{auth}, secs => $secs,
            threads => 1, conns => $CONNS);
    };

    my @all = ('base', $ECHO ? 'read' : (), 'cio');

    # warm-up: connections, the zone's first pages, the stand-in
    my ($sent, $accepted) = (0, 0);
    for my $case (qw(single batch)) {
        for my $loc (@all) {
            my $w = $run->($case, $loc, 1);
            $sent += accepted($w, $cases{$case}{events}) if $loc eq 'cio';
        }
    }
    drained($s, $sent);
    for my $round (1 .. $ROUNDS) {
        for my $case (qw(single batch)) {
            # alternate which goes first, so neither always gets the quieter
            # second half of a noisy minute
            my @locs = $round % 2 ? @all : reverse @all;
            for my $loc (@locs) {
                standin_post($s, 'hold') if $HOLD;
                my $w = $run->($case, $loc, $SECS);
                standin_post($s, 'release') if $HOLD;
                $w->{rps} = $w->{requests} / $w->{seconds};
                $w->{eps} = $w->{rps} * $cases{$case}{events};
                push @{ $R{edge}{$case}{$loc} }, $w;
                if ($loc eq 'cio') {
                    my $n = accepted($w, $cases{$case}{events});
                    $accepted += $n;
                    $sent += $n;
                    $w->{drain_s} = drained($s, $sent);
                }
                printf "  round %d %-6s %-4s %9s req/s %10s events/s  "
                    . "p50 %6.2f ms  p99 %6.2f ms  non-2xx %d\n",
                    $round, $case, $loc, fmt_int($w->{rps}), fmt_int($w->{eps}),
                    $w->{p50_ms}, $w->{p99_ms}, $w->{non2xx};
            }
        }
    }

    # every accepted event reaches the stand-in (the warm-ups' too)
    my $st = standin_settle($s, undef, 30);
    $R{edge}{delivered} = $st->{items_accepted};
    $R{edge}{accepted_measured} = $accepted;
    nginx_stop($t);
    standin_stop($s);

    for my $case (qw(single batch)) {
        for my $loc (@all) {
            my @runs = sort { $b->{rps} <=> $a->{rps} } @{ $R{edge}{$case}{$loc} };
            $R{edge}{best}{$case}{$loc} = $runs[0];
        }
        for my $ref (grep { $_ ne 'cio' } @all) {
            my @ratios;
            for my $i (0 .. $ROUNDS - 1) {
                push @ratios, $R{edge}{$case}{cio}[$i]{rps}
                    / $R{edge}{$case}{$ref}[$i]{rps};
            }
            $R{edge}{ratios}{$ref}{$case} = \@ratios;
        }
    }
}

# --- 1l. latency at a fixed offered rate -------------------------------------

# wrk's closed loop fills a core with nginx's worker (perf sched: the
# worker 96 % busy at -c4, module and baselines alike), so its p99 is what
# the delivery's few percent of CPU on the same two cores (the sender
# thread, the loopback, the stand-in) take from a saturated machine.  An
# operator's latency is at a load the machine carries: bench/openloop.c
# offers a fixed rate, a fraction of what the reading-body baseline takes
# in this run, on keep-alive connections, each request timed from when it
# was due.
sub latency {
    my $s = standin_start(nice => 1, rate => $RATE, burst => $RATE);
    my $t = nginx_start(workers => 1, zone => '512m', timeout => '10s',
        standin => $s->{port});
    my $base = 'http://127.0.0.1:' . $t->port;
    my %b = (file => "$PAY/track.json", ctype => 'text/plain');
    my @locs = ('read', 'cio');

    my $cap = wrk(url => "$base/read/v1/t", body => $b{file},
        ctype => $b{ctype}, secs => 2, threads => 1, conns => 4);
    $cap = $cap->{requests} / $cap->{seconds};
    $R{latency}{capacity} = $cap;
    printf "  the reading-body baseline takes %s req/s (wrk -c4)\n",
        fmt_int($cap);

    my $accepted = 0;
    for my $frac (@LAT_FRACS) {
        # a fraction of the baseline's capacity, or (above 1) a rate
        my $rate = $frac > 1 ? $frac : int($cap * $frac);
        for my $round (1 .. $ROUNDS) {
            for my $loc ($round % 2 ? @locs : reverse @locs) {
                my $h = openloop(url => "$base/$loc/v1/t", rate => $rate,
                    secs => $SECS, %b);
                push @{ $R{latency}{$frac}{$loc} }, $h;
                if ($loc eq 'cio') {
                    # the warm-up's events are accepted and delivered too
                    $accepted += $h->{ok_all};
                    drained($s, $accepted);
                }
                printf "  %5s (%6s req/s) round %d %-4s %7s req/s  "
                    . "p50 %5.3f  p90 %5.3f  p99 %5.3f  p99.9 %5.3f  "
                    . "max %6.2f ms  non-2xx %d  unanswered %d  "
                    . "lag %.2f ms\n",
                    $frac > 1 ? 'fixed' : sprintf('%.0f %%', 100 * $frac),
                    fmt_int($rate), $round, $loc, fmt_int($h->{rps}),
                    @$h{qw(p50_ms p90_ms p99_ms p999_ms max_ms)},
                    $h->{non2xx}, $h->{unanswered}, $h->{max_lag_ms};
            }
        }
    }
    my $st = standin_settle($s, undef, 30);
    $R{latency}{delivered} = $st->{items_accepted};
    $R{latency}{accepted} = $accepted;
    nginx_stop($t);
    standin_stop($s);
}

# bench/openloop.c at a fixed rate, timed from each request's due time
sub openloop {
    my (%o) = @_;
    my ($port, $path) = $o{url} =~ m{^http://127\.0\.0\.1:(\d+)(/.*)$}
        or die "bench: openloop wants http://127.0.0.1:PORT/PATH\n";
    my $cmd = sprintf 'timeout -k 5 %d %s/openloop -p %d -u %s -b %s '
        . '-r %d -c %d -d %d -w 1 -t "%s" 2>&1',
        $o{secs} + 30, $BIN, $port, $path, $o{file}, $o{rate}, $LAT_CONNS,
        $o{secs}, $o{ctype};
    my ($rc, $out) = run_capture($cmd);
    my $v = last_json($out);
    die "bench: openloop failed ($rc): $cmd\n$out\n" unless $v;
    $v->{rps} = $v->{requests} / $v->{seconds};
    return $v;
}

# --- 1j. the journal's cost -----------------------------------------------------

# two nginx, one with cio_journal and one without, one worker each, both
# delivering to one stand-in; wrk on each in turn, which first alternating.
# The stand-in holds its answers while wrk runs, and answers between runs
# until it has everything: what is measured is the accept path alone,
# with no delivery of either nginx's backlog on the same two cores (the
# drain rate with the journal is part 2's, BENCH_JOURNAL).
sub journal_cost {
    my $jargs = $ENV{BENCH_JOURNAL_SYNC} // 'sync=1s';
    my $s = standin_start(nice => 1, rate => $RATE, burst => $RATE);
    my %t = (
        none => nginx_start(workers => 1, zone => '1024m', timeout => '10s',
            standin => $s->{port}, journal => ''),
        journal => nginx_start(workers => 1, zone => '1024m',
            timeout => '10s', standin => $s->{port}, journal => $jargs),
    );
    my %cases = (
        single => [ "$PAY/track.json", 'text/plain', '', 1, 'v1/t' ],
        batch => [ "$PAY/batch20.json", 'application/json', $WK_BASIC, 20,
                   'v1/batch' ],
    );
    my $run = sub {
        my ($case, $which, $secs) = @_;
        my ($file, $ctype, $auth, undef, $path) = @{ $cases{$case} };
        return wrk(url => 'http://127.0.0.1:' . $t{$which}->port
                . "/cio/$path", body => $file, ctype => $ctype,
            auth => $auth, secs => $secs, threads => 1, conns => 32);
    };

    my $sent = 0;
    for my $case (qw(single batch)) {
        for my $which (qw(none journal)) {
            my $w = $run->($case, $which, 1);
            $sent += accepted($w, $cases{$case}[3]);
        }
    }
    drained($s, $sent);

    my %runs;
    for my $round (1 .. $ROUNDS) {
        for my $case (qw(single batch)) {
            my @which = $round % 2 ? qw(none journal) : qw(journal none);
            for my $which (@which) {
                my @perf = ($round == ($ENV{BENCH_PERF_ROUND} || 1)
                           && $case eq ($ENV{BENCH_PERF_CASE} || 'batch'))
                    ? perf_start($t{$which}, "$case-$which") : ();
                standin_post($s, 'hold');
                my $cpu0 = worker_cpu($t{$which});
                my $w = $run->($case, $which, $SECS);
                $w->{cpu_us} = (worker_cpu($t{$which}) - $cpu0) * 1e6
                    / ($w->{requests} || 1);
                perf_stop(@perf);
                standin_post($s, 'release');
                $w->{rps} = $w->{requests} / $w->{seconds};
                $w->{eps} = $w->{rps} * $cases{$case}[3];
                $sent += accepted($w, $cases{$case}[3]);
                $w->{drain_s} = drained($s, $sent);
                push @{ $runs{$case}{$which} }, $w;
                printf "  round %d %-6s %-7s %9s req/s %10s events/s  "
                    . "p50 %6.2f ms  p99 %6.2f ms  %5.1f us CPU/req  "
                    . "non-2xx %d  drained in %.1f s\n",
                    $round, $case, $which, fmt_int($w->{rps}),
                    fmt_int($w->{eps}), $w->{p50_ms}, $w->{p99_ms},
                    $w->{cpu_us}, $w->{non2xx}, $w->{drain_s};
            }
        }
    }

    standin_settle($s, undef, 30);
    nginx_stop($t{$_}) for qw(none journal);
    standin_stop($s);

    for my $case (qw(single batch)) {
        my @r = map { $runs{$case}{journal}[$_]{rps}
                      / $runs{$case}{none}[$_]{rps} } 0 .. $ROUNDS - 1;
        my @sorted = sort { $a <=> $b } @r;
        my @c = map { $runs{$case}{none}[$_]{cpu_us}
                      / $runs{$case}{journal}[$_]{cpu_us} } 0 .. $ROUNDS - 1;
        my @csorted = sort { $a <=> $b } @c;
        my @cpu = map { my $w = $_; [ sort { $a <=> $b }
                        map { $_->{cpu_us} } @{ $runs{$case}{$w} } ] }
                  qw(none journal);
        $R{journal}{$case} = {
            ratios => \@r,
            median => $sorted[$#sorted / 2],
            cpu_ratios => \@c,
            cpu_median => $csorted[$#csorted / 2],
            cpu_none => $cpu[0][$#{ $cpu[0] } / 2],
            cpu_journal => $cpu[1][$#{ $cpu[1] } / 2],
            none => (sort { $b->{rps} <=> $a->{rps} }
                     @{ $runs{$case}{none} })[0],
            journal => (sort { $b->{rps} <=> $a->{rps} }
                        @{ $runs{$case}{journal} })[0],
        };
    }
    $R{journal}{args} = $jargs;
}

# CPU seconds an nginx's worker has used, all its threads (the sender's,
# the thread pool's syncs): per request, a measure the other processes of
# a busy machine disturb much less than the rate
sub worker_cpu {
    my ($t) = @_;
    my ($pid) = $t->worker_pids;
    my $stat = slurp("/proc/$pid/stat") // return 0;
    my @f = split ' ', substr($stat, rindex($stat, ')') + 2);
    return ($f[11] + $f[12]) / POSIX::sysconf(POSIX::_SC_CLK_TCK());
}

# BENCH_PERF=DIR: perf record of an nginx's worker while wrk runs
sub perf_start {
    my ($t, $name) = @_;
    my $dir = $ENV{BENCH_PERF} or return ();
    my ($pid) = $t->worker_pids;
    mkdir $dir;
    my $perf = fork() // die "fork: $!";
    if ($perf == 0) {
        open STDERR, '>', "$dir/$name.log";
        exec 'perf', 'record', '-g', '-o', "$dir/$name.data", '-p', $pid;
        exit 127;
    }
    push @pids, $perf;
    return ($perf);
}

sub perf_stop {
    my ($perf) = @_;
    return unless $perf;
    kill 'INT', $perf;
    waitpid($perf, 0);
    @pids = grep { $_ != $perf } @pids;
}

# --- 2. delivery and 4b. RSS ------------------------------------------------------------

sub delivery {
    # sized from the measured cost of a queued event of this mix, +30%
    my $per_event = $R{zone}{batch20}{per_event} || 1024;
    my $zone_mb = ceil($EVENTS * 1.02 * $per_event * 1.3 / 1024 / 1024);
    $R{delivery}{zone_mb} = $zone_mb;

    my $s = standin_start(hold => 1, rate => $RATE, burst => $RATE);
    my $t = nginx_start(workers => 2, zone => "${zone_mb}m",
        timeout => '300s', standin => $s->{port});
    printf "  zone %d MiB (%.0f B per event x %s events x 1.3), 2 workers, "
        . "stand-in --rate %d --burst %d, held\n", $zone_mb, $per_event,
        fmt_int($EVENTS), $RATE, $RATE;

    sleep 0.5;
    $R{rss}{start} = rss($t);

    # fill: EVENTS / 20 batch requests, at most 240 s
    my $reqs = ceil($EVENTS / 20);
    my $t_fill = time;
    my $f = wrk(script => "$WRK/fill.lua", secs => 240, threads => 1,
        conns => 16, url => 'http://127.0.0.1:' . $t->port . '/cio/v1/batch',
        body => "$PAY/batch20.json", ctype => 'application/json',
        auth => $WK_BASIC, extra => [$reqs, 0]);
    $t_fill = time - $t_fill;
    my $queued = $f->{ok} * 20;
    $R{delivery}{fill} = { %$f, queued => $queued, secs => $t_fill,
        eps => $queued / $t_fill };
    printf "  filled: %s events queued in %.1f s (%s events/s; 503: %d, "
        . "other: %d)\n", fmt_int($queued), $t_fill, fmt_int($queued / $t_fill),
        $f->{full}, $f->{other};

    sleep 0.5;
    $R{rss}{full} = rss($t);

    # drain: release the held requests, wait for everything (at most 300 s)
    my $t_rel = time * 1000;
    standin_post($s, 'release');
    my $deadline = time + 240;
    my $st;
    while (time < $deadline) {
        $st = standin_stats($s);
        last if $st->{items_accepted} >= $queued;
        sleep 0.1;
    }
    my $complete = $st->{items_accepted} >= $queued;
    my $secs = (($complete ? $st->{last_ms} : $st->{now_ms}) - $t_rel) / 1000;
    my $ok = $st->{by_status}{200} || 1;
    $R{delivery}{drain} = { items => $st->{items_accepted}, secs => $secs,
        eps => $st->{items_accepted} / $secs, rps => $ok / $secs,
        requests => $ok, r429 => $st->{by_status}{429},
        bytes_per_req => $st->{bytes_accepted} / $ok,
        max_body => $st->{max_body}, r400 => $st->{by_status}{400},
        complete => $complete };

    # what the module said about the 429s
    my @delays = map { /retrying in (\d+) ms/ ? $1 : () }
        split /\n/, $t->read_file('error.log');
    if (@delays) {
        my @sorted = sort { $a <=> $b } @delays;
        my $sum = 0;
        $sum += $_ for @delays;
        push @{ $R{delivery}{log} }, sprintf('%d "retrying in" lines, '
            . 'backoff %s to %s ms (%s ms in all, in the order logged: %s)',
            scalar @delays, fmt_int($sorted[0]), fmt_int($sorted[-1]),
            fmt_int($sum), join(' ', map { fmt_int($_) }
                @delays[0 .. ($#delays > 11 ? 11 : $#delays)])
                . ($#delays > 11 ? ' ...' : ''));
        printf "  module log: %s\n", $R{delivery}{log}[-1];
    }
    printf "  drained %s events in %.2f s: %s events/s, %d requests (%.1f/s), "
        . "%s bytes/request (max %s), %d x 429\n",
        fmt_int($st->{items_accepted}), $secs, fmt_int($R{delivery}{drain}{eps}),
        $ok, $ok / $secs, fmt_int($st->{bytes_accepted} / $ok),
        fmt_int($st->{max_body}), $st->{by_status}{429};

    sleep 1;
    $R{rss}{drained} = rss($t);
    for my $k (qw(start full drained)) {
        printf "  RSS %-8s %s\n", $k, join('; ', map {
            sprintf 'worker %d: rss %d MiB (anon %.1f, shmem %.1f)',
                $_->{pid}, $_->{VmRSS} / 1024, $_->{RssAnon} / 1024,
                $_->{RssShmem} / 1024 } @{ $R{rss}{$k} });
    }

    nginx_stop($t);
    standin_stop($s);
}

sub v1_ceiling {
    my $s = standin_start(rate => $RATE, burst => $RATE);
    # one item per request, as a v1 router sends them; the same bucket,
    # full at the start, for as long as the module's drain took (3..10 s)
    my $one = "/tmp/bench-one-item.$$.json";
    system("$BIN/map_cost -b 400 track $PAY/track.json > $one 2>/dev/null");
    my $secs = $R{delivery}{drain}{secs} // 5;
    $secs = 3 if $secs < 3;
    $secs = 10 if $secs > 10;
    $secs = ceil($secs);
    my $w = wrk(url => 'http://127.0.0.1:' . $s->{port} . '/api/v2/batch',
        body => $one, ctype => 'application/json', auth => $CIO_BASIC,
        secs => $secs, threads => 1, conns => 4);
    unlink $one;
    my $st = standin_stats($s);
    standin_stop($s);
    my $ok = $st->{by_status}{200};
    $R{v1} = { secs => $w->{seconds}, ok => $ok, eps => $ok / $w->{seconds},
        r429 => $st->{by_status}{429} };
    printf "  %d events accepted in %.1f s: %.0f events/s (%s x 429)\n",
        $ok, $w->{seconds}, $ok / $w->{seconds}, fmt_int($st->{by_status}{429});
}

# --- the table ----------------------------------------------------------------

sub verdict { $_[0] ? 'PASS' : 'MISS' }

sub median {
    my @v = sort { $a <=> $b } @_;
    return 0 unless @v;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

sub report {
    my (@rows, @detail);

    if (my $e = $R{edge}{best}) {
        my ($sb, $sc) = ($e->{single}{base}, $e->{single}{cio});
        my ($bb, $bc) = ($e->{batch}{base}, $e->{batch}{cio});
        my ($sr, $br) = ($e->{single}{read}, $e->{batch}{read});
        my $r1 = $sc->{rps} / $sb->{rps};
        my $rb = $bc->{rps} / $bb->{rps};
        my $rr = $R{edge}{ratios};
        my $ed = $R{edge};
        my @rounds = 0 .. $ROUNDS - 1;

        # the verdicts are the medians of the rounds, each ratio taken
        # within one round; the best round's figures are shown beside them
        my $x5 = median(map { $ed->{batch}{cio}[$_]{eps}
                              / $ed->{single}{cio}[$_]{eps} } @rounds);
        my @sr = map { sprintf '%.2f', $_ } @{ $rr->{base}{single} };
        my @br = map { sprintf '%.2f', $_ } @{ $rr->{base}{batch} };

        if ($sr) {
            my $r7 = median(@{ $rr->{read}{single} });
            my $p99 = median(map { $ed->{single}{cio}[$_]{p99_ms}
                                   / $ed->{single}{read}[$_]{p99_ms} } @rounds);
            push @rows,
                ['1', 'single `track` (745 B): requests/s = events/s',
                 fmt_int($sc->{rps}), fmt_int($sr->{rps})
                     . ' (stock nginx reading the body)',
                 sprintf('%.2f', $r7), '≥ 0.7', verdict($r7 >= 0.7)],
                ['1', 'single `track`: latency p50 / p99 (ms)',
                 sprintf('%.2f / %.2f', $sc->{p50_ms}, $sc->{p99_ms}),
                 sprintf('%.2f / %.2f', $sr->{p50_ms}, $sr->{p99_ms}),
                 sprintf('%.2f (p99)', $p99),
                 '≤ 1.5 (p99)', verdict($p99 <= 1.5)];
            push @detail, sprintf('- 1: module/reading-body baseline per '
                . 'round: single %s, batch %s; the reading-body baseline is '
                . 'stock nginx with `echo_read_request_body` '
                . '(libnginx-mod-http-echo).',
                join(' ', map { sprintf '%.2f', $_ } @{ $rr->{read}{single} }),
                join(' ', map { sprintf '%.2f', $_ } @{ $rr->{read}{batch} }));
        }

        push @rows,
            ['1', 'single `track` vs `return 204`: requests/s',
             fmt_int($sc->{rps}), fmt_int($sb->{rps}) . ' (stock nginx, '
                 . '`return 204`)',
             sprintf('%.2f', $r1), '', 'info'],
            ['1', 'single `track`: latency p50 / p99 (ms) vs `return 204`',
             sprintf('%.2f / %.2f', $sc->{p50_ms}, $sc->{p99_ms}),
             sprintf('%.2f / %.2f', $sb->{p50_ms}, $sb->{p99_ms}), '', '', ''],
            ['1', '20-call `/v1/batch` (8.5 kB): requests/s',
             fmt_int($bc->{rps}), $br
                 ? fmt_int($br->{rps}) . ' (reading the body), '
                     . fmt_int($bb->{rps}) . ' (`return 204`)'
                 : fmt_int($bb->{rps}) . ' (stock nginx)',
             sprintf('%.2f', $br ? $bc->{rps} / $br->{rps} : $rb), '', ''],
            ['1', '20-call batch: events/s vs single calls/s',
             fmt_int($bc->{eps}), fmt_int($sc->{eps}) . ' (module, single)',
             sprintf('%.1f ×', $x5), '≥ 5 ×', verdict($x5 >= 5)],
            ['1', '20-call batch: latency p50 / p99 (ms)',
             sprintf('%.2f / %.2f', $bc->{p50_ms}, $bc->{p99_ms}),
             sprintf('%.2f / %.2f', $bb->{p50_ms}, $bb->{p99_ms}), '', '', ''];

        push @detail, '- 1: ratios and verdicts are the median of the '
            . 'rounds (each ratio within one round); requests/s and latency '
            . 'are the best round\'s.';
        push @detail, sprintf('- 1: best of %d rounds of %d s each, wrk -t1 '
            . '-c%d on keep-alive connections, one nginx worker (a core for '
            . 'nginx, a core for wrk); module and baselines alternate within '
            . 'a round, delivery to the C stand-in runs meanwhile. '
            . 'module/`return 204` per round: single %s, batch %s.',
            $ROUNDS, $SECS, $CONNS, join(' ', @sr), join(' ', @br));
        push @detail, sprintf('- 1: %s events answered 200 in the measured '
            . 'runs; the stand-in received %s (warm-ups and requests cut off '
            . 'at the end of a run included): %s.',
            fmt_int($R{edge}{accepted_measured}), fmt_int($R{edge}{delivered}),
            $R{edge}{delivered} >= $R{edge}{accepted_measured}
                ? 'every accepted event was delivered' : 'EVENTS MISSING');
    }

    if (my $l = $R{latency}) {
        for my $frac (@LAT_FRACS) {
            my ($c, $r) = ($l->{$frac}{cio}, $l->{$frac}{read});
            my @ratios = map { $c->[$_]{p99_ms} / $r->[$_]{p99_ms} }
                0 .. $#$c;
            my $m = median(@ratios);
            my $lost = 0;
            $lost += $_->{unanswered} + $_->{non2xx} for @$c, @$r;
            my $fmt = sub {
                my ($runs) = @_;
                return sprintf '%.2f / %.2f / %.2f', map {
                    my $k = $_;
                    median(map { $_->{$k} } @$runs)
                } qw(p50_ms p99_ms p999_ms);
            };
            push @rows,
                ['1l', sprintf('single `track` at %s requests/s%s, open '
                    . 'loop: latency p50 / p99 / p99.9 (ms)',
                    fmt_int($c->[0]{rate}), $frac > 1 ? ''
                        : sprintf(' (%.0f %% of the baseline\'s)',
                                  100 * $frac)),
                 $fmt->($c), $fmt->($r) . ' (reading the body)',
                 sprintf('%.2f (p99)', $m), '≤ 1.5 (p99)',
                 verdict($m <= 1.5 && !$lost)];
            push @detail, sprintf('- 1l: at %s requests/s, p99 module/'
                . 'baseline per round: %s; requests unanswered or not '
                . '2xx: %d (any is a MISS); the load generator\'s own '
                . 'lateness at most %.2f ms.', fmt_int($c->[0]{rate}),
                join(' ', map { sprintf '%.2f', $_ } @ratios), $lost,
                (sort { $b <=> $a } map { $_->{max_lag_ms} } @$c, @$r)[0]);
        }
        push @detail, sprintf('- 1l: bench/openloop.c sends each request '
            . 'when it is due (%d keep-alive connections, due times '
            . 'interleaved) and times it from then, so a stall is counted '
            . 'for every request due in it; module and baseline alternate, '
            . '%d rounds of %d s after 1 s of warm-up, medians shown; the '
            . 'baseline\'s capacity (wrk -c4, 2 s) was %s requests/s; '
            . '%s events answered 200 (the warm-ups\' included), %s '
            . 'received by the stand-in: %s.',
            $LAT_CONNS, $ROUNDS, $SECS, fmt_int($l->{capacity}),
            fmt_int($l->{accepted}), fmt_int($l->{delivered}),
            $l->{delivered} >= $l->{accepted}
                ? 'every accepted event was delivered' : 'EVENTS MISSING');
    }

    if (my $j = $R{journal}) {
        for my $case (qw(single batch)) {
            my $c = $j->{$case};
            push @rows,
                ['1j', sprintf('%s: requests/s with `cio_journal %s` vs '
                    . 'without (median of %d rounds)',
                    $case eq 'single' ? 'single `track`'
                                      : '20-call `/v1/batch`',
                    $j->{args}, $ROUNDS),
                 fmt_int($c->{journal}{rps}) . ' (best)',
                 fmt_int($c->{none}{rps}) . ' (best, no journal)',
                 sprintf('%.2f', $c->{median}), '≥ 0.9',
                 verdict($c->{median} >= 0.9)],
                ['1j', sprintf('%s: worker CPU µs per request, without / '
                    . 'with the journal (median of %d rounds)',
                    $case eq 'single' ? 'single `track`'
                                      : '20-call `/v1/batch`', $ROUNDS),
                 sprintf('%.1f', $c->{cpu_journal}),
                 sprintf('%.1f (no journal)', $c->{cpu_none}),
                 sprintf('%.2f', $c->{cpu_median}), '≥ 0.9',
                 verdict($c->{cpu_median} >= 0.9)];
        }
        push @detail, sprintf('- 1j: journal/no journal per round, '
            . 'requests/s: single %s, batch %s; worker CPU per request '
            . '(no journal/journal): single %s, batch %s; two nginx side by '
            . 'side, one worker each, wrk -t1 -c32 for %d s on each in turn '
            . '(which first alternating), one 1 GB zone each; the C '
            . 'stand-in (nice 19, Customer.io\'s 100 requests/s) holds '
            . 'its answers during each run and delivers both backlogs '
            . 'between runs, so the accept path alone is measured; CPU '
            . 'is the worker\'s, all its threads, from /proc/PID/stat.',
            map({ my $k = $_; map { join ' ', map { sprintf '%.2f', $_ }
                      @{ $j->{$_}{$k} } } qw(single batch) }
                qw(ratios cpu_ratios)),
            $SECS);
    }

    if (my $d = $R{delivery}{drain}) {
        my $fill = $R{delivery}{fill};
        my $v1 = $R{v1} || {};
        push @rows,
            ['2', sprintf('backlog of %s events drained under %d req/s: '
                . 'events/s', fmt_int($fill->{queued}), $RATE),
             fmt_int($d->{eps}) . sprintf(' (%.1f s)', $d->{secs}),
             fmt_int($v1->{eps}) . ' (v1 router: 1 event per request)',
             sprintf('%s ×', fmt_int($d->{eps} / ($v1->{eps} || 1))),
             '≥ 50,000', verdict($d->{eps} >= 50_000 && $d->{complete}
                 && $fill->{queued} >= 1_000_000)],
            ['2', 'bytes per request (largest)',
             fmt_int($d->{bytes_per_req}) . ' (' . fmt_int($d->{max_body}) . ')',
             fmt_int($CAP) . ' (cap)',
             sprintf('%.1f%%', 100 * $d->{bytes_per_req} / $CAP),
             '≥ 90% of the cap', verdict($d->{bytes_per_req} >= 0.9 * $CAP
                 && $d->{max_body} <= $CAP)],
            ['2', 'requests/s answered 200 (429 answers)',
             sprintf('%.1f (%s × 429)', $d->{rps}, fmt_int($d->{r429})),
             sprintf('%.1f (v1 router, %s × 429)', $v1->{eps} // 0,
                 fmt_int($v1->{r429})),
             sprintf('%.2f of the limit', $d->{rps} / $RATE), '', ''];
        push @detail, sprintf('- 2: %s events queued by %s × 200 to 20-call '
            . 'batches in %.1f s (%s events/s, two workers) while the '
            . 'stand-in held its answers; then released. The drain %s: '
            . '%s events in %.1f s, %s requests answered 200, %s × 429, '
            . '%s × 400. Stand-in token bucket: %d/s, burst %d; the v1 '
            . 'router run had the same bucket for %.0f s.',
            fmt_int($fill->{queued}), fmt_int($fill->{ok}), $fill->{secs},
            fmt_int($fill->{eps}),
            $d->{complete} ? 'completed' : 'DID NOT COMPLETE in time',
            fmt_int($d->{items}), $d->{secs}, fmt_int($d->{requests}),
            fmt_int($d->{r429}), fmt_int($d->{r400} // 0), $RATE, $RATE,
            $v1->{secs} // 0);
        push @detail, "- 2: the module's log of the drain: $_"
            for @{ $R{delivery}{log} || [] };
    }

    if (my $m = $R{map}) {
        my ($mi, $mt, $mp) = map { $m->{$_}{per_event} } qw(identify track page);
        push @rows,
            ['3', 'mapper instructions per event: identify / track / page',
             join(' / ', map { fmt_int($_) } $mi, $mt, $mp),
             '', sprintf('%.2f / 1 / %.2f', $mi / $mt, $mp / $mt),
             '≤ 15,000 (track); identify, page ≤ 1.5 × track',
             verdict($mt <= 15_000 && $mi <= 1.5 * $mt && $mp <= 1.5 * $mt)],
            ['3', 'mapper instructions: 20-call batch, per event (per batch)',
             fmt_int($m->{batch20}{per_event}) . ' (' . fmt_int($m->{batch20}{per_call}) . ')',
             fmt_int($mt) . ' (track alone)',
             sprintf('%.2f', $m->{batch20}{per_event} / $mt),
             '≤ 10,000', verdict($m->{batch20}{per_event} <= 10_000)];
        if (my $a = $R{map_tree}) {
            push @rows,
                ['3', 'the cJSON tree mapper alone (before issue 14), '
                    . 'identify / track / page / batch per event',
                 join(' / ', map { fmt_int($a->{$_}) } qw(identify track page batch20)),
                 '', sprintf('%.1f × (track)', $a->{track} / $mt),
                 '', 'info'];
        }
        push @detail, sprintf('- 3: instructions (callgrind) of '
            . 'ngx_http_cio_map_request() + ngx_http_cio_map_result_free(): '
            . 'parse, map, serialize, free; the marginal cost of calls 11 to '
            . '50 (a long-running worker\'s heap; the first 10 calls cost %s each '
            . 'for track). Wall clock here (noisy): %s µs per event '
            . '(identify / track / page / batch).',
            fmt_int($m->{track}{first10}),
            join(' / ', map { sprintf '%.1f', $m->{$_}{ns_per_event} / 1000 }
                qw(identify track page batch20)));
    }

    if (my $z = $R{zone}{batch20}) {
        my $zt = $R{zone}{track};
        push @rows,
            ['4', 'zone bytes per queued event, 20-call batch mix',
             sprintf('%.0f', $z->{per_event}),
             sprintf('%.0f (item)', $z->{item_avg}),
             sprintf('+%.0f%%', 100 * $z->{overhead}), '≤ +25%',
             verdict($z->{overhead} <= 0.25)],
            ['4', 'zone bytes per queued event, single tracks',
             sprintf('%.0f', $zt->{per_event}),
             sprintf('%.0f (item)', $zt->{item_avg}),
             sprintf('+%.0f%%', 100 * $zt->{overhead}), '', ''],
            ['4', 'what-if: batch mix packed back to back, 24-byte header',
             '', '', sprintf('+%.0f%%', 100 * $z->{ring_overhead}), '', 'info'];
        push @detail, sprintf('- 4: a %d MiB zone filled until the first 503 '
            . 'held %s events of the batch mix, %s single tracks; from the '
            . 'mapper\'s item sizes each node, packed into 16 KB runs of '
            . 'pages, should take %.0f bytes on average for %.0f item bytes '
            . '+ a %d-byte node header, 8-aligned.',
            $z->{zone_mb}, fmt_int($z->{events}), fmt_int($zt->{events}),
            $z->{slot_avg}, $z->{len_avg}, $NODE_HEADER);
    }

    if ($R{rss}{drained}) {
        my ($grow, $anon0, $anon1, $shm) = (0, 0, 0, 0);
        my %start = map { $_->{pid} => $_ } @{ $R{rss}{start} };
        for my $w (@{ $R{rss}{drained} }) {
            my $s0 = $start{ $w->{pid} } or next;
            my $g = $w->{RssAnon} - $s0->{RssAnon};
            $grow = $g if $g > $grow;
            $anon0 += $s0->{RssAnon};
            $anon1 += $w->{RssAnon};
        }
        $shm += $_->{RssShmem} for @{ $R{rss}{drained} };
        my $nw = scalar @{ $R{rss}{drained} } || 1;
        my $same = @{ $R{rss}{drained} } == @{ $R{rss}{start} }
            && !grep { !$start{ $_->{pid} } } @{ $R{rss}{drained} };
        push @rows,
            ['4', sprintf('worker private RSS, before → after %s events '
                 . '(MiB per worker)', fmt_int($R{delivery}{fill}{queued})),
             sprintf('%.1f → %.1f', $anon0 / 1024 / $nw, $anon1 / 1024 / $nw),
             sprintf('zone %d MiB; shared RSS %.0f MiB', $R{delivery}{zone_mb},
                 $shm / 1024 / $nw),
             sprintf('+%.1f MiB', $grow / 1024), 'flat (≤ +16 MiB)',
             verdict($same && $grow <= 16 * 1024)];
        push @detail, '- 4: RSS per worker, kB (private anon / shared): '
            . join('; ', map {
                my $k = $_;
                "$k " . join(', ', map { "$_->{RssAnon} / $_->{RssShmem}" }
                    @{ $R{rss}{$k} }) } qw(start full drained));
    }

    if (my $cap = $R{standin}) {
        push @rows,
            ['0', 'stand-in capacity, 500,000-byte batches: events/s (req/s)',
             sprintf('%s (%.0f), C', fmt_int($cap->{c}{eps}), $cap->{c}{rps}),
             $cap->{perl} ? sprintf('%s (%.1f), Perl t/cio-standin.pl',
                 fmt_int($cap->{perl}{eps}), $cap->{perl}{rps}) : '-',
             $cap->{perl} && $cap->{perl}{eps}
                 ? sprintf('%s ×', fmt_int($cap->{c}{eps} / $cap->{perl}{eps})) : '',
             sprintf('> %d req/s', $RATE), verdict($cap->{c}{rps} > $RATE)];
    }

    push @detail, "- $_" for @notes;
    push @detail, sprintf('- load average %s at the start, %s at the end; '
        . 'the run took %.0f s.', $R{machine}{load_before},
        $R{machine}{load_after}, $R{elapsed});

    my @md = ('| # | measure | module | baseline / reference | ratio | target | result |',
        '|---|---|---|---|---|---|---|');
    push @md, '| ' . join(' | ', @$_) . ' |' for @rows;
    my $text = join "\n", @md;

    print "\n$text\n\n", join("\n", @detail), "\n";

    open my $fh, '>', $OUT or die "$OUT: $!";
    print $fh "# Benchmark results\n\n";
    print $fh "Written by `make bench` (bench/bench.pl); what each line "
        . "measures and how: [README.md](README.md). A MISS is a finding, "
        . "not a failure.\n\n";
    print $fh "Machine: " . join("  \n", @{ $R{machine}{lines} }) . "\n\n";
    print $fh "$text\n\n", join("\n", @detail), "\n";
    close $fh;

    print "\nwritten to $OUT\n";
}
