#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# Partial failure and the dead-letter file: a 207 marks only the items it
# names, which go to cio_dead_letter with the answer and the time; a 400
# for a whole batch and for each of its items alone does the same for all
# of it (t/46-refusals.t: for the items at fault only); an item that fails
# more than cio_retry_max times goes there too.  Everything accepted is either
# recorded by the stand-in or in the file, and scripts/cio-replay.pl sends
# the fixed lines again.  Without cio_dead_letter, the error log keeps them.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Encode ();
use JSON::PP ();
use Cio::Test qw(wait_until);
use Cio::Load qw(post_events post_batch dead_letters missing);

sub conf {
    my ($url, $dead) = @_;
    return Cio::Test::ingest_http(endpoint => $url, http => <<"END");
cio_flush_interval 20ms;
cio_retry_backoff 20ms 100ms;
cio_retry_max 2;
$dead
END
}

my $t = Cio::Test->new;
my $cio = $t->standin(workspaces => ['site1:key1']);
my $file = $t->dir . '/dead.jsonl';

# what this file provokes, at [error]: each is asserted below
$t->allow_log(
    qr/\[error\].*cio: Customer\.io refused \d+ of \d+ events for site "site1" \(207\), \d+ dead-lettered to /,
    qr/\[error\].*cio: the batch of 3 events for site "site1" rejected with 400 was sent again in \d+ pieces: 0 delivered, 3 dead-lettered to /,
    qr/\[error\].*cio: gave up on 1 events for site "site1" after 2 retries \(cio_retry_max\)/,
    qr/\[error\].*cio: Customer\.io rejected a batch of 1 events for site "site1" with 400: (?:caf. au lait|x{400}\.\.\.); 1 dead-lettered to /);

$t->config(http => conf($cio->url, "cio_dead_letter $file;"))->run;

# the dead-letter file's whole lines, as bytes
sub raw_lines {
    my ($file) = @_;
    open my $fh, '<:raw', $file or return ();
    return grep { /\n\z/ } <$fh>;
}

sub dead_names {
    return [ sort map { $_->{item}{name} } @{ dead_letters($file) } ];
}

# --- 207: only the named items are refused --------------------------------

$cio->mode({ refuse_match => '^bad-' });

my (@good, @bad, @accepted);
for my $b (1 .. 5) {
    my @names = ((map { "good-$b-$_" } 1 .. 4), "bad-$b");
    @names = reverse @names if $b % 2;     # the bad one first or last
    push @accepted, post_batch($t, '/cio', \@names);
    push @good, grep { /^good/ } @names;
    push @bad, grep { /^bad/ } @names;
}
is(scalar @accepted, 25, '5 batches of 5 events accepted');

is_deeply($cio->wait_names(\@good, 10), [],
    'every event Customer.io did not refuse was recorded');
ok(wait_until(sub { @{ dead_letters($file) } >= 5 }, 10),
    'the refused ones reached the dead-letter file');
is_deeply(dead_names(), [sort @bad], 'exactly the refused events, once');
is_deeply([ grep { /^bad/ } keys %{ $cio->names } ], [],
    'and the stand-in recorded none of them');

