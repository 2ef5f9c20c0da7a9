#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Refusals that must not vanish: a 207 longer than 64 KB still names every
# refused item, and an answer that cannot be read in full never counts a
# batch as delivered.  A batch Customer.io rejects whole for one bad item
# is split until that item is found: the others are delivered.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Cio::Test qw(wait_until);
use Cio::Load qw(post_events post_batch dead_letters missing);

my $t = Cio::Test->new;
my $cio = $t->standin(workspaces => ['site1:key1']);
my $file = $t->dir . '/dead.jsonl';

# what this file provokes, at [error]: each is asserted below
$t->allow_log(
    qr/\[error\].*cio: Customer\.io refused 2000 of 2000 events for site "site1" \(207\), 2000 dead-lettered to /,
    qr/\[error\].*cio: gave up on 1 events for site "site1" after 1 retries \(cio_retry_max\), the last got 207; dead-lettered to /,
    qr/\[error\].*cio: the batch of \d+ events for site "site1" rejected with 400 was sent again in \d+ pieces: /);

$t->config(http => <<"END")->run;
    cio_zone zone=cio:16m;
    cio_flush_interval 20ms;
    cio_retry_backoff 20ms 100ms;
    cio_retry_max 1;
    cio_dead_letter $file;

    server {
        listen 127.0.0.1:%%PORT%%;
        location /cio/ {
            cio_ingest segment;
            cio_site_id site1;
            cio_api_key key1;
            cio_endpoint @{[ $cio->url ]};
        }
        location = /cio-status {
            cio_status;
        }
    }
END

sub stats { $t->ws_stats('/cio-status', 'site1') }

sub dead_names {
    my ($re) = @_;
    return [ sort grep { /$re/ } map { $_->{item}{name} }
             @{ dead_letters($file) } ];
}

# --- a 207 of some 200 KB: 2,000 refused calls in one batch -----------------

$cio->mode({ refuse_match => '^refused-' });

my @names = map { "refused-$_" } 1 .. 2000;
my @accepted = post_batch($t, '/cio', \@names);
is(scalar @accepted, 2000, 'a batch of 2,000 calls accepted');

ok(wait_until(sub { @{ dead_letters($file) } >= 2000 }, 30),
    'every refused call reached the dead-letter file')
    or diag(scalar @{ dead_letters($file) } . ' dead letters');
is_deeply(dead_names(qr/^refused-/), [ sort @names ],
    'exactly those calls, each once');

my $req = (grep { $_->{items} } @{ $cio->requests })[0];
is($req->{items}, 2000, 'they went out in one batch, so the 207 was some 200 KB');

my $s = stats();
is($s->{delivered}, 0, 'none of them counted as delivered');
is($s->{refused}, 2000, 'all counted as refused');
is($s->{dead_lettered}, 2000, 'and as dead-lettered');
ok(wait_until(sub { $t->log_lines(qr/\[error\].*cio: Customer\.io refused 2000 of 2000 events for site "site1" \(207\), 2000 dead-lettered to \Q$file\E/) }, 5),
    'the log says so');
ok(!$t->log_lines(qr/without a usable batch_index|cannot be used/),
    'and does not call the answer unusable');

my $d = (grep { $_->{item}{name} eq 'refused-1999' } @{ dead_letters($file) })[0];
is($d->{answer}{batch_index}, 1998, 'each with its own error');
is($d->{reason}, 'refused', 'and the reason');

# --- a 207 longer than the batch can need is not taken for a whole one ------

$cio->mode({ refuse_match => '^long-', pad_207 => 200_000 });

my @long = post_events($t, '/cio', 'long', 1);
is(scalar @long, 1, 'an event accepted');
ok(wait_until(sub { @{ dead_names(qr/^long-/) } }, 15),
    'a 207 too long to read: the event is retried, then dead-lettered');
$d = (grep { $_->{item}{name} eq 'long-1' } @{ dead_letters($file) })[0];
is($d->{reason}, 'retries exhausted', 'as one whose fate is not known');
is($d->{attempts}, 2, 'after cio_retry_max + 1 attempts');
is($d->{status}, 207, 'with the status');
ok($t->log_lines(qr/\[warn\].*cio: site "site1" answered 207 for 1 events with an answer of \d+\+ bytes that cannot be used \(it is longer than the batch can need\)/),
    'a warning says why');
