#!/usr/bin/perl
# SPDX-License-Identifier: BSD-2-Clause

# The mutation check: small deliberate bugs, one at a time, each of which
# the tests must catch.  For every mutation in @MUTATIONS below it puts the
# bug into a scratch copy of the tree (build/mutate/slotN: the tracked and
# the new, not ignored, files; never the working tree itself), rebuilds the
# module there (and the mapper's unit tests when asked for), runs the tests
# that should catch it, and restores the file.  A mutation is caught when
# one of its tests fails; the first that fails is named.  At the end a
# table: mutation, file, tests, result, seconds.
#
#   scripts/mutate.pl           all of them (make mutate), two at a time
#   scripts/mutate.pl --check   only whether every snippet is found in the
#                               tree exactly once and every test exists
#                               (make mutate-check, part of make test)
#   scripts/mutate.pl --list    the mutations and their tests
#   --only RE                   the mutations whose name matches RE
#   -j N                        N at once (default 2)
#   --no-baseline               skip the run of every listed test on the
#                               unmutated copy first (a test that fails
#                               without a bug would "catch" every one)
#
# Exit status: 0 when every mutation applied, built and was caught; 1
# when one was not caught, did not apply (its snippet is not found exactly
# once: the code moved, update the snippet) or did not build; 2 when the
# tests fail on the unmutated tree.
#
# Each mutation: name, file, from (the exact original text, found exactly
# once in the file), to (its replacement), tests (t/*.t files, or "unit"
# for build/test_map, tried in order), and what a user would notice;
# and (optional): a second [from, to] in the same file, for a bug that is
# two edits (each found exactly once, applied after the first).  The
# first nine (audit => 1) are the audit of issue 16; every one of them
# must be caught by an end-to-end test (t/*.t), not only by the unit
# tests, so they list no "unit".  When one is
# not caught, the finding is a missing test: add the end-to-end test that
# shows what the user would see, not a weaker mutation.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Compare qw(compare);
use File::Copy qw(copy);
use File::Path qw(make_path);
use Getopt::Long qw(GetOptions);
use POSIX qw(:sys_wait_h setpgid);
use Time::HiRes qw(time sleep);

$| = 1;

my $TOP = abs_path(dirname(__FILE__) . '/..');

my $MAP = 'src/ngx_http_cio_map.c';
my $MAP_FAST = 'src/ngx_http_cio_map_fast.c';
my $QUEUE = 'src/ngx_http_cio_queue.c';
my $DELIVER = 'src/ngx_http_cio_deliver.c';
my $SPOOL = 'src/ngx_http_cio_spool.c';
my $HANDLER = 'src/ngx_http_cio_handler.c';
my $DEAD = 'src/ngx_http_cio_dead_letter.c';
my $SENDER = 'src/ngx_http_cio_sender.c';
my $MODULE = 'ngx_http_cio_module.c';
my $JOURNAL = 'src/ngx_http_cio_journal.c';