my $d = dead_letters($file)->[0];
is($d->{status}, 207, 'a dead letter has the status');
is($d->{reason}, 'refused', 'the reason');
is($d->{site_id}, 'site1', 'the site');
like($d->{url}, qr{^http://127\.0\.0\.1:\d+/api/v2/batch$}, 'the endpoint');
like($d->{time}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$/,
    'the time');
is($d->{answer}{message}, 'refused by the stand-in (refuse_match)',
    'Customer.io\'s error for that item');
ok(defined $d->{answer}{batch_index}, 'with its batch_index');
is($d->{item}{action}, 'event', 'and the item as it was sent');
# the log line follows the dead letters it counts
my $logged = 0;
wait_until(sub {
    $logged = 0;
    $logged += $_ for map { /refused (\d+) of \d+ events .* (\d+) dead-lettered/
                            && $1 == $2 ? $1 : 0 }
        $t->log_lines(qr/\[error\].*cio: Customer\.io refused \d+ of \d+ events for site "site1" \(207\), \d+ dead-lettered to \Q$file\E/);
    return $logged >= 5;
}, 5);
is($logged, 5, 'each 207 is logged with where the refused items went');

$cio->mode({ refuse_match => undef });

# --- 400 for the whole batch -------------------------------------------------

$cio->mode({ status => 400 });
my @rejected = post_batch($t, '/cio', [ map { "rejected-$_" } 1 .. 3 ]);
is(scalar @rejected, 3, 'a batch of 3 accepted');
ok(wait_until(sub { @{ dead_letters($file) } >= 8 }, 10),
    'a batch rejected with 400, and each of its items alone, is dead-lettered');
$cio->mode({ status => undef });
my @r = grep { $_->{item}{name} =~ /^rejected/ } @{ dead_letters($file) };
is(scalar @r, 3, 'all three of it');
is($r[0]{status}, 400, 'with the status');
is($r[0]{reason}, 'batch rejected', 'the reason');
is($r[0]{answer}{errors}[0]{message}, 'injected fault 400', 'the answer');
ok(wait_until(sub { $t->log_lines(qr/\[error\].*cio: the batch of 3 events for site "site1" rejected with 400 was sent again in \d+ pieces: 0 delivered, 3 dead-lettered to/) }, 5),
    'and a log line');

# --- more than cio_retry_max failures --------------------------------------

$cio->control({ status => 500, count => 3 });
my @tired = post_events($t, '/cio', 'tired', 1);
ok(wait_until(sub { grep { $_->{item}{name} eq 'tired-1' }
                         @{ dead_letters($file) } }, 10),
    'an event that failed 3 times with cio_retry_max 2 is dead-lettered');
($d) = grep { $_->{item}{name} eq 'tired-1' } @{ dead_letters($file) };
is($d->{attempts}, 3, 'after 3 attempts');
is($d->{reason}, 'retries exhausted', 'as it says');
is($d->{status}, 500, 'with the last status');
ok(wait_until(sub { $t->log_lines(qr/\[error\].*cio: gave up on 1 events for site "site1" after 2 retries \(cio_retry_max\), the last got 500; dead-lettered to/) }, 5),
    'a clear log line');

# answers that are not UTF-8, or are cut inside a character where a dead
# letter keeps only the first 64 KiB of them: the line stays JSON
my @odd;
for my $case ([ 'latin', "caf\xe9 au lait", 'caf? au lait' ],
              [ 'cut', ('x' x 65535) . "\xc3\xa9", ('x' x 65535) . '?' ]) {
    my ($name, $body, $want) = @$case;
    $cio->control({ status => 400, count => 1, body => $body,
                    match => "$name-1" });
    push @odd, post_events($t, '/cio', $name, 1);
    my $raw;
    ok(wait_until(sub { ($raw) = grep { /"$name-1"/ } raw_lines($file);
                        defined $raw }, 10),
        "an event refused with an answer of $name bytes is dead-lettered");
    # a copy: decode() with a check takes what it read out of its input
    ok(eval { Encode::decode('UTF-8', my $copy = $raw // '',
                             Encode::FB_CROAK); 1 },
        'and its dead letter is UTF-8');
    my $d = eval { JSON::PP->new->utf8->decode($raw // '') } // {};
    is($d->{answer}, $want, 'with what of the answer is UTF-8: '
        . substr($want, -12));
}

ok(wait_until(sub { $t->log_lines(qr/\[error\].*cio: Customer\.io rejected a batch of 1 events for site "site1" with 400: x{400}\.\.\.; 1 dead-lettered to \S+dead\.jsonl$/m) }, 5),
    'the log line shows 400 bytes of a long answer, and where the event went');

# exact accounting: after a barrier event, the good ones once each, none of
# the refused, rejected or dead-lettered ones (not sent a fourth time)
$t->delivered_exactly($cio, \@good, 'before the replay');

# nothing vanished: every accepted event is delivered or dead-lettered
is_deeply(missing([@accepted, @rejected, @tired, @odd], $cio->names,
                  @{ dead_names() }), [],
    'every accepted event was delivered or dead-lettered');

# --- replay ------------------------------------------------------------------

my $replay = $t->top . '/scripts/cio-replay.pl';
my $left = $t->dir . '/dead.left';

$cio->mode({ refuse_match => '^bad-' });
my $out = `$^X $replay --key site1:key1 --out $left $file 2>&1`;
is($? >> 8, 1, 'a replay that is refused again exits 1');
like($out, qr/replayed 11 items: 6 delivered, 5 refused again/,
    'and says what happened') or diag($out);
is_deeply($cio->wait_names([ 'rejected-1', 'rejected-2', 'rejected-3',
    'tired-1', 'latin-1', 'cut-1' ], 5), [],
    'the items no longer refused were delivered');
my $l = dead_letters($left);
is_deeply([ sort map { $_->{item}{name} } @$l ], [sort @bad],
    'the ones refused again are kept, nothing vanishes');
is($l->[0]{reason}, 'refused', 'with the new answer');

# the operator fixes them (here: the name the stand-in refuses)
$t->write_file('fixed.jsonl', join '', map { s/"name":"bad-/"name":"fixed-/r }
    split /^/, $t->read_file('dead.left'));
$out = `$^X $replay --key site1:key1 --out $left.2 @{[ $t->dir ]}/fixed.jsonl 2>&1`;
is($? >> 8, 0, 'a replay of the fixed lines exits 0') or diag($out);
like($out, qr/replayed 5 items: 5 delivered/, 'every item delivered');
is_deeply($cio->wait_names([ map { s/^bad-/fixed-/r } @bad ], 5), [],
    'and recorded by the stand-in');
$cio->mode({ refuse_match => undef });

$out = `$^X $replay --out $left.3 $file 2>&1`;
is($? >> 8, 1, 'without a key nothing is sent');
like($out, qr/no --key for site "site1"/, 'and it says why');

$t->done_part;

# --- no dead-letter file: the error log keeps the item ----------------------

{
    my $t = Cio::Test->new;
    my $cio = $t->standin(workspaces => ['site1:key1']);
    $t->config(http => conf($cio->url, ''))->run;
    $t->allow_log(
        qr/\[error\].*cio: site "site1" gave up on an event \(refused, status 207, 0 attempts\), no cio_dead_letter file to keep it: \{.*"name":"bad-1"/,
        qr/\[error\].*cio: Customer\.io refused 1 of 2 events for site "site1" \(207\), 1 dead-lettered to the error log/);

    $cio->mode({ refuse_match => '^bad-' });
    post_batch($t, '/cio', [ 'ok-1', 'bad-1' ]);
    ok(wait_until(sub { $t->log_lines(qr/no cio_dead_letter file to keep it: \{.*"name":"bad-1"/) }, 10),
        'without cio_dead_letter the refused item is in the error log');
    is_deeply($cio->wait_names(['ok-1'], 5), [], 'the other was delivered');

    $t->done_part;
}

done_testing();
