# SPDX-License-Identifier: BSD-2-Clause
package Cio::Standin;

# A local stand-in for Customer.io's Track API v2: POST /api/v2/batch and
# /api/v2/entity with Basic auth, the v2 item rules and size limits, 207 for
# refused items, 429 over its rate.  Every accepted item is appended to a
# JSON-lines file that tests poll, every request to a summary file with its
# method and path.
#
# It is as strict as Customer.io documents the API, and a little stricter
# where that is the safe reading, so that what passes here passes there:
#  - keys: an item, a device, a relationship may carry only the keys the
#    v2 spec lists for its type and action; any other key refuses the item;
#  - limits at every depth: names (of attributes, and of keys nested in
#    their values) at most 150 bytes, string values at most 1000 bytes,
#    at most 300 attributes, event names at most 100 bytes, identifiers at
#    most 150 bytes, an item at most 32 kb, event data at most 100000;
#  - times: timestamp, attributes.created_at and _timestamp,
#    device.last_used are integer unix seconds;
#  - a rate limit is on by default: 1000 requests a second with a burst of
#    3000 per workspace, the published "3000 requests per 3 seconds";
#    rate => 0 turns it off.
#
# What the real API does is not confirmed everywhere; each such choice is a
# switch, named here and nowhere else:
#   anonymous_id => 1    accept {anonymous_id} as a v2 person identifier
#                        (the v2 spec does not list it; Segment's Customer.io
#                        destination sends it). 0 refuses it.
#   nested_limits => 1   apply the name and value limits inside nested
#                        attribute values too (documented only for
#                        top-level attributes). 0 checks the top level.
#
# One process, one IO::Select loop, non-blocking sockets with a buffer per
# connection: a slow client or a delayed answer never holds up the others.
# (select(2) caps it near 1000 connections, plenty for tests and the demo.)
#
#   Cio::Standin::run(listen => '127.0.0.1:0', workspaces => ['site:key'],
#       record => $file, rate => N, burst => N, control => 1, quiet => 1,
#       anonymous_id => 0|1, nested_limits => 0|1);
#
# With control => 1, faults can be injected (t/lib/Cio/Test.pm wraps them):
#
#   POST /__standin/fault  one-shot faults, queued, each for `count`
#                          requests: {status, retry_after}, {delay_ms},
#                          {close}, {delay_ms, close} (hang, then drop
#                          without recording), {refuse_index:[..]},
#                          {status, body: the answer's bytes as they are};
#                          with {match: regex}, a fault is taken only by
#                          a request whose body matches (the others go
#                          by it); {reset:1} clears faults and modes
#   POST /__standin/mode   standing behaviour until changed: {status}
#                          answers every request so (401: a wrong key,
#                          503: down), {fail_rate, fail_status,
#                          retry_after}, {close_rate}, {slow_rate,
#                          slow_ms}, {refuse_match: regex on item names,
#                          answered 207}, {pad_207: bytes added to a 207
#                          answer}, {poison_match: regex on item names, the
#                          whole batch answered 400}, {rate, burst},
#                          {seed}, {anonymous_id}, {nested_limits}; a key
#                          set to null is cleared
#   GET /__standin/stats   counters

use strict;
use warnings;

use B ();
use Errno qw(EAGAIN EINTR);    # EWOULDBLOCK == EAGAIN on Linux
use IO::Handle;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(decode_base64);
use Time::HiRes qw(time);

use constant {
    MAX_BATCH  => 500_000,     # a /batch request body
    MAX_ENTITY => 32_768,      # an /entity request body
    MAX_ITEM   => 32_768,      # one batch item, serialized
    MAX_DATA   => 100_000,     # event data (attributes), serialized
    MAX_HEAD   => 65_536,      # request line and headers
    HARD_CAP   => 8_000_000,   # a body larger than this is not even read
    MAX_NAME   => 100,         # event, page, screen name
    MAX_ID     => 150,         # person and object identifiers
    MAX_KEY    => 150,         # attribute names
    MAX_VALUE  => 1_000,       # attribute string values
    MAX_ATTRS  => 300,         # attributes per item
    RATE       => 1_000,       # requests a second, per workspace
    BURST      => 3_000,
};

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

my %REASON = (100 => 'Continue', 200 => 'OK', 207 => 'Multi-Status',
    400 => 'Bad Request', 401 => 'Unauthorized', 404 => 'Not Found',
    429 => 'Too Many Requests', 500 => 'Internal Server Error',
    502 => 'Bad Gateway', 503 => 'Service Unavailable',
    504 => 'Gateway Timeout');

my %ACTIONS = (
    person => [qw(identify delete event screen page add_relationships
                  delete_relationships add_device delete_device merge
                  suppress unsuppress)],
    object => [qw(identify identify_anonymous delete add_relationships
                  delete_relationships)],
    delivery => [qw(event)],
);