my @MUTATIONS = (

    # --- issue 16's audit ---------------------------------------------------

    {
        name => 'screen-props-name',
        audit => 1,
        what => "a screen is named from properties.name over the call's name",
        file => $MAP,
        from => q~    name = ngx_http_cio_map_str(ngx_http_cio_map_get(call, "name"));

    if (name == NULL || name[0] == '\0') {
        name = ngx_http_cio_map_str(ngx_http_cio_map_get(props, "name"));
    }~,
        to => q~    name = ngx_http_cio_map_str(ngx_http_cio_map_get(props, "name"));

    if (name == NULL || name[0] == '\0') {
        name = ngx_http_cio_map_str(ngx_http_cio_map_get(call, "name"));
    }~,
        tests => [qw(t/11-precedence.t)],
    },
    {
        name => 'spool-attempts-key',
        audit => 1,
        what => "the spool's attempts key misspelled: retry counts reset "
            . 'on load',
        file => $SPOOL,
        from => q~attempts = cJSON_GetObjectItemCaseSensitive(root, "attempts");~,
        to => q~attempts = cJSON_GetObjectItemCaseSensitive(root, "attempt");~,
        tests => [qw(t/44-spool.t)],
    },
    {
        name => 'no-value-cut',
        audit => 1,
        what => 'attribute values over 1000 bytes are not cut',
        file => $MAP,
        from => q~        if (strlen(v->valuestring) > NGX_HTTP_CIO_MAP_MAX_ATTR_VALUE) {~,
        to => q~        if (0 && strlen(v->valuestring) > NGX_HTTP_CIO_MAP_MAX_ATTR_VALUE) {~,
        tests => [qw(t/11-precedence.t)],
    },
    {
        name => 'no-sentat-skew',
        audit => 1,
        what => "sentAt does not correct the client's clock skew",
        file => $MAP,
        from => q~        ms = recv - (sent - ms);~,
        to => q~        (void) sent;~,
        tests => [qw(t/11-precedence.t)],
    },
    {
        name => 'created-at-ms',
        audit => 1,
        what => 'created_at is sent in milliseconds',
        file => $MAP,
        from => q~cJSON_CreateNumber((double) (ms / 1000)));~,
        to => q~cJSON_CreateNumber((double) ms));~,
        tests => [qw(t/10-ingest.t t/11-precedence.t)],
    },
    {
        name => 'settle-leaves-one',
        audit => 1,
        what => 'a settled batch leaves its first item in the zone',
        file => $QUEUE,
        from => q~    for (i = hi - 1; i >= lo; i--) {~,
        to => q~    for (i = hi - 1; i >= lo + 1; i--) {~,
        tests => [qw(t/21-accounting.t t/16-status.t)],
    },
    {
        name => '429-delivered',
        audit => 1,
        what => 'a 429 counts as delivered',
        file => $DELIVER,
        from => q~    if (status >= 200 && status < 300) {
        st->outcome = NGX_HTTP_CIO_DONE;~,
        to => q~    if ((status >= 200 && status < 300) || status == 429) {
        st->outcome = NGX_HTTP_CIO_DONE;~,
        tests => [qw(t/42-rate.t t/40-retry.t)],
    },
    {
        name => 'retry-after-ignored',
        audit => 1,
        what => "Customer.io's Retry-After is ignored",
        file => $DELIVER,
        from => q~        if (req->retry_after > 0) {~,
        to => q~        if (0 && req->retry_after > 0) {~,
        tests => [qw(t/42-rate.t t/40-retry.t)],
    },
    {
        name => 'query-write-key-unchecked',
        audit => 1,
        what => 'a ?writeKey= in the query is taken without a check',
        file => $HANDLER,
        from => q~        rc = NGX_OK;
    }

    if (rc == NGX_ERROR) {~,
        to => q~        *authed = 1;
        return NGX_OK;
    }

    if (rc == NGX_ERROR) {~,
        tests => [qw(t/15-ingest-edge.t)],
    },

    # --- the mapper ------------------------------------------------------------

    {
        name => 'dedupe-id-from-arrival',
        what => "the dedupe id's time is the arrival: a resend gets another",
        file => $MAP,
        from => q~    ngx_http_cio_map_ulid(own, seed, strlen(seed), ulid);~,
        to => q~    ngx_http_cio_map_ulid(ctx->opts->received_ms, seed, strlen(seed), ulid);~,
        tests => [qw(t/11-precedence.t t/12-contract.t t/10-ingest.t)],
    },
    {
        # the same bug in the one-pass mapper, which maps the calls that
        # carry a messageId; the tree above maps those without one
        name => 'dedupe-id-from-arrival-fast',
        what => "the dedupe id's time is the arrival: a resend gets another",
        file => $MAP_FAST,
        from => q~    ngx_http_cio_map_ulid(own, seed, slen, ulid);~,
        to => q~    ngx_http_cio_map_ulid(ctx->opts->received_ms, seed, slen, ulid);~,
        tests => [qw(t/12-contract.t t/10-ingest.t)],
    },
    {
        name => 'utf8-unrepaired-fast',
        what => 'invalid UTF-8 goes to Customer.io as it came, in the '
            . 'one-pass mapper',
        file => $MAP_FAST,
        from => q~        bad += (n == 0);~,
        to => q~        bad += 0 && (n == 0);~,
        tests => [qw(t/50-hostile.t)],
    },
    {
        name => 'duplicate-key-last-wins-fast',
        what => 'a repeated key: the one-pass mapper reads the last, the '
            . 'tree the first',
        file => $MAP_FAST,
        from => q~        if (f != NULL && f->type != FJ_NONE) {
            return -1;~,
        to => q~        if (0) {
            return -1;~,
        tests => [qw(t/50-hostile.t)],
    },
    {
        name => 'filters-ignored-fast',
        what => 'cio_events_deny, cio_events_allow and consent let every '
            . 'call through, in the one-pass mapper',
        file => $MAP_FAST,
        from => q~    rc = fj_filtered(ctx, c, type, event);~,
        to => q~    rc = 0 && fj_filtered(ctx, c, type, event);~,
        tests => [qw(t/15-ingest-edge.t)],
    },
    {
        name => 'integrations-ignored-fast',
        what => 'integrations {"Customer.io": false} still delivers, in '
            . 'the one-pass mapper',
        file => $MAP_FAST,
        from => q~    rc = fj_integrations(ctx, c);

    if (rc != 1) {~,
        to => q~    rc = fj_integrations(ctx, c);

    if (0 && rc != 1) {~,
        tests => [qw(t/10-ingest.t t/15-ingest-edge.t t/12-contract.t)],
    },
    {
        name => 'screen-name-fast',
        what => 'a screen call becomes an event named X, not "Viewed X '
            . 'Screen", in the one-pass mapper',
        file => $MAP_FAST,
        from => q~"Viewed %.*s Screen"~,
        to => q~"%.*s"~,
        tests => [qw(t/12-contract.t t/11-precedence.t t/10-ingest.t)],
    },
    {
        name => 'no-sentat-skew-fast',
        what => "a client's clock skew (sentAt) is not corrected, in the "
            . 'one-pass mapper',
        file => $MAP_FAST,
        from => q~        ms = recv - (sent - ms);~,
        to => q~        (void) sent;~,
        tests => [qw(t/12-contract.t t/11-precedence.t t/10-ingest.t)],
    },
    {
        name => 'created-at-ms-fast',
        what => 'created_at goes out in milliseconds, not seconds, in the '
            . 'one-pass mapper',
        file => $MAP_FAST,
        from => q~    if (fj_double(&b, (double) (ms / 1000)) != 0) {~,
        to => q~    if (fj_double(&b, (double) ms) != 0) {~,
        tests => [qw(t/12-contract.t t/11-precedence.t t/10-ingest.t)],
    },
    {
        name => 'user-id-ignored-fast',
        what => 'a call with a userId is sent as its anonymousId\'s '
            . 'person, in the one-pass mapper',
        file => $MAP_FAST,
        from => q~    if (fj_present(&c->user) && !fj_eq(ctx, &c->user, "cio_")) {~,
        to => q~    if (0 && fj_present(&c->user) && !fj_eq(ctx, &c->user, "cio_")) {~,
        tests => [qw(t/10-ingest.t t/11-precedence.t t/12-contract.t)],
    },
    {
        name => 'email-identity-ignored-fast',
        what => 'an identify without a userId goes to its anonymousId\'s '
            . 'person, not its traits.email\'s, in the one-pass mapper',
        file => $MAP_FAST,
        from => q~    if (identify) {
        if (fj_lookup(ctx, &c->traits, "email", &v, 1) < 0) {~,
        to => q~    if (0) {
        if (fj_lookup(ctx, &c->traits, "email", &v, 1) < 0) {~,
        tests => [qw(t/11-precedence.t t/10-ingest.t t/12-contract.t)],
    },
    {
        name => 'page-url-ignored-fast',
        what => 'a page call without a name is named by properties.name, '
            . 'not its URL, in the one-pass mapper',
        file => $MAP_FAST,
        from => q~type == NGX_HTTP_CIO_CALL_PAGE
                                  ? "url" : "name"~,
        to => q~type == NGX_HTTP_CIO_CALL_PAGE
                                  ? "name" : "name"~,
        tests => [qw(t/11-precedence.t t/10-ingest.t t/12-contract.t)],
    },
    {
        name => 'integrations-ignored',
        what => 'integrations {"Customer.io": false} still delivers',
        file => $MAP,
        from => q~    if (!ctx->amplitude && ngx_http_cio_map_integrations(ctx, call) == 0) {~,
        to => q~    if (0 && !ctx->amplitude && ngx_http_cio_map_integrations(ctx, call) == 0) {~,
        tests => [qw(t/10-ingest.t t/15-ingest-edge.t t/12-contract.t)],
    },
    {
        name => 'nesting-limit-off',
        what => 'properties nested deeper than the limit are accepted',
        file => $MAP,
        from => q~        if (deep) {
            snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN,~,
        to => q~        if (0 && deep) {
            snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN,~,
        tests => [qw(t/12-contract.t t/50-hostile.t)],
    },
    {
        name => 'nul-truncates',
        what => 'a \u0000 escape cuts an id or a value short',
        file => $MAP,
        from => q~            nul |= (p[5] == '0');~,
        to => q~            nul |= 0;~,
        tests => [qw(t/50-hostile.t t/12-contract.t)],
    },
    {
        name => 'original-timestamp-first',
        what => 'originalTimestamp wins over timestamp',
        file => $MAP,
        from => q~    v = ngx_http_cio_map_get(call, "timestamp");

    if (ngx_http_cio_map_parse_time(v, &ms) != 0) {
        v = ngx_http_cio_map_get(call, "originalTimestamp");~,
        to => q~    v = ngx_http_cio_map_get(call, "originalTimestamp");

    if (ngx_http_cio_map_parse_time(v, &ms) != 0) {
        v = ngx_http_cio_map_get(call, "timestamp");~,
        tests => [qw(t/11-precedence.t)],
    },
    {
        name => 'no-attribute-count-limit',
        what => 'more than 300 attributes are sent',
        file => $MAP,
        from => q~            || n >= NGX_HTTP_CIO_MAP_MAX_ATTRS)~,
        to => q~            || n >= 100000)~,
        tests => [qw(t/11-precedence.t t/12-contract.t)],
    },

    {
        name => 'page-url-first',
        what => "a page is named from properties.url over the call's name",
        file => $MAP,
        from => q~    name = ngx_http_cio_map_str(ngx_http_cio_map_get(call, "name"));

    if (name == NULL || name[0] == '\0') {
        name = ngx_http_cio_map_str(ngx_http_cio_map_get(props, "url"));
    }~,
        to => q~    name = ngx_http_cio_map_str(ngx_http_cio_map_get(props, "url"));

    if (name == NULL || name[0] == '\0') {
        name = ngx_http_cio_map_str(ngx_http_cio_map_get(call, "name"));
    }~,
        tests => [qw(t/11-precedence.t)],
    },
    {
        name => 'lenient-numbers',
        what => "cJSON's reading of 01 as 1 let through: another person",
        file => $MAP,
        from => q~    if (p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == '+'~,
        to => q~    if (0 && p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == '+'~,
        tests => [qw(t/50-hostile.t)],
    },

    {
        name => 'lone-surrogates-refused',
        what => 'a lone surrogate escape loses the whole batch (400)',
        file => $MAP,
        from => q~            || cp < 0xd800 || cp > 0xdfff)~,
        to => q~            || 1)~,
        tests => [qw(t/50-hostile.t)],
    },

    {
        name => 'insert-id-not-per-device',
        what => "Amplitude's insert_id seeds the id alone: two devices' "
            . 'events are one',
        file => $MAP,
        from => q~    snprintf(seed, n, "%s\x1f%s", iid, dev);~,
        to => q~    snprintf(seed, n, "%s", iid); (void) dev;~,
        tests => [qw(t/15-ingest-edge.t)],
    },

    {
        name => 'empty-object-type',
        what => 'an empty object_type_id names the type "1" over '
            . 'objectTypeId',
        file => $MAP,
        from => q~    if (!((cJSON_IsString(t) && t->valuestring[0] != '\0')~,
        to => q~    if (!((cJSON_IsString(t))~,
        tests => [qw(t/12-contract.t)],
    },

    {
        name => 'token-nul-beside-email',
        what => 'a device token with \\u0000 is registered when the '
            . 'context has an e-mail',
        file => $MAP,
        from => q~    for (i = 0; i < 2; i++) {
        s = ngx_http_cio_map_str(ngx_http_cio_map_context(ctx, call,~,
        to => q~    for (i = 0; i < 1; i++) {
        s = ngx_http_cio_map_str(ngx_http_cio_map_context(ctx, call,~,
        tests => [qw(t/50-hostile.t)],
    },
    {
        name => 'page-url-nul',
        what => 'a page named from a context url with \\u0000',
        file => $MAP,
        from => q~        if (ctx->nul && name != NULL && strchr(name, '\x01') != NULL) {~,
        to => q~        if (0 && ctx->nul && name != NULL && strchr(name, '\x01') != NULL) {~,
        tests => [qw(t/50-hostile.t)],
    },

    {
        name => 'repeated-userid',
        what => 'a userId given twice names the first person',
        file => $MAP,
        from => q~    s = ctx->amplitude ? NULL : ngx_http_cio_map_twice(call, once);~,
        to => q~    s = (ctx->amplitude || once[0]) ? NULL : NULL;~,
        tests => [qw(t/50-hostile.t)],
    },
    {
        name => 'fast-repeated-email',
        what => "the one-pass mapper names an identify by an e-mail given "
            . 'twice',
        file => $MAP_FAST,
        from => q~        if (fj_lookup(ctx, &c->traits, "email", &v, 1) < 0) {~,
        to => q~        if (fj_lookup(ctx, &c->traits, "email", &v, 0) < 0) {~,
        tests => [qw(t/50-hostile.t)],
    },

    {
        name => 'allow-list-drops-deletion',
        what => 'cio_events_allow drops a User Deleted',
        file => $MAP,
        from => q~                && !ngx_http_cio_map_action(ctx, name))~,
        to => q~                && !(0 && ngx_http_cio_map_action(ctx, name)))~,
        tests => [qw(t/15-ingest-edge.t)],
    },

    # --- the zone --------------------------------------------------------------

    {
        name => 'retries-not-counted',
        what => 'a failed attempt is not counted: never dead-lettered',
        file => $QUEUE,
        from => q~            if (node->attempts < 0xffff) {
                node->attempts++;
            }

            if (node->attempts > st->retry_max) {~,
        to => q~            if (node->attempts > st->retry_max) {~,
        tests => [qw(t/41-dead-letter.t t/40-retry.t)],
    },
    {
        name => 'resize-drops-queue',
        what => 'a reload that resizes the zone loses the queued events',
        file => $QUEUE,
        from => q~                || ngx_http_cio_queue_append(to, nws, node->data, node->len,
                                             node->attempts, node->jref)
                   != NGX_OK)~,
        to => q~                || 0)~,
        tests => [qw(t/43-crash.t)],
    },

    {
        name => 'lease-never-expires',
        what => "a killed worker's batch is never sent again",
        file => $QUEUE,
        from => q~        if ((int32_t) (node->lease - (uint32_t) now) > 0) {~,
        to => q~        if ((int32_t) (node->lease - (uint32_t) now) > 0 || now) {~,
        tests => [qw(t/43-crash.t)],
    },
    {
        name => 'person-overtaken',
        what => "a person's newer item is taken while an older one is in "
            . 'flight, so a retried identify lands after a newer one',
        file => $QUEUE,
        from => q~        if (ngx_http_cio_queue_held(zone->sh, node)) {~,
        to => q~        if (0 && ngx_http_cio_queue_held(zone->sh, node)) {~,
        tests => [qw(t/54-person-order.t)],
    },
    {
        name => 'nodes-in-slab-slots',
        what => 'every queued item in its own power-of-two slab slot, as '
            . 'before the runs: the zone holds far fewer events',
        file => $QUEUE,
        from => q~    if (size > NGX_HTTP_CIO_RUN_SIZE - sizeof(ngx_http_cio_run_t)) {
        goto slab;
    }

    if (run == NULL~,
        to => q~    if (size) {
        goto slab;
    }

    if (run == NULL~,
        tests => [qw(t/53-zone-memory.t)],
    },
    {
        name => 'reload-new-zone',
        what => 'a reload that keeps the zone starts it afresh',
        file => $QUEUE,
        from => q~    if (ozone) {
        zone->sh = ozone->sh;~,
        to => q~    if (0) {
        zone->sh = ozone->sh;~,
        tests => [qw(t/20-delivery.t t/43-crash.t t/16-status.t)],
    },

    {
        name => 'settle-slices-stop',
        what => 'a delivered batch is freed one slice and no more: the '
            . 'rest stays in flight until its lease runs out, and is sent '
            . 'again',
        file => $DELIVER,
        from => q~    if (d->freeing) {
        ngx_post_event(&d->free, &ngx_posted_next_events);~,
        to => q~    if (0) {
        ngx_post_event(&d->free, &ngx_posted_next_events);~,
        tests => [qw(t/87-settle-slices.t)],
    },
    {
        name => 'slice-unholds-lost',
        what => "a delivered batch's later slices free items and leave "
            . "their people held: a person's next event never goes",
        file => $QUEUE,
        from => q~        case NGX_HTTP_CIO_ACT_DONE:
            ngx_http_cio_queue_unhold(zone->sh, node);~,
        to => q~        case NGX_HTTP_CIO_ACT_DONE:
            if (batch->settled == 0) ngx_http_cio_queue_unhold(zone->sh, node);~,
        tests => [qw(t/87-settle-slices.t)],
    },
    {
        name => 'exit-leaves-freeing',
        what => 'a worker that stops between two slices of a settle leaves '
            . 'the rest in flight (and a drain counts them as left): the '
            . 'spool keeps delivered events, and a start sends them again',
        file => $DELIVER,
        from => q~    while (d->freeing) {~,
        to => q~    while (0 && d->freeing) {~,
        tests => [qw(t/87-settle-slices.t)],
    },
    {
        name => 'take-marks-kept',
        what => "a batch made leaves its persons marked \"mine\": the "
            . "worker's next batch takes a person's later items while "
            . 'her earlier ones are in flight',
        file => $QUEUE,
        from => q~        if (batch->persons[i]) {~,
        to => q~        if (0 && batch->persons[i]) {~,
        tests => [qw(t/86-take-slices.t t/54-person-order.t)],
    },
    {
        name => 'making-claim-ignored',
        what => 'another worker takes from a workspace while one makes a '
            . 'batch of its head: a backlog that fits one batch goes in two',
        file => $QUEUE,
        from => q~    if (ngx_queue_empty(&ws->pending) || ws->retry_at > now
        || ws->making > now)~,
        to => q~    if (ngx_queue_empty(&ws->pending) || ws->retry_at > now
        || 0)~,
        tests => [qw(t/86-take-slices.t)],
    },
    {
        name => 'slice-after-requeue',
        what => 'a slice goes on from where the last one stopped though '
            . "a batch went back to the head meanwhile: a person's later "
            . 'items overtake her earlier ones',
        file => $QUEUE,
        from => q~    if (sh->unholds != batch->unholds) {~,
        to => q~    if (0 && sh->unholds != batch->unholds) {~,
        tests => [qw(t/86-take-slices.t)],
    },
    {
        name => 'slice-from-taken-item',
        what => 'a slice goes on from an item another worker took '
            . 'meanwhile, along the list of items in flight',
        file => $QUEUE,
        from => q~    if (node->id != batch->next_id || node->lease != 0
        || node->ws != batch->ws)~,
        to => q~    if (0 && (node->id != batch->next_id || node->lease != 0
        || node->ws != batch->ws))~,
        tests => [qw(t/86-take-slices.t)],
    },

    # --- delivery --------------------------------------------------------------

    {
        name => '207-refused-delivered',
        what => 'the items a 207 refuses count as delivered',
        file => $DELIVER,
        from => q~    if (status == 207 && !req->aborted) {~,
        to => q~    if (status == 207 && req->aborted) {~,
        tests => [qw(t/41-dead-letter.t t/46-refusals.t)],
    },
    {
        name => '400-not-split',
        what => "a batch's 400 dead-letters every item, not the one at fault",
        file => $DELIVER,
        from => q~    if (act == NGX_HTTP_CIO_ACT_DEAD && batch->n > 1
        && ngx_http_cio_deliver_split~,
        to => q~    if (act == NGX_HTTP_CIO_ACT_DEAD && batch->n > 100000
        && ngx_http_cio_deliver_split~,
        tests => [qw(t/46-refusals.t t/41-dead-letter.t)],
    },
    {
        name => '5xx-dead',
        what => 'a 500 dead-letters the batch instead of retrying it',
        file => $DELIVER,
        from => q~    if (status == 0 || status == 408 || status == 429 || status >= 500) {~,
        to => q~    if (status == 0 || status == 408 || status == 429) {~,
        tests => [qw(t/40-retry.t t/20-delivery.t)],
    },
    {
        name => '401-dead',
        what => 'a wrong API key dead-letters events instead of holding them',
        file => $DELIVER,
        from => q~        || status == 401 || status == 403 || status == 404 || status == 405)~,
        to => q~        || status == 403 || status == 404 || status == 405)~,
        tests => [qw(t/40-retry.t)],
    },
    {
        name => 'retry-after-unparsed',
        what => 'a Retry-After header is not read',
        file => $SENDER,
        from => q~            req->retry_after = v;~,
        to => q~            req->retry_after = (v < 0) ? v : -1;~,
        tests => [qw(t/42-rate.t t/40-retry.t)],
    },

    {
        name => 'split-lease-not-renewed',
        what => 'a split longer than cio_lease is taken back and split again',
        file => $QUEUE,
        from => q~    if (rc != NGX_DECLINED) {
        ngx_http_cio_queue_renew(~,
        to => q~    if (0 && rc != NGX_DECLINED) {
        ngx_http_cio_queue_renew(~,
        tests => [qw(t/56-split-lease.t)],
    },

    {
        name => 'wall-clock-rate',
        what => 'the rate bucket, leases and backoffs on the wall clock',
        file => $QUEUE,
        from => q~    if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1) {~,
        to => q~    if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1 || 1) {~,
        tests => [qw(t/58-clock-step.t)],
    },

    {
        name => 'rounds-from-the-head',
        what => 'every round begins at the first workspace: the others '
            . 'wait for it to be empty',
        file => $DELIVER,
        from => q~        if (e++ < d->ws_next) {~,
        to => q~        if (e++ < d->ws_next * 0) {~,
        tests => [qw(t/59-workspace-turns.t)],
    },

    # --- spool and dead letters -------------------------------------------------

    {
        name => 'spool-last-buffer-lost',
        what => "the spool's last buffer is never written",
        file => $SPOOL,
        from => q~    ngx_http_cio_spool_flush(&w);

    if (w.failed == 0 && fsync(w.fd) == -1) {~,
        to => q~    w.pos = w.buf;

    if (w.failed == 0 && fsync(w.fd) == -1) {~,
        tests => [qw(t/44-spool.t)],
    },
    {
        name => 'dead-letter-item-lost',
        what => 'a dead letter holds {} instead of the item',
        file => $DEAD,
        from => q~    p = ngx_cpymem(p, item, ilen);~,
        to => q~    p = ngx_cpymem(p, "{}", 2);~,
        tests => [qw(t/41-dead-letter.t t/46-refusals.t)],
    },
    {
        name => 'dead-letter-line-not-whole',
        what => 'a short write leaves half a dead-letter line',
        file => $DEAD,
        from => q~        if (size == -1 || ftruncate(fd, size) == -1) {~,
        to => q~        if (size == -1 || 1) {~,
        tests => [qw(t/47-dead-letter-full.t)],
    },
    {
        name => 'dead-letter-unlocked',
        what => 'the workers write the dead-letter file without its lock, '
            . 'so that one cuts off the line another wrote meanwhile',
        file => $DEAD,
        from => q~        err = ngx_lock_fd(fd);~,
        to => q~        err = 0;~,
        tests => [qw(t/84-dead-letter-race.t)],
    },

    # --- the ingest location ------------------------------------------------------
    {
        name => 'chunked-read-before-size',
        what => 'a chunked body is copied into memory before its size is '
            . 'checked',
        file => $HANDLER,
        from => q~    if (ngx_http_cio_too_large(r, lcf, route, size, answer) != NGX_OK) {~,
        to => q~    if (ngx_http_cio_too_large(r, lcf, route, 0, answer) != NGX_OK) {~,
        tests => [qw(t/57-body-memory.t)],
    },
    {
        name => 'body-key-batch-error-401',
        what => "a batch refused as a whole is 401 to a sender whose key "
            . 'is in the body',
        file => $HANDLER,
        from => q~            && ngx_http_cio_check_key(r, lcf, (u_char *) res.write_key,~,
        to => q~            && ngx_http_cio_check_key(r, lcf, (u_char *) NULL,~,
        tests => [qw(t/10-ingest.t)],
    },
    {
        name => 'empty-basic-user-blocks-body-key',
        what => 'a Basic header with no user hides the body key',
        file => $HANDLER,
        from => q~    return (key->len == 0 && colon != NULL) ? NGX_DECLINED : NGX_OK;~,
        to => q~    return NGX_OK;~,
        tests => [qw(t/10-ingest.t)],
    },
    {
        name => 'status-queued-none',
        what => '$cio_status says queued for a batch of which none was',
        file => $HANDLER,
        from => q~    ctx->status = a->n ? "queued"~,
        to => q~    ctx->status = 1 ? "queued"~,
        tests => [qw(t/15-ingest-edge.t)],
    },
    {
        name => 'queue-full-200',
        what => 'a full queue answers 200 and drops the events',
        file => $HANDLER,
        from => q~    if (rc == NGX_BUSY) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "cio: queue is full~,
        to => q~    if (rc == NGX_BUSY) {
        rc = NGX_OK;
    }

    if (0) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "cio: queue is full~,
        tests => [qw(t/20-delivery.t t/50-hostile.t)],
    },
    {
        name => 'call-size-limit-off',
        what => 'a call over cio_max_call_size is accepted',
        file => $HANDLER,
        from => q~    if (len <= (off_t) max) {~,
        to => q~    if (len <= (off_t) (64 * max)) {~,
        tests => [qw(t/15-ingest-edge.t t/50-hostile.t)],
    },
    {
        name => 'size-after-body',
        what => 'a declared Content-Length over the limit is read first '
            . '(100 Continue, the upload spooled) before its 413',
        file => $HANDLER,
        from => q~                                  r->headers_in.content_length_n, &rc)~,
        to => q~                                  -1, &rc)~,
        tests => [qw(t/51-glue-defects.t)],
    },
    {
        name => 'cors-credentials-default',
        what => 'every allowed origin gets Access-Control-Allow-Credentials',
        file => $HANDLER,
        from => q~        || (lcf->cors_credentials
            && ngx_http_cio_header_out~,
        to => q~        || (1
            && ngx_http_cio_header_out~,
        tests => [qw(t/51-glue-defects.t t/15-ingest-edge.t)],
    },
    {
        name => 'cors-any-origin',
        what => 'an origin not in cio_cors_origins gets CORS headers',
        file => $HANDLER,
        from => q~        if (i == lcf->cors_origins->nelts) {~,
        to => q~        if (0) {~,
        tests => [qw(t/15-ingest-edge.t t/10-ingest.t)],
    },
    {
        name => 'eu-region-us-endpoint',
        what => 'cio_region eu sends to the US endpoint',
        file => $MODULE,
        from => q~        ngx_str_set(&base, "https://track-eu.customer.io");~,
        to => q~        ngx_str_set(&base, "https://track.customer.io");~,
        tests => [qw(t/21-accounting.t t/01-config.t)],
    },
    {
        name => 'journal-not-written',
        what => 'cio_journal answers 200 for events it never wrote: a '
            . 'crash loses them',
        file => $HANDLER,
        from => q~    if (mcf->journal == NULL || n == 0 || a->lcf->ws->sh == NULL) {~,
        to => q~    if (1 || mcf->journal == NULL || n == 0 || a->lcf->ws->sh == NULL) {~,
        tests => [qw(t/70-journal-crash.t)],
    },
    {
        name => 'journal-pass-one-offset',
        what => 'the requests written together in one pwritev() all get '
            . 'the first one\'s offsets: their acks settle the wrong '
            . 'records, a restart loses some and resends others',
        file => $JOURNAL,
        from => q~        a->rc = NGX_OK;
        off += (uint32_t) a->len;~,
        to => q~        a->rc = NGX_OK;~,
        tests => [qw(t/79-journal-pass.t)],
    },
    {
        name => 'journal-pass-no-sync',
        what => 'sync=always: the requests of a shared write wait for a '
            . 'sync nobody starts',
        file => $JOURNAL,
        from => q~    if (!ngx_queue_empty(&jw->waiting)) {
        ngx_http_cio_journal_sync();
    }
}~,
        to => q~}~,
        tests => [qw(t/79-journal-pass.t)],
    },
    {
        name => 'journal-pass-failed-first-only',
        what => 'a shared write that fails refuses only its first request: '
            . 'the others are answered 200 for records never written',
        file => $JOURNAL,
        from => q~    for (i = 0, a = first; i < k; i++, a = a->next) {
        a->rc = NGX_ERROR;
    }~,
        to => q~    for (i = 0, a = first; i < k; i++, a = a->next) {
        a->rc = i ? NGX_OK : NGX_ERROR;
    }~,
        tests => [qw(t/79-journal-pass.t)],
    },
    {
        name => 'journal-park-unblocked',
        what => 'a request waiting for the journal holds no block: one that '
            . 'a stop ends meanwhile is freed, and its wait\'s end uses '
            . 'the freed request',
        file => $HANDLER,
        from => q~    r->main->blocked++;
}~,
        to => q~}~,
        and => [ q~    r->main->blocked--;

    if (!c->error) {~, q~    if (!c->error) {~ ],
        tests => [qw(t/80-journal-shutdown.t)],
    },
    {
        name => 'journal-ended-answered',
        what => 'a request that a stop ended while it waited for the '
            . 'journal is answered as if it had not been',
        file => $HANDLER,
        from => q~    r->main->blocked--;

    if (!c->error) {~,
        to => q~    r->main->blocked--;

    if (1) {~,
        tests => [qw(t/80-journal-shutdown.t)],
    },
    {
        name => 'journal-ack-torn-kept',
        what => 'a torn .ack entry stays, and puts every later one of its '
            . 'segment out of step: a start sends them all again',
        file => $JOURNAL,
        from => q~            || ftruncate(jw->ack_fd, ngx_file_size(&fi) - written) == -1))~,
        to => q~            || 1))~,
        tests => [qw(t/85-journal-ack-torn.t)],
    },
    {
        name => 'journal-dir-not-synced',
        what => 'a new segment\'s directory is never synced, so that its '
            . 'name is not known to be on the disk (POSIX)',
        file => $JOURNAL,
        from => q~    if (jw->newseg) {~,
        to => q~    if (0) {~,
        tests => [qw(t/83-journal-lock.t)],
    },
    {
        name => 'journal-left-synced-under-lock',
        what => 'a segment left with 16 waiting is synced with the '
            . 'journal\'s lock held, so that every worker waits',
        file => $JOURNAL,
        from => q~    ngx_shmtx_unlock(&j->shpool->mutex);

    ngx_http_cio_journal_evict(j);
    ngx_http_cio_journal_delete(j, gone, first->log);

    if (ahead) {~,
        to => q~    ngx_http_cio_journal_evict(j);
    ngx_shmtx_unlock(&j->shpool->mutex);

    ngx_http_cio_journal_delete(j, gone, first->log);

    if (ahead) {~,
        tests => [qw(t/83-journal-lock.t)],
    },
    {
        name => 'journal-answers-before-sync',
        what => 'sync=always answers 200 before the fdatasync: a power '
            . 'loss loses them',
        file => $JOURNAL,
        from => q~    if (!jw->flushing) {
        ngx_http_cio_journal_sync();
    }

    return NGX_AGAIN;~,
        to => q~    ngx_queue_remove(&w->link);
    ngx_http_cio_journal_sync();

    return NGX_OK;~,
        tests => [qw(t/73-journal-sync.t)],
    },
    {
        name => 'orphans-journal-ignored',
        what => "the old workers of a resized zone call the journal's "
            . 'items lost: an operator replays or gives up what is kept',
        file => $QUEUE,
        from => q~    if (node->jref == 0) {
        (*n)++;~,
        to => q~    if (1) {
        (*n)++;~,
        tests => [qw(t/70-journal-crash.t)],
    },
    {
        name => 'block-without-workspace',
        what => 'an "if" inside a cio location runs the handler without '
            . 'the location\'s ingest and workspace',
        file => $MODULE,
        from => q~        conf->ingest = prev->ingest;
~,
        to => q~~,
        tests => [qw(t/52-review.t)],
    },
    {
        name => 'limit-except-static',
        what => 'the methods a limit_except names go to the static handler',
        file => $MODULE,
        from => q~        clcf->handler = ngx_http_cio_handler;
    }

    ngx_conf_merge_str_value~,
        to => q~    }

    ngx_conf_merge_str_value~,
        tests => [qw(t/52-review.t)],
    },
    {
        name => 'journal-lock-kept',
        what => 'a reload keeps the lock of the journal it leaves: the '
            . 'reload back to it is refused to the master itself',
        file => $JOURNAL,
        from => q~    (void) close(oj->lock_fd);
    oj->lock_fd = NGX_INVALID_FILE;
}~,
        to => q~    oj->lock_fd = NGX_INVALID_FILE;
}~,
        tests => [qw(t/82-journal-reload.t)],
    },
    {
        name => 'journal-dir-ignored',
        what => 'a journal whose directory cannot be made is taken by the '
            . 'reload, whose init_module then ends the master',
        file => $JOURNAL,
        from => q~    if (!ngx_test_config && ngx_http_cio_journal_dir(j) != NGX_OK) {
        return NGX_ERROR;
    }~,
        to => q~    if (!ngx_test_config) {
        (void) ngx_http_cio_journal_dir(j);
    }~,
        tests => [qw(t/82-journal-reload.t)],
    },
    {
        name => 'journal-id-reused',
        what => 'every journal new to the master has id 1: an old '
            . 'journal\'s items settle the new one\'s records',
        file => $JOURNAL,
        from => q~    j->sh->id = ngx_http_cio_journal_last_id;~,
        to => q~    j->sh->id = 1;~,
        tests => [qw(t/82-journal-reload.t)],
    },
    {
        name => 'spool-skips-any-jref',
        what => 'a stop spools none of the items of a journal a reload '
            . 'removed',
        file => $JOURNAL,
        from => q~    return j != NULL && j->sh != NULL && jref != 0
           && ngx_http_cio_jref_id(jref) == j->sh->id;~,
        to => q~    return jref != 0;~,
        tests => [qw(t/82-journal-reload.t)],
    },
    {
        name => 'batch-context-unbounded',
        what => 'a batch context of any size is read by every call',
        file => $MAP,
        from => q~    if (n > NGX_HTTP_CIO_MAP_MAX_SHARED) {~,
        to => q~    if (n > (size_t) -1) {~,
        tests => [qw(t/50-hostile.t)],
    },
    {
        name => 'batch-context-fast-unbounded',
        what => 'the one-pass mapper reads a large batch context once per '
            . 'call, and maps what the tree refuses',
        file => $MAP_FAST,
        from => q~        || (root->context.type == FJ_OBJ
            && root->context.len > NGX_HTTP_CIO_MAP_MAX_SHARED / 6)~,
        to => q~~,
        tests => [qw(t/50-hostile.t)],
    },
    {
        name => 'numeric-id-rounded',
        what => 'a numeric userId is written by cJSON\'s printer, which '
            . 'rounds 16 digits to 15',
        file => $MAP,
        from => q~        if (cJSON_AddRawToObject(o, "id", num) == NULL) {~,
        to => q~        if (cJSON_AddNumberToObject(o, "id", v->valuedouble) == NULL) {~,
        tests => [qw(t/12-contract.t)],
    },
    {
        name => 'numeric-id-rounded-fast',
        what => 'the one-pass mapper writes a numeric userId as cJSON '
            . 'prints it',
        file => $MAP_FAST,
        from => q~                || fj_put(b, num, strlen(num)) != 0)~,
        to => q~                || fj_number_out(b, v) != 0)~,
        tests => [qw(t/12-contract.t)],
    },
    {
        name => 'id-utf8-repaired',
        what => 'a userId that is not UTF-8 is repaired into another '
            . 'person\'s',
        file => $MAP,
        from => q~    if (!ngx_http_cio_map_utf8_valid(s)) {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, "%s is not valid UTF-8",~,
        to => q~    if (0) {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, "%s is not valid UTF-8",~,
        tests => [qw(t/50-hostile.t)],
    },
    {
        name => 'id-utf8-repaired-fast',
        what => 'the one-pass mapper repairs a userId that is not UTF-8',
        file => $MAP_FAST,
        from => q~    if (s == NULL || !ngx_http_cio_map_id_ok(s, n)) {
        return -1;
    }

    if (strncmp(s, "cio_", 4) == 0 && s[4] != '\0') {~,
        to => q~    if (s == NULL || n > NGX_HTTP_CIO_MAP_MAX_ID) {
        return -1;
    }

    if (strncmp(s, "cio_", 4) == 0 && s[4] != '\0') {~,
        tests => [qw(t/50-hostile.t)],
    },
    {
        name => 'amplitude-too-many-400',
        what => 'more Amplitude events than cio_max_batch_calls get a 400 '
            . 'the SDK resends unchanged',
        file => $HANDLER,
        from => q~        } else if (amplitude && res.too_many) {~,
        to => q~        } else if (amplitude && res.too_many && 0) {~,
        tests => [qw(t/50-hostile.t)],
    },
    {
        name => 'empty-query-key',
        what => 'an empty ?writeKey= is checked, and hides the body\'s key',
        file => $HANDLER,
        from => q~        && ngx_http_arg(r, (u_char *) "writeKey", 8, &key) == NGX_OK
        && key.len > 0)~,
        to => q~        && ngx_http_arg(r, (u_char *) "writeKey", 8, &key) == NGX_OK)~,
        tests => [qw(t/51-glue-defects.t)],
    },
    {
        name => 'journal-unlock-none',
        what => 'a reload that fails after the journal\'s zone is made '
            . 'keeps its lock, and refuses every later reload to it',
        file => $JOURNAL,
        from => q~    if (!j->taken && j->lock_fd != NGX_INVALID_FILE) {~,
        to => q~    if (0) {~,
        tests => [qw(t/82-journal-reload.t)],
    },
    {
        name => 'prometheus-site-only',
        what => 'two workspaces of one site id are one Prometheus series',
        file => 'src/ngx_http_cio_status.c',
        from => q~        l = ngx_cpymem(l, "\",url=\"", sizeof("\",url=\"") - 1);
        l = ngx_http_cio_status_label(l, &ws[k].url);~,
        to => q~~,
        tests => [qw(t/16-status.t)],
    },
    {
        name => 'last-error-not-utf8',
        what => 'Customer.io\'s last error, cut inside a character, makes '
            . 'the status page invalid JSON',
        file => $QUEUE,
        from => q~        if (ngx_utf8_decode(&p, last - c) > 0x10ffff) {~,
        to => q~        if (ngx_utf8_decode(&p, last - c) > 0x10ffff && 0) {~,
        tests => [qw(t/16-status.t)],
    },
    {
        name => 'dead-lettered-counts-lost',
        what => 'items whose dead letter could not be written are counted '
            . 'as dead-lettered',
        file => $QUEUE,
        from => q~    ws->dead += n - lost;
    ws->lost += lost;~,
        to => q~    ws->dead += n;~,
        tests => [qw(t/47-dead-letter-full.t)],
    },
    {
        name => 'orphans-unsaid',
        what => 'the old workers of a resized zone lose what they did not '
            . 'deliver without a word',
        file => $DELIVER,
        from => q~        if (d->zone->sh->orphaned) {
            ngx_http_cio_deliver_orphans(busy);

        } else {~,
        to => q~        if (d->zone->sh->orphaned) {

        } else {~,
        tests => [qw(t/70-journal-crash.t)],
    },
    {
        name => 'journal-open-sync-error-dropped',
        what => 'sync=always: a segment synced in the event loop when '
            . 'writing left it fails, and its waiters are answered 200',
        file => $JOURNAL,
        from => q~    js.err = jw->sync_err;~,
        to => q~    js.err = 0;~,
        tests => [qw(t/81-journal-sync-error.t)],
    },
    {
        name => 'journal-keep-none',
        what => 'sync=always: an old worker of a reload exits while a '
            . 'request waits for its sync, which goes unanswered',
        file => $JOURNAL,
        from => q~    if (!jw->keep.timer_set) {
        ngx_add_timer(&jw->keep, NGX_HTTP_CIO_J_KEEP);~,
        to => q~    if (0) {
        ngx_add_timer(&jw->keep, NGX_HTTP_CIO_J_KEEP);~,
        tests => [qw(t/81-journal-sync-error.t)],
    },
    {
        name => 'journal-no-crc',
        what => 'a damaged journal record is queued as an item',
        file => $JOURNAL,
        from => q~    if (ngx_http_cio_crc32(0, p + 12, n + 4) != crc) {~,
        to => q~    if (0) {~,
        tests => [qw(t/71-journal-damage.t)],
    },
    {
        name => 'dead-letter-acked-unsynced',
        what => "a dead-lettered item's ack is written before its line is "
            . 'synced: a power loss loses it',
        file => $JOURNAL,
        from => q~    if (act == NGX_HTTP_CIO_ACT_DEAD && acts && jw->dl~,
        to => q~    if (0 && act == NGX_HTTP_CIO_ACT_DEAD && acts && jw->dl~,
        tests => [qw(t/75-journal-dead-letter.t)],
    },
    {
        name => 'journal-reused-past',
        what => 'a segment file that held another segment before reads '
            . 'on into its past: delivered events are sent again',
        file => $JOURNAL,
        from => q~    if (rno != no) {
        return NGX_DONE;
    }~,
        to => q~    (void) rno;~,
        tests => [qw(t/71-journal-damage.t)],
    },
    {
        name => 'push-keys-lost',
        what => 'the person keys computed before the lock are not the '
            . 'items\': one person\'s items overtake each other',
        file => $QUEUE,
        from => q~        keys[i] = ngx_http_cio_queue_person(items[i].data, items[i].len);~,
        to => q~        keys[i] = 0;~,
        tests => [qw(t/54-person-order.t)],
    },
    {
        name => 'fill-no-lease-check',
        what => 'a sender that takes a batch after its lease expired sends '
            . 'what the freed nodes hold: events another worker delivered '
            . 'go twice, or garbage goes',
        file => $QUEUE,
        from => q~    return ngx_http_cio_queue_leased(batch, 0, batch->n) ? 0 : -1;~,
        to => q~    return 0;~,
        tests => [qw(t/55-lease-fill.t)],
    },
    {
        name => 'pieces-skip-bucket',
        what => 'the pieces of a split batch go out without a token: '
            . 'Customer.io sees more than cio_rate',
        file => $QUEUE,
        from => q~    } else if (ngx_http_cio_queue_token(ws, mcf, now) != NGX_OK) {
        rc = NGX_AGAIN;~,
        to => q~    } else if (0) {
        rc = NGX_AGAIN;~,
        tests => [qw(t/42-rate.t)],
    },
    {
        name => 'two-keys-last-wins',
        what => 'a second location with the site\'s other API key gets a '
            . 'workspace of its own, and the zone\'s one queue for the '
            . 'site is sent with whichever key came last',
        file => $MODULE,
        from => q~        lcf->ws = wsp[i];
        return NGX_OK;
    }~,
        to => q~        if (wsp[i]->userpwd.len == ws->userpwd.len) {
            lcf->ws = wsp[i];
            return NGX_OK;
        }
    }~,
        tests => [qw(t/40-retry.t)],
    },
    {
        name => 'journal-ahead-off',
        what => 'a busy segment is not allocated ahead: every write takes '
            . 'new pages in the event loop',
        file => $JOURNAL,
        from => q~    if (j->tp == NULL
        || ngx_http_cio_jw.preparing~,
        to => q~    if (j->tp != NULL
        || ngx_http_cio_jw.preparing~,
        tests => [qw(t/78-journal-ahead.t)],
    },
    {
        name => 'journal-ahead-uncached',
        what => 'segments opened write-only: readahead() fails, the region '
            . 'is allocated but not in the page cache',
        file => $JOURNAL,
        from => q~    fd = ngx_open_file(name, NGX_FILE_RDWR, NGX_FILE_CREATE_OR_OPEN,~,
        to => q~    fd = ngx_open_file(name, NGX_FILE_WRONLY, NGX_FILE_CREATE_OR_OPEN,~,
        tests => [qw(t/78-journal-ahead.t)],
    },
    {
        name => 'journal-keeps-pages',
        what => 'a sync leaves what it made clean in the page cache: a '
            . 'journal that grows through an outage fills memory',
        file => $JOURNAL,
        from => q~            if ((ngx_int_t) i != t->active || t->drop) {~,
        to => q~            if (0) {~,
        tests => [qw(t/78-journal-ahead.t)],
    },
    {
        name => 'journal-settles-twice',
        what => 'an item settled is counted twice: a segment is deleted '
            . 'while it holds unsettled records',
        file => $JOURNAL,
        from => q~        seg->settled += (uint32_t) k;~,
        to => q~        seg->settled += (uint32_t) k * 2;~,
        tests => [qw(t/70-journal-crash.t)],
    },
);


my ($check, $list, $only, $jobs, $no_baseline) = (0, 0, undef, 2, 0);

GetOptions('check' => \$check, 'list' => \$list, 'only=s' => \$only,
           'j=i' => \$jobs, 'no-baseline' => \$no_baseline)
    or die "usage: $0 [--check] [--list] [--only RE] [-j N] "
         . "[--no-baseline]\n";

my @todo = grep { !defined $only || $_->{name} =~ /$only/ } @MUTATIONS;
die "no mutation matches \"$only\"\n" unless @todo;

if ($list) {
    printf "%-28s %-32s %s\n   %s\n", $_->{name}, $_->{file},
        join(' ', @{ $_->{tests} }), $_->{what} for @todo;
    exit 0;
}

exit(check(@todo) ? 0 : 1) if $check;

exit run(@todo);


# --- mutate-check ---------------------------------------------------------------

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return undef;
    local $/;
    my $s = <$fh>;
    close $fh;
    return $s;
}

sub spew {
    my ($path, $s) = @_;
    open my $fh, '>', $path or die "$path: $!\n";
    print $fh $s;
    close $fh or die "$path: $!\n";
}

sub count {
    my ($hay, $needle) = @_;
    my ($n, $at) = (0, 0);
    while (($at = index($hay, $needle, $at)) >= 0) {
        $n++;
        $at += length $needle;
    }
    return $n;
}

# what is wrong with a mutation in the tree at $top, or ''
sub problem {
    my ($m, $top) = @_;
    my $src = slurp("$top/$m->{file}");
    return "$m->{file} is missing" unless defined $src;
    return 'from and to are the same' if $m->{from} eq $m->{to};
    for my $e ([ $m->{from}, $m->{to} ], $m->{and} || ()) {
        my $n = count($src, $e->[0]);
        return "its snippet is found $n times in $m->{file}, not once"
            if $n != 1;
        $src =~ s/\Q$e->[0]\E/$e->[1]/;
    }
    for my $t (@{ $m->{tests} }) {
        return "test $t is missing" unless $t eq 'unit' || -f "$top/$t";
        return 'an audit row must be caught end to end, not by unit'
            if $t eq 'unit' && $m->{audit};
    }
    return '';
}

sub check {
    my (@ms) = @_;
    my %names;
    my $ok = 1;
    for my $m (@ms) {
        my $why = $names{ $m->{name} }++ ? 'its name is used twice'
                                         : problem($m, $TOP);
        next unless $why;
        print STDERR "mutate-check: $m->{name}: $why\n";
        $ok = 0;
    }
    printf "mutate-check: %d mutations, %s\n", scalar @ms,
        $ok ? 'every snippet found exactly once'
            : 'some no longer apply (scripts/mutate.pl)';
    return $ok;
}


# --- make mutate -----------------------------------------------------------------

# the files of the tree: tracked, and new ones not ignored
sub tree_files {
    open my $fh, '-|', 'git', '-C', $TOP, 'ls-files', '-z', '--cached',
        '--others', '--exclude-standard' or die "git ls-files: $!\n";
    local $/ = "\0";
    my @files = grep { -f "$TOP/$_" && !-l "$TOP/$_" }
        map { chomp; $_ } <$fh>;
    close $fh or die "git ls-files failed\n";
    return @files;
}

# the slot's copy of the tree; only what changed is copied, so that its
# build stays and only what differs is rebuilt
sub sync_slot {
    my ($slot, $files) = @_;
    for my $f (@$files) {
        my ($from, $to) = ("$TOP/$f", "$slot/$f");
        next if -e $to && compare($from, $to) == 0;
        make_path(dirname($to));
        unlink $to;
        copy($from, $to) or die "copy $f: $!\n";
        chmod((stat $from)[2] & 07777, $to);
    }
}

# runs a command in its own process group with a deadline; the exit
# status, or -1 on a timeout (the group is killed)
sub run_cmd {
    my ($cmd, $dir, $log, $timeout) = @_;
    my $pid = fork();
    die "fork: $!\n" unless defined $pid;
    if ($pid == 0) {
        setpgid(0, 0);
        chdir $dir or die "$dir: $!\n";
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or die "$log: $!\n";
        open STDERR, '>&', \*STDOUT;
        exec @$cmd or exit 127;
    }
    my $deadline = time() + $timeout;
    while (time() < $deadline) {
        return $? >> 8 if waitpid($pid, WNOHANG) == $pid;
        sleep 0.1;
    }
    kill 'KILL', -$pid;
    waitpid($pid, 0);
    return -1;
}

# the module, and the unit tests when wanted, in the slot
sub build_slot {
    my ($slot, $log, $unit) = @_;
    return 0 if run_cmd(['scripts/build.sh'], $slot, $log, 600) != 0;
    return 0 if $unit
        && run_cmd(['make', '-s', 'build/test_map'], $slot, $log, 300) != 0;
    return 1;
}

# what failed first in a log of prove's: "t/x.t:12: the test's name"
sub first_assertion {
    my ($log) = @_;
    my $s = slurp($log) // '';
    my ($name, $file, $line) = $s =~
        /^#\s+Failed test (?:'(.*?)'\n#\s+)?at (\S+) line (\d+)/m;
    $file =~ s{^\Q$TOP\E/build/mutate/slot\d+/}{} if $file;
    return "$file:$line: " . ($name // '') if $file;
    my ($bad) = $s =~ /^((?:FAIL|not ok|.*Sanitizer|Bailout).*)$/m;
    return $bad // '';
}

# the first of the tests that fails, or '' when all pass
sub first_failing {
    my ($slot, $log, $tests) = @_;
    for my $t (@$tests) {
        my $cmd = $t eq 'unit' ? ['build/test_map']
                               : ['prove', '-I', 't/lib', $t];
        my $rc = run_cmd($cmd, $slot, $log, 300);
        return $rc < 0 ? "$t (timed out)" : $t if $rc != 0;
    }
    return '';
}

sub env_for_slot {
    # the slot's own build, not one the caller pointed the tests at
    delete @ENV{qw(CIO_MODULE CIO_PRELOAD CIO_VALGRIND CIO_BUILD_DIR SAN
                   NGINX_SRC NGINX CIO_TEST_LEAVE)};
}

# in a child: one mutation in a slot; the result as a line in $out
sub one {
    my ($m, $slot, $out) = @_;
    my $log = "$TOP/build/mutate/logs/$m->{name}.log";
    my $path = "$slot/$m->{file}";
    my $start = time();
    my $result;

    unlink $log;

    my $orig = slurp($path);
    my $why = problem($m, $slot);

    if ($why) {
        $result = "DID NOT APPLY: $why";

    } else {
        my $mutated = $orig;
        for my $e ([ $m->{from}, $m->{to} ], $m->{and} || ()) {
            $mutated =~ s/\Q$e->[0]\E/$e->[1]/;
        }
        spew($path, $mutated);

        my $unit = grep { $_ eq 'unit' } @{ $m->{tests} };

        if (!build_slot($slot, $log, $unit)) {
            $result = 'DID NOT BUILD';
        } else {
            my $by = first_failing($slot, $log, $m->{tests});
            $result = $by ? "caught by $by" : 'NOT CAUGHT';
            $result .= "\t" . first_assertion($log) if $by;
        }

        spew($path, $orig);
    }

    my ($res, $how) = split /\t/, $result;
    spew($out, sprintf "%s\t%.0f\t%s\n", $res, time() - $start, $how // '');
}

sub run {
    my (@ms) = @_;

    return 1 unless check(@ms);

    env_for_slot();
    $jobs = 1 if $jobs < 1;

    my @files = tree_files();
    make_path("$TOP/build/mutate/logs");
    my @slots = map { "$TOP/build/mutate/slot$_" } 0 .. $jobs - 1;

    print "mutate: copying the tree and building in build/mutate/ ...\n";

    for my $slot (@slots) {
        make_path($slot);
        sync_slot($slot, \@files);
        unlink "$slot/mutate.log";
        build_slot($slot, "$slot/mutate.log", 1)
            or die "mutate: the unmutated copy does not build, see "
                 . "$slot/mutate.log\n";
    }

    unless ($no_baseline) {
        my %seen;
        my @tests = grep { !$seen{$_}++ } map { @{ $_->{tests} } } @ms;
        print "mutate: the tests without a mutation first: @tests\n";
        my @fail = parallel(\@slots, [ map { { tests => [$_] } } @tests ],
                            sub {
            my ($job, $slot, $out) = @_;
            (my $n = $job->{tests}[0]) =~ s{.*/}{};
            my $log = "$TOP/build/mutate/logs/baseline-$n.log";
            unlink $log;
            my $by = first_failing($slot, $log, $job->{tests});
            spew($out, "$by\n");
        });
        my @bad = grep { ($_->[0] // "") ne "" } @fail;
        if (@bad) {
            print "mutate: these fail without any mutation, fix them "
                . "first: ", join(', ', map { $_->[0] } @bad), "\n";
            return 2;
        }
    }

    print "mutate: ", scalar @ms, " mutations, $jobs at once\n";

    my @results = parallel(\@slots, \@ms, \&one);

    my @rows = map { [ $ms[$_]{name}, $ms[$_]{file},
                       join(' ', @{ $ms[$_]{tests} }),
                       @{ $results[$_] }[0, 1] ] } 0 .. $#ms;

    my @w = (8, 4, 5, 6);
    for my $r (@rows) {
        for my $i (0 .. 3) {
            $w[$i] = length $r->[$i] if length $r->[$i] > $w[$i];
        }
    }
    my $fmt = "%-$w[0]s  %-$w[1]s  %-$w[2]s  %-$w[3]s  %5s\n";

    print "\n";
    printf $fmt, 'mutation', 'file', 'tests', 'result', 'secs';
    printf $fmt, map { '-' x $_ } @w, 5;
    printf $fmt, @$_ for @rows;

    print "\nwhat failed first (logs in build/mutate/logs/):\n";
    printf "  %-*s  %s\n", $w[0], $ms[$_]{name}, $results[$_][2]
        for grep { length($results[$_][2] // '') } 0 .. $#ms;

    my @bad = grep { $_->[3] !~ /^caught by / } @rows;
    printf "\n%d of %d mutations caught%s\n", @rows - @bad, scalar @rows,
        @bad ? '; not caught or not applied: '
               . join(', ', map { $_->[0] } @bad) : '';

    return @bad ? 1 : 0;
}

# runs $fn->($job, $slot, $outfile) for each job in a child, at most one
# per slot at a time; returns each job's output file split on tabs
sub parallel {
    my ($slots, $jobs, $fn) = @_;
    my @queue = 0 .. $#$jobs;
    my (%running, @results);
    my @free = @$slots;

    while (@queue || %running) {
        while (@queue && @free) {
            my $i = shift @queue;
            my $slot = shift @free;
            my $out = "$slot/result";
            unlink $out;
            my $pid = fork();
            die "fork: $!\n" unless defined $pid;
            if ($pid == 0) {
                $fn->($jobs->[$i], $slot, $out);
                exit 0;
            }
            $running{$pid} = [ $i, $slot, $out ];
            print "  started $i: ", ($jobs->[$i]{name}
                                     // "@{ $jobs->[$i]{tests} }"),
                " in ", (split m{/}, $slot)[-1], "\n";
        }
        my $pid = waitpid(-1, 0);
        my $r = delete $running{$pid} or next;
        my ($i, $slot, $out) = @$r;
        my $line = slurp($out) // "FAILED (the run died)\t0\n";
        chomp $line;
        $results[$i] = [ split /\t/, $line, -1 ];
        push @free, $slot;
        print "  done $i: ", ($jobs->[$i]{name} // "@{ $jobs->[$i]{tests} }"),
            ": ", ($results[$i][0] || 'passed'),
            defined $results[$i][1] ? " ($results[$i][1] s)" : '', "\n";
    }

    return @results;
}
