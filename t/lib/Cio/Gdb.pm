# SPDX-License-Identifier: BSD-2-Clause
package Cio::Gdb;

# gdb holding a worker at a breakpoint, for the tests that must stop a
# process at an exact point (t/49-zone-lock.t, t/52-review.t).  The files
# gdb.stopped and gdb.go in the test directory are the handshake.

use strict;
use warnings;

use Exporter qw(import);
use POSIX qw(:sys_wait_h);
use Cio::Test qw(wait_until);

our @EXPORT_OK = qw($GDB attach_error proc_field stop_at stopped release);

our ($GDB) = grep { -x $_ } map { "$_/gdb" } split /:/, $ENV{PATH};

# gdb's pid => the pid it holds, and the test directory
my (%held, %dirs);
my $PYTHON;

# a field of /proc/PID/status (TracerPid, State, ...), or undef
sub proc_field {
    my ($pid, $field) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (my $line = <$fh>) {
        return $1 if $line =~ /^\Q$field\E:\s*(\S+)/;
    }
    return undef;
}

# undef when gdb can attach to $pid here, else what gdb said (a
# container may forbid ptrace)
sub attach_error {
    my ($pid) = @_;
    my $out = `$GDB -nx -batch -p $pid -ex 'detach' 2>&1`;
    return ($? == 0 && $out !~ /ptrace: Operation not permitted/)
        ? undef : $out;
}

# Attaches gdb to $pid in the background and runs it to $break ($skip hits
# ignored); gdb then holds it there, stopped, until release() is called.
# Returns gdb's pid.  Its handshake files are named after the pid, so
# that gdb may hold more than one worker of a test at once.
sub stop_at {
    my ($t, $pid, $break, $skip) = @_;

    my $dir = $t->dir;
    unlink "$dir/gdb.stopped.$pid", "$dir/gdb.go.$pid";

    my @ex = ('set pagination off', "break $break");
    push @ex, "ignore 1 $skip" if $skip;
    # Python's open() where gdb has it, not a shell's touch: the file is
    # there at once, not after a fork and two execs
    $PYTHON //= `$GDB -nx -batch -ex 'python print(1)' 2>/dev/null`
                =~ /^1$/m ? 1 : 0;
    push @ex, 'continue', $PYTHON
        ? "python open('$dir/gdb.stopped.$pid', 'w').close()"
        : "shell touch $dir/gdb.stopped.$pid",
        # bounded: ten minutes, should the test die without release()
        "shell i=0; while [ ! -e $dir/gdb.go.$pid ] && [ \$i -lt 12000 ];"
            . " do sleep 0.05; i=\$((i+1)); done",
        'detach', 'quit';

    my $gdb = fork();
    die "fork: $!" unless defined $gdb;

    if ($gdb == 0) {
        open STDOUT, '>>', "$dir/gdb.log";
        open STDERR, '>&', \*STDOUT;
        open STDIN, '<', '/dev/null';
        exec $GDB, '-nx', '-batch', '-p', $pid, map { ('-ex', $_) } @ex;
        exit 127;
    }

    $held{$gdb} = $pid;
    $dirs{$gdb} = $dir;

    return $gdb;
}

# waits until gdb holds the process at its breakpoint
sub stopped {
    my ($t, $gdb, $timeout) = @_;
    my $file = $t->dir . "/gdb.stopped.$held{$gdb}";
    return wait_until(sub {
        -e $file || waitpid($gdb, WNOHANG) == $gdb
    }, $timeout) && -e $file;
}

# lets gdb go on (a killed process is only reaped by its parent once its
# tracer has seen it die) and waits for gdb to exit
sub release {
    my ($t, $gdb) = @_;
    open my $fh, '>', $t->dir . "/gdb.go.$held{$gdb}" or die "gdb.go: $!";
    close $fh;
    unless (wait_until(sub { waitpid($gdb, WNOHANG) == $gdb }, 20)) {
        kill 'KILL', $gdb;
        waitpid($gdb, 0);
    }
    delete $dirs{$gdb};
}

# a test that died holding a process lets gdb go (and waits for it, as
# the test directory with the file in it goes next): gdb and its waiting
# shell would otherwise outlive the test, and the stopped worker with them
END {
    for my $gdb (keys %dirs) {
        if (open my $fh, '>', "$dirs{$gdb}/gdb.go.$held{$gdb}") {
            close $fh;
        }
    }
    for my $gdb (keys %dirs) {
        next if wait_until(sub { waitpid($gdb, WNOHANG) != 0 }, 10);
        kill 'KILL', $gdb;
    }
}

1;
