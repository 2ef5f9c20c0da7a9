#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The Customer.io Track API stand-in (see t/lib/Cio/Standin.pm).
#
#   perl t/cio-standin.pl --listen 127.0.0.1:PORT --workspace SITE:KEY
#       [--workspace SITE2:KEY2 ...] [--record FILE] [--rate N] [--burst N]
#       [--control] [--quiet] [--anonymous-id 0|1] [--nested-limits 0|1]
#
# The rate limit is on unless --rate 0: by default 1000 requests a second,
# bursts of 3000, as Customer.io publishes.  --anonymous-id and
# --nested-limits are the switches for rules the real API has not
# confirmed (see t/lib/Cio/Standin.pm).
#
# Prints "listening on 127.0.0.1:PORT" once ready (PORT 0 picks a free
# port) and runs until SIGTERM or SIGINT.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Getopt::Long qw(GetOptions);
use Cio::Standin;

my %o = (listen => '127.0.0.1:0', workspace => []);

GetOptions(\%o, 'listen=s', 'workspace=s@', 'record=s', 'rate=f',
    'burst=f', 'control', 'quiet', 'anonymous-id=i', 'nested-limits=i',
    'help')
    or usage(2);
usage(0) if $o{help};
usage(2) unless @{ $o{workspace} };

exit Cio::Standin::run(
    listen => $o{listen},
    workspaces => $o{workspace},
    record => $o{record},
    rate => $o{rate},
    burst => $o{burst},
    control => $o{control},
    quiet => $o{quiet},
    anonymous_id => $o{'anonymous-id'},
    nested_limits => $o{'nested-limits'},
);

sub usage {
    my ($rc) = @_;
    print STDERR "usage: $0 --listen 127.0.0.1:PORT --workspace SITE:KEY"
        . " [--workspace ...] [--record FILE] [--rate N] [--burst N]"
        . " [--control] [--quiet] [--anonymous-id 0|1]"
        . " [--nested-limits 0|1]\n";
    exit $rc;
}
