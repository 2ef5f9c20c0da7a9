#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Sends the items of a cio_dead_letter file (or of a cio_spool file) to
# Customer.io again, after an operator fixed what made them fail.
#
#   scripts/cio-replay.pl --key SITE:KEY [--key SITE2:KEY2 ...]
#       [--endpoint https://track-eu.customer.io] [--out FILE]
#       [--retries N] [--dry-run] FILE...
#
# Each line's item goes to POST {url}/api/v2/batch of its site ("url" in the
# line, or --endpoint), in batches under 450 KB, with Basic auth from the
# --key of its site (or CIO_REPLAY_KEYS="site:key,site2:key2").  Items that
# are refused again, or could not be sent, are written to --out (default
# FILE.left) in the same format with the new answer: nothing vanishes.
# Connection errors, 408, 429 and 5xx are retried --retries times (3).
#
# Exit status: 0 when every item was delivered, 1 when some were left,
# 2 on bad usage.  Needs curl (for https) and core Perl only.

use strict;
use warnings;

use File::Temp qw(tempfile);
use Getopt::Long qw(GetOptions);
use JSON::PP;
use POSIX qw(strftime);
use Time::HiRes qw(sleep);

use constant MAX_BATCH => 450_000;

my $JSON = JSON::PP->new->canonical;
my (@keys, $endpoint, $out, $dry);
my $retries = 3;

GetOptions('key=s' => \@keys, 'endpoint=s' => \$endpoint, 'out=s' => \$out,
    'retries=i' => \$retries, 'dry-run' => \$dry)
    or usage();
usage() unless @ARGV;

push @keys, split /,/, $ENV{CIO_REPLAY_KEYS} if $ENV{CIO_REPLAY_KEYS};
my %key = map { my ($s, $k) = split /:/, $_, 2; ($s => $k) } @keys;
$endpoint =~ s{/+$}{} if defined $endpoint;
$out //= "$ARGV[0].left";

# site + url => [ {line => decoded, item => raw text}, ... ]
my (%groups, @order, @left);
my ($total, $delivered, $refused, $unsent) = (0, 0, 0, 0);

for my $file (@ARGV) {
    open my $fh, '<', $file or die "$file: $!\n";
    while (my $raw = <$fh>) {
        chomp $raw;
        next if $raw =~ /^\s*$/;
        $total++;
        my $line = eval { $JSON->decode($raw) };
        my $at = index $raw, ',"item":';
        if (!$line || ref $line->{item} ne 'HASH' || $at < 0) {
            warn "$file:$.: not a dead-letter or spool line, kept\n";
            push @left, $raw;
            next;
        }
        # verbatim, so that numbers go out exactly as they came in
        my $item = substr $raw, $at + 8;
        $item =~ s/\}\s*$//;
        my $url = defined $endpoint ? "$endpoint/api/v2/batch" : $line->{url};
        my $g = "$line->{site_id}\n$url";
        push @order, $g unless $groups{$g};
        push @{ $groups{$g} }, { line => $line, item => $item };
    }
    close $fh;
}

for my $g (@order) {
    my ($site, $url) = split /\n/, $g, 2;
    my @items = @{ $groups{$g} };

    if (!defined $key{$site}) {
        warn "no --key for site \"$site\": its " . @items . " items are kept\n";
        left($_, 0, 'no key to replay with', undef) for @items;
        next;
    }

    while (@items) {
        my ($size, @batch) = (12);
        while (@items && ($size + length($items[0]{item}) + 1 < MAX_BATCH
                          || !@batch)) {
            $size += length($items[0]{item}) + 1;
            push @batch, shift @items;
        }
        send_batch($site, $url, \@batch);
    }
}

if (@left) {
    open my $fh, '>', $out or die "$out: $!\n";
    print $fh "$_\n" for @left;
    close $fh;
}

printf "replayed %d items: %d delivered, %d refused again, %d not sent%s\n",
    $total, $delivered, $refused, $total - $delivered - $refused,
    @left ? "; " . @left . " lines kept in $out" : '';

exit(@left ? 1 : 0);


sub send_batch {
    my ($site, $url, $batch) = @_;
    my $body = '{"batch":[' . join(',', map { $_->{item} } @$batch) . ']}';

    if ($dry) {
        print "would send " . @$batch . " items of site $site to $url\n";
        $delivered += @$batch;
        return;
    }

    my ($status, $answer);
    for my $try (0 .. $retries) {
        sleep(0.5 * 2 ** ($try - 1)) if $try;
        ($status, $answer) = post($url, "$site:$key{$site}", $body);
        last unless $status == 0 || $status == 408 || $status == 429
            || $status >= 500;
    }

    if ($status == 200) {
        $delivered += @$batch;
        return;
    }

    if ($status == 207) {
        my $doc = eval { $JSON->decode($answer) } || {};
        my %bad = map { ($_->{batch_index} // -1) => $_ }
            @{ $doc->{errors} || [] };
        for my $i (0 .. $#$batch) {
            if ($bad{$i}) {
                $refused++;
                left($batch->[$i], 207, 'refused', $bad{$i});
            } else {
                $delivered++;
            }
        }
        return;
    }

    my $why = $status >= 400 && $status < 500 ? 'batch rejected'
        : 'not delivered';
    $refused += @$batch if $why eq 'batch rejected';
    my $doc = eval { $JSON->decode($answer) } // $answer;
    left($_, $status, $why, $doc) for @$batch;
}

# the line again, with this attempt's answer
sub left {
    my ($entry, $status, $reason, $answer) = @_;
    my %l = %{ $entry->{line} };
    delete $l{item};
    @l{qw(time status reason answer)} = (
        strftime('%Y-%m-%dT%H:%M:%S+00:00', gmtime), $status, $reason,
        $answer);
    my $head = $JSON->encode(\%l);
    $head =~ s/\}$//;
    push @left, $head . ',"item":' . $entry->{item} . '}';
}

# POST with curl, the credentials on its standard input, not its command line
sub post {
    my ($url, $userpwd, $body) = @_;
    my ($bfh, $bfile) = tempfile(UNLINK => 1);
    my ($rfh, $rfile) = tempfile(UNLINK => 1);
    print $bfh $body;
    close $bfh;

    (my $u = $userpwd) =~ s/(["\\])/\\$1/g;
    open my $curl, '-|', 'sh', '-c', 'printf "%s\n" "$0" | curl -sS -K - '
        . '-o "$1" -w "%{http_code}" -X POST -H "Content-Type: application/json" '
        . '--data-binary "@$2" --max-time 30 "$3"',
        "user = \"$u\"", $rfile, $bfile, $url
        or return (0, "curl: $!");
    my $code = <$curl> // '000';
    close $curl;

    open my $r, '<', $rfile;
    local $/;
    my $answer = <$r> // '';
    return ($code =~ /^(\d+)$/ ? 0 + $1 : 0, $answer);
}

sub usage {
    print STDERR "usage: $0 --key SITE:KEY [--key ...] [--endpoint URL]"
        . " [--out FILE] [--retries N] [--dry-run] FILE...\n";
    exit 2;
}