is(stats()->{delivered}, 0, 'nothing was counted as delivered');

$cio->mode({ refuse_match => undef, pad_207 => undef });

# --- a 400 for a whole batch: only the item at fault is dead-lettered --------

# Customer.io answers 400 for a batch that holds one malformed item: the
# poisoned event and the other requests' events queue together while it
# answers 503, then go out in one batch

$cio->mode({ status => 503 });
my @poisoned = post_events($t, '/cio', 'poison', 1);
my @bystanders = post_events($t, '/cio', 'bystander', 9);

# two senders may have taken them in pieces: the test goes on once all ten
# wait in the queue together, so that whichever sender takes next takes all
ok(wait_until(sub {
        my $s = stats();
        return ($s->{queued} // 0) == 10 && ($s->{in_flight} // 1) == 0
            && grep { $_->{status} == 503 } @{ $cio->requests };
    }, 10),
    'Customer.io is busy while they queue');
my $before = @{ $cio->requests };
$cio->mode({ status => undef, poison_match => '^poison-' });

is_deeply($cio->wait_names(\@bystanders, 10), [],
    'every other event is delivered');
ok(wait_until(sub { @{ dead_names(qr/^poison-/) } }, 10),
    'the poisoned one is dead-lettered');
is_deeply(dead_names(qr/^(?:poison|bystander)-/), ['poison-1'],
    'and only it');
# a batch sent as the mode changed may still have been answered 503
my @sent = grep { $_->{status} != 503 }
    @{ $cio->requests }[$before .. $#{ $cio->requests }];
is($sent[0]{items}, 10, 'they had gone out in one batch');
is($sent[0]{status}, 400, 'which Customer.io rejected whole');
cmp_ok(scalar @sent, '<=', 1 + 2 * 4, 'found in few requests')
    or diag(scalar @sent);
$d = (grep { $_->{item}{name} eq 'poison-1' } @{ dead_letters($file) })[0];
is($d->{status}, 400, 'its dead letter has the status');
is($d->{reason}, 'batch rejected', 'the reason');
is($d->{answer}{errors}[0]{message}, 'refused by the stand-in (poison_match)',
    'and Customer.io\'s answer to it alone');
ok(wait_until(sub { $t->log_lines(qr/\[error\].*cio: the batch of 10 events for site "site1" rejected with 400 was sent again in \d+ pieces: 9 delivered, 1 dead-lettered to \Q$file\E, 0 queued again/) }, 5),
    'the log says what became of the batch');
ok($t->log_lines(qr/\[warn\].*cio: Customer\.io rejected a batch of 10 events for site "site1" with 400: .*; sending it again in halves/),
    'and why it was split');

# every item bad: the split stops after a bounded number of requests

$before = @{ $cio->requests };
my @all_bad = post_batch($t, '/cio', [ map { "poison-all-$_" } 1 .. 200 ]);
is(scalar @all_bad, 200, 'a batch of 200 poisoned events accepted');
ok(wait_until(sub { @{ dead_names(qr/^poison-all-/) } >= 200 }, 20),
    'all of them are dead-lettered');
is_deeply(dead_names(qr/^poison-all-/), [ sort @all_bad ], 'each once');
@sent = @{ $cio->requests }[$before .. $#{ $cio->requests }];
cmp_ok(scalar @sent, '<=', 1 + 64, 'in at most 65 requests');
ok(wait_until(sub { $t->log_lines(qr/\[error\].*cio: the batch of 200 events for site "site1" rejected with 400 was sent again in 64 pieces: 0 delivered, 200 dead-lettered to \Q$file\E, 0 queued again; the pieces still rejected at the limit of pieces were dead-lettered whole/) }, 5),
    'the log says the rest was dead-lettered whole');

$cio->mode({ poison_match => undef });

is_deeply(missing([ @accepted, @long, @poisoned, @bystanders, @all_bad ],
                  $cio->names,
                  map { $_->{item}{name} } @{ dead_letters($file) }), [],
    'every accepted event was delivered or dead-lettered');

$t->done;