# anonymous_id is the unconfirmed one, see the anonymous_id switch above
my @PERSON_IDS = qw(id email cio_id phone);
my @MERGE_IDS = qw(id email cio_id);

# the keys an item may carry beside type and action, by type and action
my %KEYS;
{
    my @event = qw(identifiers name id timestamp attributes);
    my %person = (identify => [qw(identifiers attributes cio_relationships
                                  timestamp)],
        delete => [qw(identifiers timestamp)],
        event => \@event, screen => \@event, page => \@event,
        add_relationships => [qw(identifiers cio_relationships timestamp)],
        delete_relationships => [qw(identifiers cio_relationships
                                    timestamp)],
        add_device => [qw(identifiers device timestamp)],
        delete_device => [qw(identifiers device timestamp)],
        merge => [qw(primary secondary timestamp)],
        suppress => [qw(identifiers timestamp)],
        unsuppress => [qw(identifiers timestamp)]);
    my %object = (identify => $person{identify},
        identify_anonymous => $person{identify},
        delete => $person{delete},
        add_relationships => $person{add_relationships},
        delete_relationships => $person{delete_relationships});
    my %delivery = (event => \@event);
    for my $t ([person => \%person], [object => \%object],
               [delivery => \%delivery]) {
        for my $a (keys %{ $t->[1] }) {
            $KEYS{ $t->[0] }{$a} = { map { $_ => 1 } qw(type action),
                @{ $t->[1]{$a} } };
        }
    }
}
my %DEVICE_KEYS = map { $_ => 1 } qw(token platform last_used attributes);
my %RELATION_KEYS = map { $_ => 1 } qw(identifiers relationship_attributes);
my %SECONDS = map { $_ => 1 } qw(created_at _timestamp);

my %EVENTISH = map { $_ => 1 } qw(event page screen);

# --- the server ---------------------------------------------------------------

sub run {
    my (%opts) = @_;
    my $self = bless { opts => \%opts, conns => {}, timers => [],
        faults => [], buckets => {}, seq => 0,
        stats => { requests => 0, items_accepted => 0, items_refused => 0,
                   by_status => {} } }, __PACKAGE__;

    # the real API limits its rate; rate => 0 is no limit
    $opts{rate} //= RATE;
    $opts{burst} //= $opts{rate} == RATE ? BURST : undef;
    $opts{anonymous_id} //= 1;
    $opts{nested_limits} //= 1;

    # what "reset" goes back to
    @$self{qw(rate0 burst0)} = @opts{qw(rate burst)};

    my $i = 0;
    for my $ws (@{ $opts{workspaces} || [] }) {
        my ($site, $key) = split /:/, $ws, 2;
        die "workspace \"$ws\" is not SITE:KEY\n" unless defined $key;
        $self->{keys}{$site} = $key;
        $self->{env_id}{$site} = ++$i;
    }

    my ($host, $port) = ($opts{listen} // '127.0.0.1:0') =~ /^([\d.]+):(\d+)$/
        or die "--listen must be 127.0.0.1:PORT\n";
    die "the stand-in listens on loopback only\n" unless $host =~ /^127\./;

    if (defined $opts{record}) {
        for (['rec', $opts{record}], ['req', "$opts{record}.requests"]) {
            open my $fh, '>>', $_->[1] or die "$_->[1]: $!\n";
            $fh->autoflush(1);
            $self->{$_->[0]} = $fh;
        }
    }

    my $listen = IO::Socket::INET->new(LocalAddr => $host, LocalPort => $port,
        Proto => 'tcp', Listen => 1024, ReuseAddr => 1)
        or die "listen on $host:$port: $!\n";
    $listen->blocking(0);
    $self->{base} = "http://$host:" . $listen->sockport;

    my $stop = 0;
    local $SIG{TERM} = sub { $stop = 1 };
    local $SIG{INT} = sub { $stop = 1 };
    local $SIG{PIPE} = 'IGNORE';

    STDOUT->autoflush(1);
    print STDOUT "listening on $host:", $listen->sockport, "\n";
    $opts{on_ready}->($listen->sockport) if $opts{on_ready};

    my $rsel = $self->{rsel} = IO::Select->new($listen);
    until ($stop) {
        my $wsel = IO::Select->new(map { $_->{sock} }
            grep { length $_->{wbuf} } values %{ $self->{conns} });
        my $wait = 0.2;
        for (@{ $self->{timers} }) {
            $wait = $_->{due} - time if $_->{due} - time < $wait;
        }
        $wait = 0 if $wait < 0;

        my ($r, $w) = IO::Select->select($rsel, $wsel, undef, $wait);
        for my $sock (@{ $r || [] }) {
            if ($sock == $listen) {
                while (my $s = $listen->accept) {
                    $s->blocking(0);
                    $self->{conns}{fileno $s} = { sock => $s, rbuf => '',
                        wbuf => '' };
                    $rsel->add($s);
                }
                next;
            }
            my $c = $self->{conns}{fileno $sock} or next;
            my $n = sysread($sock, my $buf, 65536);
            next if !defined $n && ($! == EAGAIN || $! == EINTR);
            if ($n) {
                $c->{rbuf} .= $buf;
                $self->process($c);
            } else {
                $self->drop($c);            # EOF or a reset
            }
        }
        for my $sock (@{ $w || [] }) {
            my $fd = fileno $sock;          # undef once closed above
            my $c = defined $fd && $self->{conns}{$fd} or next;
            $self->flush($c);
        }
        $self->fire_timers;
        for my $c (values %{ $self->{conns} }) {
            $self->drop($c) if $c->{closing} && !length $c->{wbuf};
        }
    }

    $_->{sock}->close for values %{ $self->{conns} };
    $listen->close;
    return 0;
}

sub drop {
    my ($self, $c) = @_;
    $c->{dead} = 1;
    delete $self->{conns}{fileno $c->{sock}};
    $self->{rsel}->remove($c->{sock});
    $c->{sock}->close;
}

sub flush {
    my ($self, $c) = @_;
    return if $c->{dead} || !length $c->{wbuf};
    my $n = syswrite($c->{sock}, $c->{wbuf});
    if (defined $n) {
        substr($c->{wbuf}, 0, $n, '');
    } elsif ($! != EAGAIN && $! != EINTR) {
        ($c->{wbuf}, $c->{closing}) = ('', 1);      # the peer is gone
    }
}

sub fire_timers {
    my ($self) = @_;
    my $now = time;
    my @due = grep { $_->{due} <= $now } @{ $self->{timers} };
    $self->{timers} = [ grep { $_->{due} > $now } @{ $self->{timers} } ];
    for my $t (@due) {
        # handled even if the client has gone, like a server that keeps
        # working after the client gave up: its items are recorded
        $self->dispatch($t->{conn}, $t->{req});
        $t->{conn}{busy} = 0;
        $self->process($t->{conn}) unless $t->{conn}{dead};
    }
}

# --- HTTP/1.1 framing -----------------------------------------------------

# Parses as many complete requests as the buffer holds, one at a time.
sub process {
    my ($self, $c) = @_;
    while (!$c->{busy} && !$c->{closing} && !$c->{dead}) {
        my $req = $c->{req};
        if (!$req) {
            my $end = index $c->{rbuf}, "\r\n\r\n";
            if ($end < 0) {
                $self->bad($c, 'request head too large')
                    if length $c->{rbuf} > MAX_HEAD;
                return;
            }
            my $head = substr($c->{rbuf}, 0, $end + 4, '');
            $req = $c->{req} = eval { parse_head($head) }
                or return $self->bad($c, 'malformed request');
        }

        # a body this large is answered without being read, then closed
        if (!$req->{body_read} && $req->{length} > MAX_BATCH
            && ($req->{expect} || $req->{length} > HARD_CAP)) {
            $req->{too_large} = 1;
            $req->{keep} = 0;
            $c->{req} = undef;
            $self->dispatch($c, $req);
            return;
        }

        if (!$req->{body_read}) {
            if ($req->{chunked}) {
                my $body = eval { take_chunked(\$c->{rbuf}) };
                return $self->bad($c, 'malformed chunked body') if $@;
                if (!defined $body) {
                    $self->send_continue($c, $req);
                    return $self->bad($c, 'body too large')
                        if length $c->{rbuf} > HARD_CAP;
                    return;
                }
                $req->{body} = $body;
            } else {
                if (length $c->{rbuf} < $req->{length}) {
                    $self->send_continue($c, $req);
                    return;
                }
                $req->{body} = substr($c->{rbuf}, 0, $req->{length}, '');
            }
            $req->{body_read} = 1;
        }

        $c->{req} = undef;
        $self->dispatch($c, $req);
    }
}

sub send_continue {
    my ($self, $c, $req) = @_;
    return unless $req->{expect} && !$req->{continued}++;
    $c->{wbuf} .= "HTTP/1.1 100 Continue\r\n\r\n";
    $self->flush($c);
}

sub parse_head {
    my ($head) = @_;
    my ($line, @lines) = split /\r\n/, $head;
    my ($method, $target, $minor) = $line =~ m{^([A-Z]+) (\S+) HTTP/1\.([01])$}
        or die "bad request line\n";
    my %h;
    for (@lines) {
        my ($k, $v) = /^([!-9;-~]+):[ \t]*(.*?)[ \t]*$/ or die "bad header\n";
        $h{lc $k} = exists $h{lc $k} ? "$h{lc $k}, $v" : $v;
    }
    my $conn = lc($h{connection} // '');
    my $req = { method => $method, path => $target =~ s/\?.*//r,
        headers => \%h, length => 0,
        expect => lc($h{expect} // '') eq '100-continue',
        keep => $minor ? $conn !~ /\bclose\b/ : $conn =~ /\bkeep-alive\b/ };
    if (($h{'transfer-encoding'} // '') =~ /\bchunked\b/i) {
        $req->{chunked} = 1;
    } elsif (defined $h{'content-length'}) {
        $h{'content-length'} =~ /^\d{1,12}$/ or die "bad content-length\n";
        $req->{length} = 0 + $h{'content-length'};
    }
    return $req;
}

# Returns the decoded body and removes it from $$buf, or undef while it is
# incomplete; dies when the chunked framing is broken.
sub take_chunked {
    my ($buf) = @_;
    my ($pos, $body) = (0, '');
    while (1) {
        my $eol = index $$buf, "\r\n", $pos;
        return undef if $eol < 0;
        my ($size) = substr($$buf, $pos, $eol - $pos) =~ /^([0-9a-fA-F]{1,8})(?:;.*)?$/
            or die "bad chunk size\n";
        $size = hex $size;
        $pos = $eol + 2;
        if ($size == 0) {
            while (1) {                        # trailers, then an empty line
                my $end = index $$buf, "\r\n", $pos;
                return undef if $end < 0;
                my $empty = $end == $pos;
                $pos = $end + 2;
                last if $empty;
            }
            substr($$buf, 0, $pos, '');
            return $body;
        }
        return undef if length($$buf) < $pos + $size + 2;
        $body .= substr($$buf, $pos, $size);
        die "bad chunk end\n" unless substr($$buf, $pos + $size, 2) eq "\r\n";
        $pos += $size + 2;
    }
}

sub bad {
    my ($self, $c, $why) = @_;
    $self->respond($c, { keep => 0, method => '-', path => '-' }, 400,
        { errors => [ { reason => 'invalid', message => $why } ] });
}

sub respond {
    my ($self, $c, $req, $status, $body, %log) = @_;
    my $json = ref $body ? $JSON->encode($body) : $body;
    my @extra = map { "$_: $log{headers}{$_}" } sort keys %{ $log{headers} || {} };
    $self->log_line($req, $status, %log);
    return if $c->{dead};
    $c->{wbuf} .= join "\r\n", "HTTP/1.1 $status " . ($REASON{$status} // 'Status'),
        'Content-Type: application/json; charset=utf-8', @extra,
        'Content-Length: ' . length($json),
        'Connection: ' . ($req->{keep} ? 'keep-alive' : 'close'), '', $json;
    $c->{closing} = 1 unless $req->{keep};
    $self->flush($c);
}

sub log_line {
    my ($self, $req, $status, %log) = @_;
    return if $self->{opts}{quiet};
    my $extra = join '', map { " $_=$log{$_}" } grep { defined $log{$_} }
        qw(items bytes);
    print STDERR "standin: $req->{method} $req->{path} $status$extra\n";
}

# --- routes -------------------------------------------------------------------

sub dispatch {
    my ($self, $c, $req) = @_;
    my $route = "$req->{method} $req->{path}";
    my $ok = eval {
        if ($route eq 'POST /api/v2/batch' || $route eq 'POST /api/v2/entity') {
            $self->track($c, $req);
        } elsif ($route eq 'GET /api/v1/accounts/region') {
            my $site = $self->auth($req);
            $self->respond($c, $req, $site ? (200, { url => $self->{base},
                region => 'us', environment_id => $self->{env_id}{$site} })
                : (401, { meta => { error => 'Unauthorized request' } }));
        } elsif ($self->{opts}{control} && $req->{path} =~ m{^/__standin/}) {
            $self->control($c, $req, $route);
        } else {
            $self->respond($c, $req, 404, { errors => [ { message => 'not found' } ] });
        }
        1;
    };
    return if $ok;
    warn "standin: internal error: $@" unless $self->{opts}{quiet};
    $self->respond($c, { %$req, keep => 0 }, 400,
        { errors => [ { reason => 'invalid', message => 'malformed request' } ] });
}

# Returns the site id when the Basic credentials match a workspace.
sub auth {
    my ($self, $req) = @_;
    my ($b64) = ($req->{headers}{authorization} // '') =~ /^Basic\s+(\S+)$/i
        or return undef;
    my ($site, $key) = split /:/, decode_base64($b64), 2;
    return undef unless defined $key && defined $self->{keys}{$site};
    return $self->{keys}{$site} eq $key ? $site : undef;
}

sub track {
    my ($self, $c, $req) = @_;
    my $entity = $req->{path} eq '/api/v2/entity';
    my $bytes = $req->{too_large} ? $req->{length} : length $req->{body};
    my %sum = (seq => $req->{seq} //= ++$self->{seq}, site_id => undef,
        request => "$req->{method} $req->{path}",
        status => 0, items => 0, accepted => 0, bytes => $bytes);
    $self->{stats}{requests}++ unless $req->{delayed};

    # an injected fault is taken when the request arrives; a delay parks the
    # request and handles it (recording its items) when the delay ends
    my $fault = $req->{fault} //= $self->take_fault($req->{body})
        || $self->mode_fault || {};
    if ($fault->{delay_ms} && !$req->{delayed}++) {
        $c->{busy} = 1;
        push @{ $self->{timers} }, { due => time + $fault->{delay_ms} / 1000,
            conn => $c, req => $req };
        return;
    }

    my $site = $self->auth($req);
    $sum{site_id} = $site;
    my ($status, $body, %headers);
    $headers{'Retry-After'} = $fault->{retry_after}
        if defined $fault->{retry_after};
    if ($fault->{close}) {
        $self->summary(\%sum);              # status 0: closed, no answer
        $self->log_line($req, 'closed', bytes => $bytes);
        $c->{wbuf} = '';
        $c->{closing} = 1;
        return;
    } elsif ($fault->{status}) {
        $status = $fault->{status};
        $body = defined $fault->{body} ? $fault->{body}
            : $status == 429 ? { meta => { error => 'rate limited' } }
            : $status == 400 ? { errors => [ { reason => 'invalid',
                message => "injected fault $status" } ] }
            : { meta => { error => "injected fault $status" } };
    } elsif (!$site) {
        ($status, $body) = (401, { meta => { error => 'Unauthorized request' } });
    } elsif (!$self->take_token($site)) {
        ($status, $body) = (429, { meta => { error => 'rate limited' } });
    } else {
        ($status, $body) = $self->accept_items($req, $site, $entity, \%sum,
            $fault->{refuse_index});
    }
    $sum{status} = $status;
    $self->summary(\%sum);
    $self->respond($c, $req, $status, $body, items => $sum{items},
        bytes => $bytes, headers => \%headers);
}

# a fault drawn from the standing mode, or undef
sub mode_fault {
    my ($self) = @_;
    my $m = $self->{mode} or return undef;
    return { status => $m->{status}, retry_after => $m->{retry_after} }
        if $m->{status};
    return { close => 1 } if $m->{close_rate} && rand() < $m->{close_rate};
    return { status => $m->{fail_status} || 500,
             retry_after => $m->{retry_after} }
        if $m->{fail_rate} && rand() < $m->{fail_rate};
    return { delay_ms => $m->{slow_ms} || 1000 }
        if $m->{slow_rate} && rand() < $m->{slow_rate};
    return undef;
}

sub accept_items {
    my ($self, $req, $site, $entity, $sum, $refuse) = @_;
    my $max = $entity ? MAX_ENTITY : MAX_BATCH;
    my $invalid = sub {
        my ($field, $msg) = @_;
        return (400, { errors => [ { reason => 'invalid', field => $field,
            message => $msg } ] });
    };

    if ($req->{too_large} || length $req->{body} > $max) {
        return (400, { errors => [ { reason => 'request_too_large',
            message => 'request must be smaller than '
                . ($entity ? '32kb' : '500kb') } ] });
    }
    my $doc = eval { $JSON->decode($req->{body}) };
    return $invalid->('batch', 'request body is not valid JSON') unless defined $doc;
    return $invalid->('batch', 'request body must be a JSON object')
        unless ref $doc eq 'HASH';

    my $items = $entity ? [$doc] : $doc->{batch};
    return $invalid->('batch', 'batch must be a non-empty array')
        unless ref $items eq 'ARRAY' && @$items;
    $sum->{items} = @$items;

    # poison_match: one item so named makes the whole batch a 400
    my $poison = $self->{mode}{poison_match};
    return $invalid->('batch', 'refused by the stand-in (poison_match)')
        if defined $poison && grep { ref $_ eq 'HASH' && is_str($_->{name})
            && $_->{name} =~ /$poison/ } @$items;

    my %refuse = map { $_ => 1 } @{ $refuse || [] };
    my $match = $self->{mode}{refuse_match};
    my $now_ms = int(time * 1000);
    my (@errors, @accepted);
    for my $i (0 .. $#$items) {
        my $name = ref $items->[$i] eq 'HASH' ? $items->[$i]{name} : undef;
        my @e = $refuse{$i} ? ('', 'refused by the stand-in (fault)')
            : defined $match && is_str($name) && $name =~ /$match/
            ? ('name', 'refused by the stand-in (refuse_match)')
            : $self->item_error($items->[$i]);
        if (@e) {
            push @errors, { batch_index => $i, reason => 'invalid',
                field => $e[0], message => $e[1] };
        } else {
            push @accepted, $i;
        }
    }
    return $invalid->($errors[0]{field}, $errors[0]{message})
        if $entity && @errors;

    for my $i (@accepted) {
        $self->record({ site_id => $site, seq => $req->{seq}, index => $i,
            received_ms => $now_ms, item => $items->[$i] });
    }
    $sum->{accepted} = @accepted;
    $self->{stats}{items_accepted} += @accepted;
    $self->{stats}{items_refused} += @errors;
    # pad_207: N bytes more in every 207 answer, a test of long answers
    return @errors ? (207, { errors => \@errors, $self->{mode}{pad_207}
        ? (padding => 'x' x $self->{mode}{pad_207}) : () }) : (200, {});
}

# --- item rules (the Track API v2 batch: item shapes and limits) -----------

# a switch of the unconfirmed rules: the standing mode, else the option
sub switch {
    my ($self, $name) = @_;
    my $m = $self->{mode} || {};
    return exists $m->{$name} ? $m->{$name} : $self->{opts}{$name};
}

# Returns (field, message) for an invalid item, () for a valid one.
sub item_error {
    my ($self, $item) = @_;
    return ('', 'item must be an object') unless ref $item eq 'HASH';
    my $size = length $JSON->encode($item);
    return ('', "item must be at most 32kb, it is $size bytes")
        if $size > MAX_ITEM;

    my ($type, $action) = @$item{qw(type action)};
    return ('type', 'type must be person, object or delivery')
        unless is_str($type) && $ACTIONS{$type};
    return ('action', 'action ' . ($JSON->encode($action // undef))
        . " is not valid for type $type")
        unless is_str($action) && grep { $_ eq $action } @{ $ACTIONS{$type} };
    for my $k (sort keys %$item) {
        return ($k, "unknown key \"$k\" for $type $action")
            unless $KEYS{$type}{$action}{$k};
    }

    my @ids = (@PERSON_IDS,
        $self->switch('anonymous_id') ? ('anonymous_id') : ());
    my @e;
    if ($type eq 'person' && $action eq 'merge') {
        @e = ids_error($item->{primary}, 'primary', \@MERGE_IDS);
        @e = ids_error($item->{secondary}, 'secondary', \@MERGE_IDS) unless @e;
    } elsif ($type eq 'person') {
        @e = ids_error($item->{identifiers}, 'identifiers', \@ids);
    } elsif ($type eq 'object') {
        @e = object_ids_error($item->{identifiers}, 'identifiers');
    } else {
        @e = ('identifiers.id', 'delivery identifiers must be {id}')
            unless ref $item->{identifiers} eq 'HASH'
                && join(',', keys %{ $item->{identifiers} }) eq 'id'
                && is_str($item->{identifiers}{id}) && length $item->{identifiers}{id};
    }
    return @e if @e;

    if (exists $item->{timestamp}) {
        my $ts = $item->{timestamp};
        return ('timestamp', 'timestamp must be an integer of unix seconds')
            unless is_num($ts) && $ts == int($ts) && $ts > 999_999_999
                && $ts < 100_000_000_000;
    }
    if (exists $item->{attributes} && ref $item->{attributes} ne 'HASH') {
        return ('attributes', $EVENTISH{$action} ? 'event data must be a hash'
            : 'attributes must be an object');
    }
    my $attrs = $item->{attributes} || {};
    my $nested = $self->switch('nested_limits');

    if ($EVENTISH{$action}) {
        my $name = $item->{name};
        return ('name', 'event name is required')
            unless is_str($name) && length $name;
        return ('name', 'event name cannot be longer than 100 bytes')
            if byte_len($name) > MAX_NAME;
        return ('id', 'id must be a ULID')
            if exists $item->{id} && !(is_str($item->{id})
                && $item->{id} =~ /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/i);
        # unreachable inside a 32 kb item, kept for the documented limit
        return ('attributes', 'event data must be at most 100000 bytes')
            if length $JSON->encode($attrs) > MAX_DATA;
        @e = attrs_error($attrs, 'attributes', $nested);
    } elsif ($action eq 'identify' || $action eq 'identify_anonymous') {
        @e = attrs_error($attrs, 'attributes', $nested);
        for my $k (grep { exists $attrs->{$_} } sort keys %SECONDS) {
            last if @e;
            @e = seconds_error($attrs->{$k}, "attributes.$k");
        }
    } elsif ($action eq 'add_device' || $action eq 'delete_device') {
        my $d = $item->{device};
        return ('device.token', 'device.token is required')
            unless ref $d eq 'HASH' && is_str($d->{token}) && length $d->{token};
        for my $k (sort keys %$d) {
            return ("device.$k", "unknown key \"$k\" in device")
                unless $DEVICE_KEYS{$k};
        }
        return ('device.platform', 'device.platform must be a string')
            if exists $d->{platform} && !is_str($d->{platform});
        @e = seconds_error($d->{last_used}, 'device.last_used')
            if exists $d->{last_used};
        return @e if @e;
        if (exists $d->{attributes}) {
            return ('device.attributes', 'device.attributes must be an object')
                unless ref $d->{attributes} eq 'HASH';
            @e = attrs_error($d->{attributes}, 'device.attributes', $nested);
        }
    }
    return @e if @e;

    if ($action =~ /_relationships$/ || exists $item->{cio_relationships}) {
        my $rel = $item->{cio_relationships};
        return ('cio_relationships', 'cio_relationships must be a non-empty array')
            unless ref $rel eq 'ARRAY' && @$rel;
        for my $i (0 .. $#$rel) {
            my $r = $rel->[$i];
            my $f = "cio_relationships.$i";
            return ($f, 'a relationship must be an object')
                unless ref $r eq 'HASH';
            for my $k (sort keys %$r) {
                return ("$f.$k", "unknown key \"$k\" in a relationship")
                    unless $RELATION_KEYS{$k};
            }
            # a person's relationships name objects, an object's people
            @e = $type eq 'object'
                ? ids_error($r->{identifiers}, "$f.identifiers", \@ids)
                : object_ids_error($r->{identifiers}, "$f.identifiers");
            return @e if @e;
            if (exists $r->{relationship_attributes}) {
                return ("$f.relationship_attributes", 'must be an object')
                    unless ref $r->{relationship_attributes} eq 'HASH';
                @e = attrs_error($r->{relationship_attributes},
                    "$f.relationship_attributes", $nested);
                return @e if @e;
            }
        }
    }
    return ();
}

sub object_ids_error {
    my ($ids, $field) = @_;
    my @keys = ref $ids eq 'HASH' ? sort keys %$ids : ();
    if ("@keys" eq 'cio_object_id') {
        return ("$field.cio_object_id", 'cio_object_id must be a non-empty string')
            unless is_str($ids->{cio_object_id}) && length $ids->{cio_object_id};
    } elsif ("@keys" eq 'object_id object_type_id') {
        return ("$field.object_type_id", 'object_type_id must be a non-empty string')
            unless is_str($ids->{object_type_id}) && length $ids->{object_type_id};
        return ("$field.object_id", 'object_id must be a non-empty string of at most 150 bytes')
            unless is_str($ids->{object_id}) && length $ids->{object_id}
                && byte_len($ids->{object_id}) <= MAX_ID;
    } else {
        return ($field, 'object identifiers must be {object_type_id, object_id} or {cio_object_id}');
    }
    return ();
}

# integer unix seconds (0 .. year 5138)
sub seconds_error {
    my ($v, $field) = @_;
    return () if !defined $v;       # null removes the attribute
    return ($field, "$field must be an integer of unix seconds")
        unless is_num($v) && $v == int($v) && $v >= 0
            && $v < 100_000_000_000;
    return ();
}

# Attribute names, values and count; with $nested also the keys and string
# values inside nested objects and arrays.
sub attrs_error {
    my ($attrs, $field, $nested) = @_;
    return ($field, 'at most ' . MAX_ATTRS . ' attributes')
        if keys %$attrs > MAX_ATTRS;
    my @walk = map { [ "$field.$_", $_, $attrs->{$_}, 0 ] } sort keys %$attrs;
    while (my $w = shift @walk) {
        my ($path, $key, $v, $depth) = @$w;
        return ($path, 'attribute names must be at most ' . MAX_KEY . ' bytes')
            if defined $key && byte_len($key) > MAX_KEY;
        return ($path, 'attribute values must be at most ' . MAX_VALUE
            . ' bytes') if is_str($v) && byte_len($v) > MAX_VALUE;
        next unless $nested && ref $v;
        if (ref $v eq 'HASH') {
            push @walk, map { [ "$path.$_", $_, $v->{$_}, $depth + 1 ] }
                sort keys %$v;
        } elsif (ref $v eq 'ARRAY') {
            push @walk, map { [ "$path.$_", undef, $v->[$_], $depth + 1 ] }
                0 .. $#$v;
        }
    }
    return ();
}

sub ids_error {
    my ($ids, $field, $allowed) = @_;
    return ($field, "$field must be an object") unless ref $ids eq 'HASH';
    my @keys = keys %$ids;
    return ($field, "$field must have exactly one of " . join(', ', @$allowed))
        unless @keys == 1 && grep { $_ eq $keys[0] } @$allowed;
    my ($k, $v) = ($keys[0], $ids->{ $keys[0] });
    return ("$field.$k", "$k must be a non-empty string"
        . ($k eq 'id' ? ' or a number' : ''))
        unless (is_str($v) && length $v) || ($k eq 'id' && is_num($v));
    return ("$field.$k", "$k must be at most 150 bytes")
        if byte_len($v) > MAX_ID;
    return ();
}

# JSON::PP decodes numbers to IV/NV and strings to PV; booleans are objects
sub is_num {
    my ($v) = @_;
    return 0 if !defined $v || ref $v;
    my $f = B::svref_2object(\$v)->FLAGS;
    return ($f & (B::SVp_IOK | B::SVp_NOK)) && !($f & B::SVp_POK) ? 1 : 0;
}

sub is_str { defined $_[0] && !ref $_[0] && !is_num($_[0]) }

# works on a copy: stringifying a decoded number in place would make
# JSON::PP write it back as a string in the record
sub byte_len { my ($s) = @_; $s = "$s"; utf8::encode($s); length $s }

# --- rate limit, recording, control ---------------------------------------

# token bucket per workspace: --rate tokens a second, at most --burst
sub take_token {
    my ($self, $site) = @_;
    my $rate = $self->{opts}{rate} or return 1;
    my $burst = $self->{opts}{burst} || $rate;
    my $now = time;
    my $b = $self->{buckets}{$site} //= { tokens => $burst, at => $now };
    $b->{tokens} += ($now - $b->{at}) * $rate;
    $b->{tokens} = $burst if $b->{tokens} > $burst;
    $b->{at} = $now;
    return 0 if $b->{tokens} < 1;
    $b->{tokens} -= 1;
    return 1;
}

sub record {
    my ($self, $line) = @_;
    print { $self->{rec} } $JSON->encode($line), "\n" if $self->{rec};
}

sub summary {
    my ($self, $sum) = @_;
    $sum->{received_ms} = int(time * 1000);
    my $st = $self->{stats};
    $st->{by_status}{ $sum->{status} }++;
    print { $self->{req} } $JSON->encode($sum), "\n" if $self->{req};
}

# the first queued fault for this body: one with a match only if it matches
sub take_fault {
    my ($self, $body) = @_;
    my $faults = $self->{faults};
    for my $i (0 .. $#$faults) {
        my $f = $faults->[$i];
        next if defined $f->{match}
            && !(defined $body && $body =~ /$f->{match}/);
        splice @$faults, $i, 1 if --$f->{count} <= 0;
        return $f;
    }
    return undef;
}

sub control {
    my ($self, $c, $req, $route) = @_;
    if ($route eq 'GET /__standin/stats') {
        return $self->respond($c, $req, 200, { %{ $self->{stats} },
            rate => $self->{opts}{rate} || 0,
            burst => $self->{opts}{burst} || $self->{opts}{rate} || 0,
            faults => scalar @{ $self->{faults} },
            mode => $self->{mode} || {} });
    }
    return $self->respond($c, $req, 404, { errors => [ { message => 'not found' } ] })
        unless $route eq 'POST /__standin/fault'
            || $route eq 'POST /__standin/mode';

    my $f = eval { $JSON->decode($req->{body}) };
    return $self->respond($c, $req, 400, { errors => [ { message =>
        'a fault is a JSON object' } ] }) unless ref $f eq 'HASH';

    if ($route eq 'POST /__standin/mode') {
        my $m = $self->{mode} //= {};
        for my $k (sort keys %$f) {
            if (defined $f->{$k}) {
                $m->{$k} = $f->{$k};
            } else {
                delete $m->{$k};
            }
        }
        srand($f->{seed}) if defined $f->{seed};
        if (exists $f->{rate} || exists $f->{burst}) {
            $self->{opts}{rate} = $m->{rate};
            $self->{opts}{burst} = $m->{burst};
            $self->{buckets} = {};
        }
        return $self->respond($c, $req, 200, { mode => $m });
    }

    if ($f->{reset}) {
        $self->{faults} = [];
        $self->{buckets} = {};
        $self->{mode} = {};
        @{ $self->{opts} }{qw(rate burst)} = @$self{qw(rate0 burst0)};
    } else {
        $f->{count} = 1 unless ($f->{count} // 0) >= 1;
        push @{ $self->{faults} }, $f;
    }
    $self->respond($c, $req, 200, { faults => scalar @{ $self->{faults} } });
}

1;
