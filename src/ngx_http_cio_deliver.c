/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * The event-loop side of delivery, one per worker: a flush timer that
 * leases batches out of the zone and hands them to the sender thread, and
 * an eventfd the thread writes to when answers are in.  Everything that
 * touches nginx, the zone or the dead-letter file happens here, on the
 * worker's own thread.
 *
 * The flush timer is not cancelable, on purpose: it is what keeps a worker
 * alive after "nginx -s quit" while it drains the queue for up to
 * cio_drain_timeout.  After a reload it is not re-armed, and the old
 * workers leave the queue to the new ones.
 */


#include "ngx_http_cio.h"
#include "ngx_http_cio_sender.h"

#include <sys/eventfd.h>

#include <cjson/cJSON.h>


#define NGX_HTTP_CIO_MAX_WS          256
#define NGX_HTTP_CIO_RECLAIM_EVERY   1000
#define NGX_HTTP_CIO_STOP_TIMEOUT    2000
/* an absurd Retry-After must not stall a workspace for a day */
#define NGX_HTTP_CIO_MAX_RETRY_AFTER 3600

/*
 * How much of an answer is read: a 207 names every refused item with its
 * batch_index, reason, field and message, some hundred bytes each, so an
 * answer for a batch of n items fits in n KB and a margin.  A longer one
 * is not taken for a whole one: its batch is retried.
 */
#define NGX_HTTP_CIO_ANSWER_BASE     65536
#define NGX_HTTP_CIO_ANSWER_PER_ITEM 1024
/*
 * At most this much of an answer in a log line: the whole of a long one
 * would fill nginx's 2048 bytes and cut off where the events went.
 */
#define NGX_HTTP_CIO_LOG_ANSWER      400
#define ngx_http_cio_shown(req)                                              \
    ((req)->resp ? ngx_min((req)->resp_len, NGX_HTTP_CIO_LOG_ANSWER) : 0)
#define ngx_http_cio_cut(req)                                                \
    (((req)->resp && (req)->resp_len > NGX_HTTP_CIO_LOG_ANSWER) ? "..." : "")

/* at most this much of an answer in each dead letter */
#define NGX_HTTP_CIO_ANSWER_KEEP     65536

/*
 * A batch Customer.io rejects whole is sent again in halves, and a half
 * it rejects in halves again, to find the items at fault: one bad item in
 * a batch of n costs 2 log2(n) requests.  So that a batch where every
 * item is bad does not cost 2n, at most this many pieces are sent; a piece
 * still rejected then is dead-lettered whole.
 */
#define NGX_HTTP_CIO_SPLIT_MAX       64

/* why an item of a split batch died: the reason of its dead letter */
#define NGX_HTTP_CIO_WHY_REFUSED     0
#define NGX_HTTP_CIO_WHY_REJECTED    1
#define NGX_HTTP_CIO_WHY_RETRIES     2


typedef struct ngx_http_cio_piece_s  ngx_http_cio_piece_t;


typedef struct {
    ngx_http_cio_batch_t        *batch;
    char                        *body;      /* the batch's: offs[] index it */
    char                        *url;
    char                        *userpwd;

    /* per item */
    char                       **errors;    /* its answer, if dead */
    long                        *status;    /* the answer that decided */
    u_char                      *why;       /* NGX_HTTP_CIO_WHY_* */

    char                       **answers;   /* what errors[] point into */
    ngx_uint_t                   nanswers;

    ngx_uint_t                   parts;     /* pieces out or waiting */
    ngx_uint_t                   made;      /* pieces made so far */
    ngx_uint_t                   out;       /* a piece is on the wire */
    ngx_uint_t                   back;      /* the rest goes back unsent */
    ngx_uint_t                   blocked;   /* no token in this pass */
    ngx_uint_t                   together;  /* dead in rejected pieces */
    long                         first;     /* the status that began it */
    ngx_http_cio_settle_t        st;        /* the worst outcome of all */
} ngx_http_cio_split_t;


struct ngx_http_cio_piece_s {
    ngx_http_cio_piece_t        *next;      /* waiting to be sent */
    ngx_http_cio_split_t        *split;
    ngx_uint_t                   lo;
    ngx_uint_t                   n;
};


typedef struct {
    ngx_http_cio_main_conf_t    *mcf;
    ngx_http_cio_zone_t         *zone;
    ngx_http_cio_sender_t       *sender;
    ngx_connection_t            *notify;
    ngx_event_t                  timer;
    ngx_event_t                  kick;
    ngx_event_t                  fill;      /* the next slice of a take */
    ngx_http_cio_batch_t        *filling;   /* counted in inflight */
    ngx_event_t                  free;      /* the next slice of a settle */
    ngx_http_cio_batch_t        *freeing;   /* delivered, not all freed */
    ngx_http_cio_batch_t       **freeing_tail;
    ngx_uint_t                   inflight;
    ngx_http_cio_piece_t        *waiting;
    ngx_http_cio_piece_t       **waiting_tail;
    ngx_uint_t                   pass;      /* of ngx_..._pieces() */
    uint64_t                     reclaimed_at;
    ngx_uint_t                   ws_next;    /* where a round begins */
    ngx_log_t                   *log;
    ngx_uint_t                   generation;
    uint64_t                     drain_deadline;
    unsigned                     exiting:1;
    unsigned                     draining:1;
    unsigned                     drained:1;
} ngx_http_cio_deliver_t;


static void ngx_http_cio_deliver_forget(ngx_connection_t *c);
static void ngx_http_cio_deliver_timer(ngx_event_t *ev);
static ngx_int_t ngx_http_cio_deliver_drain_start(void);
static ngx_uint_t ngx_http_cio_deliver_drain_done(void);
static void ngx_http_cio_deliver_orphans(ngx_uint_t busy);
static void ngx_http_cio_deliver_kick_handler(ngx_event_t *ev);
static void ngx_http_cio_deliver_round(void);
static ngx_int_t ngx_http_cio_deliver_send(ngx_http_cio_shws_t *ws);
static void ngx_http_cio_deliver_fill(ngx_event_t *ev);
static ngx_int_t ngx_http_cio_deliver_submit(ngx_http_cio_batch_t *batch);
static void ngx_http_cio_deliver_give_back(ngx_http_cio_batch_t *batch);
static void ngx_http_cio_deliver_notified(ngx_event_t *ev);
static void ngx_http_cio_deliver_results(void);
static void ngx_http_cio_deliver_settle(ngx_http_cio_sreq_t *req);
static void ngx_http_cio_deliver_free(ngx_event_t *ev);
static void ngx_http_cio_deliver_free_all(void);
static void ngx_http_cio_deliver_free_next(ngx_uint_t slice);
static void ngx_http_cio_deliver_stats(ngx_http_cio_sreq_t *req,
    ngx_http_cio_shws_t *ws);
static ngx_uint_t ngx_http_cio_deliver_counts(ngx_http_cio_sreq_t *req);
static ngx_uint_t ngx_http_cio_deliver_classify(ngx_http_cio_sreq_t *req,
    ngx_http_cio_settle_t *st, const char **reason);
static void ngx_http_cio_deliver_multi(ngx_http_cio_sreq_t *req,
    ngx_http_cio_batch_t *batch, ngx_http_cio_settle_t *st, char ***errors,
    ngx_uint_t *refused);
static void ngx_http_cio_deliver_unusable(ngx_http_cio_sreq_t *req,
    ngx_http_cio_shws_t *ws, ngx_uint_t n, const char *why,
    ngx_uint_t refused);
static const char *ngx_http_cio_deliver_refused(ngx_http_cio_sreq_t *req,
    ngx_http_cio_batch_t *batch, ngx_uint_t lo, ngx_uint_t n, char **errors,
    ngx_uint_t *refused);
static void ngx_http_cio_deliver_log_dead(ngx_http_cio_sreq_t *req,
    ngx_http_cio_batch_t *batch, ngx_http_cio_settle_t *st,
    ngx_uint_t refused, ngx_uint_t *lost);
static u_char *ngx_http_cio_deliver_lost(u_char *buf, ngx_uint_t lost);
static char *ngx_http_cio_deliver_answer(ngx_http_cio_sreq_t *req);
static ngx_int_t ngx_http_cio_deliver_split(ngx_http_cio_sreq_t *req);
static ngx_http_cio_piece_t **ngx_http_cio_deliver_piece_add(
    ngx_http_cio_split_t *sp, ngx_uint_t lo, ngx_uint_t n,
    ngx_http_cio_piece_t **at);
static void ngx_http_cio_deliver_piece_abort(ngx_http_cio_split_t *sp);
static void ngx_http_cio_deliver_pieces(void);
static ngx_int_t ngx_http_cio_deliver_piece_send(ngx_http_cio_piece_t *pc);
static void ngx_http_cio_deliver_piece_answer(ngx_http_cio_sreq_t *req);
static void ngx_http_cio_deliver_piece_mark(ngx_http_cio_split_t *sp,
    ngx_uint_t lo, ngx_uint_t n, u_char act, long status, u_char why);
static void ngx_http_cio_deliver_piece_done(ngx_http_cio_piece_t *pc);
static void ngx_http_cio_deliver_merge(ngx_http_cio_settle_t *into,
    ngx_http_cio_settle_t *from);
static void ngx_http_cio_deliver_split_end(ngx_http_cio_split_t *sp);
static void ngx_http_cio_deliver_bury(ngx_http_cio_sreq_t *req,
    ngx_http_cio_batch_t *batch, char **errors, char *answer,
    const char *reason, ngx_uint_t *lost);


static ngx_http_cio_deliver_t  ngx_http_cio_deliver;
static ngx_connection_t        ngx_http_cio_dummy;


ngx_int_t
ngx_http_cio_deliver_init(ngx_cycle_t *cycle, ngx_http_cio_main_conf_t *mcf)
{
    int                      fd;
    char                     err[256];
    ngx_connection_t        *c;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    ngx_memzero(d, sizeof(ngx_http_cio_deliver_t));

    d->mcf = mcf;
    d->zone = mcf->shm_zone->data;
    d->log = cycle->log;
    d->waiting_tail = &d->waiting;
    d->freeing_tail = &d->freeing;

    fd = eventfd(0, EFD_NONBLOCK|EFD_CLOEXEC);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      "cio: eventfd() failed");
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, cycle->log);
    if (c == NULL) {
        close(fd);
        return NGX_ERROR;
    }

    c->data = d;
    c->read->handler = ngx_http_cio_deliver_notified;
    c->read->log = cycle->log;
    c->write->log = cycle->log;

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_close_connection(c);
        return NGX_ERROR;
    }

    d->notify = c;

    d->sender = ngx_http_cio_sender_start(fd, (long) mcf->max_inflight,
                                          err, sizeof(err));
    if (d->sender == NULL) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "cio: sender did not start: %s", err);
        ngx_close_connection(c);
        d->notify = NULL;
        return NGX_ERROR;
    }

    ngx_http_cio_dummy.fd = (ngx_socket_t) -1;

    /* a reload bumps it: an old worker then knows not to drain */
    d->generation = ngx_http_cio_queue_generation(d->zone);

    /* not cancelable: see the top of this file */

    d->timer.handler = ngx_http_cio_deliver_timer;
    d->timer.log = cycle->log;
    d->timer.data = &ngx_http_cio_dummy;

    d->kick.handler = ngx_http_cio_deliver_kick_handler;
    d->kick.log = cycle->log;
    d->kick.data = &ngx_http_cio_dummy;

    d->fill.handler = ngx_http_cio_deliver_fill;
    d->fill.log = cycle->log;
    d->fill.data = &ngx_http_cio_dummy;

    d->free.handler = ngx_http_cio_deliver_free;
    d->free.log = cycle->log;
    d->free.data = &ngx_http_cio_dummy;

    ngx_add_timer(&d->timer, mcf->flush_interval);

    return NGX_OK;
}


void
ngx_http_cio_deliver_exit(ngx_cycle_t *cycle)
{
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    if (d->sender == NULL) {
        return;
    }

    d->exiting = 1;

    if (d->timer.timer_set) {
        ngx_del_timer(&d->timer);
    }

    if (d->kick.posted) {
        ngx_delete_posted_event(&d->kick);
    }

    if (d->fill.posted) {
        ngx_delete_posted_event(&d->fill);
    }

    if (d->filling) {
        ngx_http_cio_deliver_give_back(d->filling);
        d->filling = NULL;
        d->inflight--;
    }

    ngx_http_cio_deliver_free_all();

    if (ngx_http_cio_sender_stop(d->sender, NGX_HTTP_CIO_STOP_TIMEOUT)
        == 0)
    {
        /* answered batches settle as usual, unanswered ones go back */
        ngx_http_cio_deliver_results();
        ngx_http_cio_deliver_pieces();
        ngx_http_cio_sender_destroy(d->sender);

        ngx_close_connection(d->notify);

    } else {
        /* what it answered before it stuck is settled all the same */
        ngx_http_cio_deliver_results();
        ngx_http_cio_deliver_pieces();

        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "cio: sender thread did not stop in %d ms, "
                      "its %ui batches come back when their lease expires; "
                      "its eventfd stays open until the process exits",
                      NGX_HTTP_CIO_STOP_TIMEOUT, d->inflight);

        ngx_http_cio_deliver_forget(d->notify);
    }

    d->sender = NULL;
    d->notify = NULL;

    ngx_http_cio_queue_free_spares();
}


/*
 * The thread may still write to the eventfd, and would write to whatever
 * file its number is reused for: it is left open, and only taken out of
 * the event loop.  The connection goes back, with no fd, so that nginx
 * does not take it for a socket left open.
 */

static void
ngx_http_cio_deliver_forget(ngx_connection_t *c)
{
    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->read->active || c->read->disabled) {
        if (ngx_del_conn) {
            ngx_del_conn(c, 0);

        } else {
            ngx_del_event(c->read, NGX_READ_EVENT, 0);
        }
    }

    c->fd = (ngx_socket_t) -1;

    ngx_free_connection(c);
}


void
ngx_http_cio_deliver_kick(void)
{
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    if (d->sender && !d->exiting && !d->kick.posted) {
        ngx_post_event(&d->kick, &ngx_posted_events);
    }
}


static void
ngx_http_cio_deliver_timer(ngx_event_t *ev)
{
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    if (d->exiting) {
        return;
    }

    if (ngx_exiting) {

        if (!d->draining && ngx_http_cio_deliver_drain_start() != NGX_OK) {
            /* not re-armed: the worker may exit */
            return;
        }

        if (ngx_http_cio_deliver_drain_done()) {
            d->drained = 1;
            return;
        }
    }

    ngx_http_cio_deliver_round();

    ngx_add_timer(ev, d->mcf->flush_interval);
}


/*
 * A stop drains, a reload does not: after a reload the zone lives on and
 * new workers deliver from it, while after a stop what is left in it goes
 * to the spool.  The master bumps the generation on reload, before it
 * tells the old workers to quit.
 */

static ngx_int_t
ngx_http_cio_deliver_drain_start(void)
{
    ngx_uint_t               busy;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    ngx_http_cio_deliver_free_all();

    if (ngx_http_cio_queue_generation(d->zone) != d->generation) {
        ngx_log_error(NGX_LOG_INFO, d->log, 0,
                      "cio: reloaded, the new workers deliver the queue");
        return NGX_DECLINED;
    }

    busy = ngx_http_cio_queue_busy(d->zone);

    if (busy == 0) {
        return NGX_DECLINED;
    }

    if (d->mcf->drain_timeout == 0) {

        if (d->zone->sh->orphaned) {
            ngx_http_cio_deliver_orphans(busy);
        }

        return NGX_DECLINED;
    }

    d->draining = 1;
    d->drain_deadline = ngx_http_cio_now_ms() + d->mcf->drain_timeout;

    ngx_log_error(NGX_LOG_NOTICE, d->log, 0,
                  "cio: stopping, delivering the %ui queued events for up "
                  "to %M ms", busy, d->mcf->drain_timeout);

    return NGX_OK;
}


static ngx_uint_t
ngx_http_cio_deliver_drain_done(void)
{
    ngx_uint_t               busy, late;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;
    late = (ngx_http_cio_now_ms() >= d->drain_deadline);

    if (late) {
        /* delivered, only not freed yet: not to be counted as left */
        ngx_http_cio_deliver_free_all();
    }

    busy = ngx_http_cio_queue_busy(d->zone);

    if (busy == 0) {
        ngx_log_error(NGX_LOG_NOTICE, d->log, 0,
                      "cio: stopping, the queue is delivered");
        return 1;
    }

    if (late) {

        if (d->zone->sh->orphaned) {
            ngx_http_cio_deliver_orphans(busy);

        } else {
            ngx_log_error(NGX_LOG_WARN, d->log, 0,
                          "cio: stopping, %ui events still queued after "
                          "cio_drain_timeout, they stay in the zone for "
                          "cio_spool", busy);
        }

        return 1;
    }

    return 0;
}


/*
 * Nobody spools a zone a reload replaced: what its old workers leave in it
 * is lost with it, but for the items cio_journal holds, which a start with
 * that journal queues again.  Each old worker says it: one cannot know
 * that it is the last.
 */

static void
ngx_http_cio_deliver_orphans(ngx_uint_t busy)
{
    ngx_uint_t               lost;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    lost = ngx_http_cio_queue_unjournaled(d->zone);

    if (lost) {
        ngx_log_error(NGX_LOG_ALERT, d->log, 0,
                      "cio: %ui events of a zone a reload replaced "
                      "were not delivered in cio_drain_timeout and %ui of "
                      "them are lost", busy, lost);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, d->log, 0,
                  "cio: %ui events of a zone a reload replaced were not "
                  "delivered in cio_drain_timeout; cio_journal holds them, "
                  "a start with the same cio_journal queues them again",
                  busy);
}


static void
ngx_http_cio_deliver_kick_handler(ngx_event_t *ev)
{
    ngx_http_cio_deliver_round();
}


static void
ngx_http_cio_deliver_round(void)
{
    uint64_t                 now;
    ngx_uint_t               i, n, m, e, sent, reclaimed;
    ngx_queue_t             *q;
    ngx_http_cio_zone_t     *zone;
    ngx_http_cio_shws_t     *ws[NGX_HTTP_CIO_MAX_WS], *w;
    ngx_http_cio_shws_t     *early[NGX_HTTP_CIO_MAX_WS];
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;
    zone = d->zone;

    if (d->exiting || d->drained || (ngx_exiting && !d->draining)) {
        return;
    }

    now = ngx_http_cio_now_ms();

    if (now - d->reclaimed_at >= NGX_HTTP_CIO_RECLAIM_EVERY) {
        d->reclaimed_at = now;

        reclaimed = ngx_http_cio_queue_reclaim(zone);

        if (reclaimed) {
            ngx_log_error(NGX_LOG_WARN, d->log, 0,
                          "cio: %ui events taken back after their lease "
                          "expired, sending them again", reclaimed);
        }
    }

    /* the pieces of a rejected batch first: their items wait leased */
    ngx_http_cio_deliver_pieces();

    if (d->inflight >= d->mcf->max_inflight) {
        return;
    }

    /*
     * The list only grows, but the master may append on reload.  Each
     * round begins one workspace further on: with more of them busy than
     * cio_max_inflight (or than a round holds), the first in the list
     * would otherwise take every free place, round after round.
     */

    n = 0;
    m = 0;
    e = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (q = ngx_queue_head(&zone->sh->workspaces);
         q != ngx_queue_sentinel(&zone->sh->workspaces);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_http_cio_shws_t, link);

        if (!w->npending || w->retry_at > now) {
            continue;
        }

        if (e++ < d->ws_next) {
            if (m < NGX_HTTP_CIO_MAX_WS) {
                early[m++] = w;
            }

        } else if (n < NGX_HTTP_CIO_MAX_WS) {
            ws[n++] = w;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    for (i = 0; i < m && n < NGX_HTTP_CIO_MAX_WS; i++) {
        ws[n++] = early[i];
    }

    d->ws_next = e ? (d->ws_next + 1) % e : 0;

    /* one batch per workspace per round, so that none starves another */

    do {
        sent = 0;

        for (i = 0; i < n && d->inflight < d->mcf->max_inflight; i++) {
            if (ws[i] && ngx_http_cio_deliver_send(ws[i]) == NGX_OK) {
                sent++;

            } else {
                ws[i] = NULL;
            }
        }

    } while (sent && d->inflight < d->mcf->max_inflight);
}


/*
 * NGX_OK: a batch went to the sender thread; NGX_AGAIN: one is being
 * made, a slice a turn of the event loop (ngx_http_cio_deliver_fill),
 * and no other is begun meanwhile.
 */

static ngx_int_t
ngx_http_cio_deliver_send(ngx_http_cio_shws_t *ws)
{
    ngx_http_cio_batch_t    *batch;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    if (d->filling) {
        return NGX_AGAIN;
    }

    batch = ngx_http_cio_queue_take(d->zone, ws, d->mcf);
    if (batch == NULL) {
        return NGX_DECLINED;
    }

    d->inflight++;

    if (batch->taking) {
        d->filling = batch;
        ngx_post_event(&d->fill, &ngx_posted_next_events);
        return NGX_AGAIN;
    }

    return ngx_http_cio_deliver_submit(batch);
}


/*
 * Posted to the next turn of the event loop, after the connections it
 * has events for: the requests that came in meanwhile wait for a slice
 * at most, not for a whole batch.
 */

static void
ngx_http_cio_deliver_fill(ngx_event_t *ev)
{
    ngx_int_t                rc;
    ngx_http_cio_batch_t    *batch;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;
    batch = d->filling;

    if (ngx_exiting && !d->draining) {
        /* reloaded: the new workers send it */
        ngx_http_cio_deliver_give_back(batch);
        rc = NGX_DECLINED;

    } else {
        rc = ngx_http_cio_queue_take_more(d->zone, batch, d->mcf);
    }

    if (rc == NGX_AGAIN) {
        ngx_post_event(&d->fill, &ngx_posted_next_events);
        return;
    }

    d->filling = NULL;

    if (rc != NGX_OK) {
        d->inflight--;

    } else if (ngx_http_cio_deliver_submit(batch) != NGX_OK) {
        return;
    }

    ngx_http_cio_deliver_round();
}


/* a batch take() made, to the sender thread; counted in d->inflight */

static ngx_int_t
ngx_http_cio_deliver_submit(ngx_http_cio_batch_t *batch)
{
    ngx_http_cio_sreq_t       *req;
    ngx_http_cio_deliver_t    *d;
    ngx_http_cio_main_conf_t  *mcf;

    d = &ngx_http_cio_deliver;
    mcf = d->mcf;

    req = ngx_http_cio_sreq_alloc();

    if (req == NULL) {
        ngx_log_error(NGX_LOG_ALERT, d->log, 0, "cio: out of memory");
        goto failed;
    }

    /* the credentials as the zone had them when the batch was taken */
    req->url = batch->url;
    req->userpwd = batch->userpwd;
    batch->url = NULL;
    batch->userpwd = NULL;

    req->body = (char *) batch->body;
    req->body_len = batch->size;
    batch->body = NULL;

    req->fill = ngx_http_cio_queue_fill;
    req->timeout_ms = (long) mcf->timeout;
    req->connect_timeout_ms = (long) mcf->connect_timeout;
    req->cainfo = mcf->trusted_certificate.len
                  ? (const char *) mcf->trusted_certificate.data : NULL;
    req->data = batch;
    req->resp_max = NGX_HTTP_CIO_ANSWER_BASE
                    + batch->n * NGX_HTTP_CIO_ANSWER_PER_ITEM;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, d->log, 0,
                   "cio: sending %ui events, %uz bytes, to \"%V\"",
                   batch->n, req->body_len, &batch->ws->url);

    if (ngx_http_cio_sender_submit(d->sender, req) != 0) {
        /* the body goes back to the batch, which frees it */
        batch->body = (u_char *) req->body;
        req->body = NULL;
        ngx_http_cio_sreq_free(req);
        goto failed;
    }

    return NGX_OK;

failed:

    d->inflight--;
    ngx_http_cio_deliver_give_back(batch);

    return NGX_ERROR;
}


/* a batch that will not go: its items back to the head of the queue */

static void
ngx_http_cio_deliver_give_back(ngx_http_cio_batch_t *batch)
{
    ngx_http_cio_settle_t    st;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    ngx_memzero(&st, sizeof(ngx_http_cio_settle_t));
    st.outcome = NGX_HTTP_CIO_RETURN;
    ngx_memset(batch->acts, NGX_HTTP_CIO_ACT_RETURN, batch->n);

    ngx_http_cio_queue_settle(d->zone, batch, &st, 0);
    ngx_http_cio_queue_free_batch(batch);
}


static void
ngx_http_cio_deliver_notified(ngx_event_t *ev)
{
    uint64_t           v;
    ngx_connection_t  *c;

    c = ev->data;

    /* edge-triggered: the counter must be read back to zero */

    while (read(c->fd, &v, sizeof(v)) == sizeof(v)) {
        /* void */
    }

    ngx_http_cio_deliver_results();
    ngx_http_cio_deliver_round();
}


static void
ngx_http_cio_deliver_results(void)
{
    ngx_http_cio_sreq_t     *req, *next;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    for (req = ngx_http_cio_sender_results(d->sender); req; req = next) {
        next = req->next;

        ngx_http_cio_deliver_settle(req);

        if (!req->part) {
            /* a piece's body is its own, made to its size */
            ngx_http_cio_queue_free_body((u_char *) req->body);
            req->body = NULL;
        }

        ngx_http_cio_sreq_free(req);
    }
}


/*
 * What an answer means for the items of a batch:
 *
 *   2xx          delivered; a 207 names the refused ones, which are
 *                dead-lettered; a 207 that cannot be read in full is
 *                retried like a 500: it must never count as delivered
 *   401, 403,    credentials or endpoint are wrong: everything waits,
 *   404, 405,    the workspace pauses, an alert says so once a minute,
 *   3xx          and no attempt is counted: a wrong key must not throw
 *                events away
 *   408, 5xx,    retried with backoff; an attempt counts against
 *   timeouts     cio_retry_max, unless Customer.io was never reached or
 *                said it is busy (429, 502, 503, 504): that says nothing
 *                about the items
 *   other 4xx    will never succeed: dead-lettered
 */

static void
ngx_http_cio_deliver_settle(ngx_http_cio_sreq_t *req)
{
    char                      *answer, **errors;
    long                       status;
    u_char                     act;
    ngx_uint_t                 i, level, refused, slice, lost[2];
    const char                *reason;
    ngx_http_cio_shws_t       *ws;
    ngx_http_cio_batch_t      *batch;
    ngx_http_cio_settle_t      st;
    ngx_http_cio_deliver_t    *d;
    ngx_http_cio_main_conf_t  *mcf;

    d = &ngx_http_cio_deliver;
    mcf = d->mcf;
    batch = req->data;
    ws = batch->ws;
    status = req->status;
    errors = NULL;
    refused = 0;

    d->inflight--;

    if (req->part) {
        ngx_http_cio_deliver_piece_answer(req);
        return;
    }

    ngx_memzero(&st, sizeof(ngx_http_cio_settle_t));
    st.backoff_min = mcf->backoff_min;
    st.backoff_max = mcf->backoff_max;
    st.retry_max = mcf->retry_max;

    act = ngx_http_cio_deliver_classify(req, &st, &reason);

    if (act == NGX_HTTP_CIO_ACT_DEAD && batch->n > 1 && d->exiting) {
        /* as a piece: the next worker splits it, the good items live */
        act = NGX_HTTP_CIO_ACT_RETURN;
        st.outcome = NGX_HTTP_CIO_RETURN;
    }

    ngx_memset(batch->acts, act, batch->n);

    if (!req->aborted && !req->unfilled) {
        ngx_http_cio_deliver_stats(req, ws);
    }

    if (act == NGX_HTTP_CIO_ACT_DEAD && batch->n > 1
        && ngx_http_cio_deliver_split(req) == NGX_OK)
    {
        /* the batch is the split's now */
        return;
    }

    if (status == 207 && !req->aborted) {
        ngx_http_cio_deliver_multi(req, batch, &st, &errors, &refused);
        reason = (st.outcome == NGX_HTTP_CIO_DONE) ? "refused"
                                                   : "retries exhausted";
    }

    /* all delivered: freed a slice a turn, see ngx_http_cio_queue_settle() */
    slice = (act == NGX_HTTP_CIO_ACT_DONE && status != 207 && !d->exiting);

    if (ngx_http_cio_queue_settle(d->zone, batch, &st, slice)) {
        *d->freeing_tail = batch;
        d->freeing_tail = &batch->later;

        if (!d->free.posted) {
            ngx_post_event(&d->free, &ngx_posted_next_events);
        }

        return;
    }

    if (st.dead) {
        answer = (status == 207) ? NULL : ngx_http_cio_deliver_answer(req);

        ngx_http_cio_deliver_bury(req, batch, errors, answer, reason, lost);
        ngx_http_cio_deliver_log_dead(req, batch, &st, refused, lost);

        if (answer) {
            cJSON_free(answer);
        }
    }

    if (errors) {
        for (i = 0; i < batch->n; i++) {
            if (errors[i]) {
                cJSON_free(errors[i]);
            }
        }

        ngx_free(errors);
    }

    if (req->unfilled) {
        ngx_log_error(NGX_LOG_WARN, d->log, 0,
                      "cio: a batch of %ui events for site \"%V\" was not "
                      "sent: its lease expired before the sender took it "
                      "(cio_lease), %ui of them went back to the queue",
                      batch->n, &ws->site_id, st.requeued);

    } else if (st.outcome == NGX_HTTP_CIO_HOLD) {
        level = st.alert ? NGX_LOG_ALERT : NGX_LOG_INFO;

        ngx_log_error(level, d->log, 0,
                      "cio: Customer.io answered %l for site \"%V\" at "
                      "\"%V\": check cio_site_id, cio_api_key and "
                      "cio_endpoint; sending is paused, %ui events wait "
                      "(retrying in %uL ms)",
                      status, &ws->site_id, &ws->url, st.pending, st.delay);

    } else if (st.outcome == NGX_HTTP_CIO_RETRY && st.requeued) {

        if (status) {
            ngx_log_error(NGX_LOG_WARN, d->log, 0,
                          "cio: sending %ui events for site \"%V\" to "
                          "\"%V\" got %l%s%*s%s, retrying in %uL ms",
                          st.requeued, &ws->site_id, &ws->url, status,
                          req->resp ? ": " : "", ngx_http_cio_shown(req),
                          req->resp, ngx_http_cio_cut(req), st.delay);

        } else {
            ngx_log_error(NGX_LOG_WARN, d->log, 0,
                          "cio: sending %ui events for site \"%V\" to "
                          "\"%V\" failed: %s, retrying in %uL ms",
                          st.requeued, &ws->site_id, &ws->url, req->error,
                          st.delay);
        }
    }

    ngx_http_cio_queue_free_batch(batch);
}


/*
 * The next slice of the delivered batches' settles, the oldest first, a
 * slice a turn of the event loop: at 64 items a turn, and turns coming
 * back to back while one is posted, it frees far more than a worker
 * delivers.
 */

static void
ngx_http_cio_deliver_free(ngx_event_t *ev)
{
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    ngx_http_cio_deliver_free_next(1);

    if (d->freeing) {
        ngx_post_event(&d->free, &ngx_posted_next_events);
    }
}


/*
 * All that is left of them at once: on exit, and before a stop counts
 * what is queued (delivered items still in flight are not).
 */

static void
ngx_http_cio_deliver_free_all(void)
{
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    if (d->free.posted) {
        ngx_delete_posted_event(&d->free);
    }

    while (d->freeing) {
        ngx_http_cio_deliver_free_next(0);
    }
}


/* the oldest batch's next slice, or all of it; a batch all freed goes */

static void
ngx_http_cio_deliver_free_next(ngx_uint_t slice)
{
    ngx_http_cio_batch_t    *batch;
    ngx_http_cio_settle_t    st;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;
    batch = d->freeing;

    /* the outcome was the first slice's: this one only frees */
    ngx_memzero(&st, sizeof(ngx_http_cio_settle_t));

    if (ngx_http_cio_queue_settle(d->zone, batch, &st, slice)) {
        return;
    }

    d->freeing = batch->later;

    if (d->freeing == NULL) {
        d->freeing_tail = &d->freeing;
    }

    ngx_http_cio_queue_free_batch(batch);
}


/* the outcome an answer's status gives, and what it does to every item */

static ngx_uint_t
ngx_http_cio_deliver_classify(ngx_http_cio_sreq_t *req,
    ngx_http_cio_settle_t *st, const char **reason)
{
    long  status;

    status = req->status;
    *reason = "retries exhausted";

    if (req->aborted || req->unfilled) {
        /* never sent: nothing to say about Customer.io, no backoff */
        st->outcome = NGX_HTTP_CIO_RETURN;
        return NGX_HTTP_CIO_ACT_RETURN;
    }

    if (status >= 200 && status < 300) {
        st->outcome = NGX_HTTP_CIO_DONE;
        return NGX_HTTP_CIO_ACT_DONE;
    }

    if ((status >= 300 && status < 400)
        || status == 401 || status == 403 || status == 404 || status == 405)
    {
        st->outcome = NGX_HTTP_CIO_HOLD;
        return NGX_HTTP_CIO_ACT_RETURN;
    }

    if (status == 0 || status == 408 || status == 429 || status >= 500) {
        st->outcome = NGX_HTTP_CIO_RETRY;

        if (req->retry_after > 0) {
            st->retry_after_ms = (uint64_t) ngx_min(req->retry_after,
                                                NGX_HTTP_CIO_MAX_RETRY_AFTER)
                                 * 1000;
        }

        return ngx_http_cio_deliver_counts(req) ? NGX_HTTP_CIO_ACT_RETRY
                                                : NGX_HTTP_CIO_ACT_RETURN;
    }

    /* Customer.io will never take these: retrying cannot help */
    st->outcome = NGX_HTTP_CIO_DONE;
    *reason = "batch rejected";

    return NGX_HTTP_CIO_ACT_DEAD;
}


/*
 * A 207: the items it names are dead, the others delivered.  When the
 * answer cannot be read in full, only the items it does name are known
 * refused: the others are retried, as after a 500, since nothing says
 * they were taken.
 */

static void
ngx_http_cio_deliver_multi(ngx_http_cio_sreq_t *req,
    ngx_http_cio_batch_t *batch, ngx_http_cio_settle_t *st, char ***errors,
    ngx_uint_t *refused)
{
    ngx_uint_t               i;
    const char              *why;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    *errors = ngx_calloc(batch->n * sizeof(char *), d->log);

    if (*errors == NULL) {
        why = "out of memory";

    } else {
        why = ngx_http_cio_deliver_refused(req, batch, 0, batch->n, *errors,
                                           refused);
    }

    if (why == NULL) {
        return;
    }

    st->outcome = NGX_HTTP_CIO_RETRY;

    for (i = 0; i < batch->n; i++) {
        if (batch->acts[i] != NGX_HTTP_CIO_ACT_DEAD) {
            batch->acts[i] = NGX_HTTP_CIO_ACT_RETRY;
        }
    }

    ngx_http_cio_deliver_unusable(req, batch->ws, batch->n, why, *refused);
}


static void
ngx_http_cio_deliver_unusable(ngx_http_cio_sreq_t *req,
    ngx_http_cio_shws_t *ws, ngx_uint_t n, const char *why,
    ngx_uint_t refused)
{
    ngx_log_error(NGX_LOG_WARN, ngx_http_cio_deliver.log, 0,
                  "cio: site \"%V\" answered 207 for %ui events with an "
                  "answer of %uz%s bytes that cannot be used (%s); %ui "
                  "refused events it names are dead-lettered, the others "
                  "are sent again",
                  &ws->site_id, n, req->resp_len, req->resp_cut ? "+" : "",
                  why, refused);
}


/*
 * What became of a batch's dead items.  lost[0]: of the items a 207
 * named, those whose dead letters could not be written; lost[1]: of the
 * others.  A line never counts a lost one as dead-lettered.
 */

static void
ngx_http_cio_deliver_log_dead(ngx_http_cio_sreq_t *req,
    ngx_http_cio_batch_t *batch, ngx_http_cio_settle_t *st,
    ngx_uint_t refused, ngx_uint_t *lost)
{
    long                       status;
    u_char                     buf[NGX_INT_T_LEN + 32], *p;
    ngx_str_t                  where;
    ngx_uint_t                 named;
    ngx_http_cio_shws_t       *ws;
    ngx_http_cio_deliver_t    *d;
    ngx_http_cio_main_conf_t  *mcf;

    d = &ngx_http_cio_deliver;
    mcf = d->mcf;
    ws = batch->ws;
    status = req->status;

    if (mcf->dead_letter) {
        where = mcf->dead_letter->name;

    } else {
        ngx_str_set(&where, "the error log (no cio_dead_letter)");
    }

    named = ngx_min(st->dead, refused);

    if (status == 207 && refused) {
        p = ngx_http_cio_deliver_lost(buf, lost[0]);

        ngx_log_error(NGX_LOG_ERR, d->log, 0,
                      "cio: Customer.io refused %ui of %ui events for "
                      "site \"%V\" (207), %ui dead-lettered to %V%*s",
                      refused, batch->n, &ws->site_id, named - lost[0],
                      &where, (size_t) (p - buf), buf);

        if (st->dead <= refused) {
            return;
        }
    }

    if (status == 207 && st->outcome == NGX_HTTP_CIO_DONE) {
        return;
    }

    p = ngx_http_cio_deliver_lost(buf, lost[1]);

    if (st->outcome == NGX_HTTP_CIO_DONE) {
        ngx_log_error(NGX_LOG_ERR, d->log, 0,
                      "cio: Customer.io rejected a batch of %ui events "
                      "for site \"%V\" with %l: %*s%s; %ui dead-lettered "
                      "to %V%*s",
                      batch->n, &ws->site_id, status,
                      ngx_http_cio_shown(req), req->resp,
                      ngx_http_cio_cut(req), st->dead - lost[1], &where,
                      (size_t) (p - buf), buf);

    } else if (lost[1] == 0) {
        ngx_log_error(NGX_LOG_ERR, d->log, 0,
                      "cio: gave up on %ui events for site \"%V\" after "
                      "%ui retries (cio_retry_max), the last got %l%s%s; "
                      "dead-lettered to %V",
                      st->dead - named, &ws->site_id, mcf->retry_max,
                      status, status ? "" : ": ", status ? "" : req->error,
                      &where);

    } else {
        ngx_log_error(NGX_LOG_ERR, d->log, 0,
                      "cio: gave up on %ui events for site \"%V\" after "
                      "%ui retries (cio_retry_max), the last got %l%s%s; "
                      "%ui dead-lettered to %V%*s",
                      st->dead - named, &ws->site_id, mcf->retry_max,
                      status, status ? "" : ": ", status ? "" : req->error,
                      st->dead - named - lost[1], &where,
                      (size_t) (p - buf), buf);
    }
}


/* ", N lost (...)" when some dead letters could not be kept, else "" */

static u_char *
ngx_http_cio_deliver_lost(u_char *buf, ngx_uint_t lost)
{
    if (lost == 0) {
        return buf;
    }

    return ngx_sprintf(buf, ", %ui lost (%s)", lost,
                       ngx_http_cio_deliver.mcf->dead_letter
                       ? "write failed" : "not logged");
}


/*
 * A batch Customer.io rejected whole (a 400 for one malformed item) is
 * sent again in two halves; what was rejected of it is split again until
 * the items at fault are found, alone, and dead-lettered; the others are
 * delivered.  The items stay leased meanwhile and the batch is settled
 * once, when every piece is answered.  Each piece is a request, and takes
 * a token of cio_rate as a batch does (ngx_http_cio_queue_may_send).
 *
 * The pieces of a batch go one at a time, in the batch's order, so that
 * the items of one person keep theirs (ngx_http_cio_queue_take): the
 * halves of a rejected piece go first, and a piece that is to be retried
 * takes the batch's later pieces back to the queue with it, unsent.
 */

static ngx_int_t
ngx_http_cio_deliver_split(ngx_http_cio_sreq_t *req)
{
    u_char                  *p;
    size_t                   size;
    ngx_uint_t               n;
    ngx_http_cio_piece_t   **at;
    ngx_http_cio_split_t    *sp;
    ngx_http_cio_batch_t    *batch;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;
    batch = req->data;
    n = batch->n;

    size = sizeof(ngx_http_cio_split_t)
           + (2 * n + NGX_HTTP_CIO_SPLIT_MAX) * sizeof(char *)
           + n * (sizeof(long) + 1);

    p = ngx_calloc(size, d->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    sp = (ngx_http_cio_split_t *) p;
    sp->errors = (char **) (sp + 1);
    sp->answers = sp->errors + n;
    sp->status = (long *) (sp->answers + n + NGX_HTTP_CIO_SPLIT_MAX);
    sp->why = (u_char *) (sp->status + n);

    sp->batch = batch;
    sp->body = req->body;
    sp->url = req->url;
    sp->userpwd = req->userpwd;
    req->body = NULL;
    req->url = NULL;
    req->userpwd = NULL;

    sp->first = req->status;
    sp->st.outcome = NGX_HTTP_CIO_DONE;
    sp->st.backoff_min = d->mcf->backoff_min;
    sp->st.backoff_max = d->mcf->backoff_max;
    sp->st.retry_max = d->mcf->retry_max;

    ngx_memset(batch->acts, NGX_HTTP_CIO_ACT_DONE, n);

    ngx_log_error(NGX_LOG_WARN, d->log, 0,
                  "cio: Customer.io rejected a batch of %ui events for "
                  "site \"%V\" with %l: %*s%s; sending it again in halves "
                  "to find the events at fault",
                  n, &batch->ws->site_id, req->status,
                  ngx_http_cio_shown(req), req->resp, ngx_http_cio_cut(req));

    /*
     * a part of its own while the pieces are made: a second piece that
     * cannot be made takes the first back (piece_abort), which must not
     * end the split under our feet; ended here, once, if no piece is left
     */
    sp->parts = 1;

    at = ngx_http_cio_deliver_piece_add(sp, 0, n / 2, d->waiting_tail);
    (void) ngx_http_cio_deliver_piece_add(sp, n / 2, n - n / 2, at);

    if (--sp->parts == 0) {
        ngx_http_cio_deliver_split_end(sp);
    }

    return NGX_OK;
}


/* a piece into the waiting list at "at"; returns where the next goes */

static ngx_http_cio_piece_t **
ngx_http_cio_deliver_piece_add(ngx_http_cio_split_t *sp, ngx_uint_t lo,
    ngx_uint_t n, ngx_http_cio_piece_t **at)
{
    ngx_http_cio_piece_t    *pc;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    pc = sp->back ? NULL : ngx_calloc(sizeof(ngx_http_cio_piece_t), d->log);

    if (pc == NULL) {
        /* back to the queue, and the later pieces with it, in order */
        ngx_http_cio_deliver_piece_mark(sp, lo, n, NGX_HTTP_CIO_ACT_RETURN,
                                        0, NGX_HTTP_CIO_WHY_RETRIES);
        ngx_http_cio_deliver_piece_abort(sp);
        return at;
    }

    sp->parts++;
    sp->made++;

    pc->split = sp;
    pc->lo = lo;
    pc->n = n;

    pc->next = *at;
    *at = pc;

    if (d->waiting_tail == at) {
        d->waiting_tail = &pc->next;
    }

    return &pc->next;
}


/*
 * A piece is to be retried: the batch's pieces still waiting go back to
 * the queue with it, unsent, or they could deliver a person's later items
 * before it.  The caller still holds a part of the split.
 */

static void
ngx_http_cio_deliver_piece_abort(ngx_http_cio_split_t *sp)
{
    ngx_http_cio_piece_t    *pc, **pp;
    ngx_http_cio_settle_t    back;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    sp->back = 1;

    ngx_memzero(&back, sizeof(ngx_http_cio_settle_t));
    back.outcome = NGX_HTTP_CIO_RETURN;

    pp = &d->waiting;

    while (*pp) {
        pc = *pp;

        if (pc->split != sp) {
            pp = &pc->next;
            continue;
        }

        *pp = pc->next;

        if (d->waiting_tail == &pc->next) {
            d->waiting_tail = pp;
        }

        ngx_http_cio_deliver_piece_mark(sp, pc->lo, pc->n,
                                        NGX_HTTP_CIO_ACT_RETURN, 0,
                                        NGX_HTTP_CIO_WHY_RETRIES);
        ngx_http_cio_deliver_merge(&sp->st, &back);
        ngx_http_cio_deliver_piece_done(pc);
    }
}


/*
 * Sends the first waiting piece of each batch that has none on the wire;
 * when exiting, gives them all back to the queue.
 */

static void
ngx_http_cio_deliver_pieces(void)
{
    ngx_int_t                rc;
    ngx_http_cio_piece_t    *pc, **pp;
    ngx_http_cio_split_t    *sp;
    ngx_http_cio_settle_t    back;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    ngx_memzero(&back, sizeof(ngx_http_cio_settle_t));
    back.outcome = NGX_HTTP_CIO_RETURN;

    pp = &d->waiting;

    /* a split that found no token waits with all its pieces, in order */
    d->pass++;

    while (*pp && (d->exiting || d->inflight < d->mcf->max_inflight)) {
        pc = *pp;
        sp = pc->split;

        if ((sp->out || sp->blocked == d->pass) && !d->exiting) {
            pp = &pc->next;
            continue;
        }

        rc = d->exiting ? NGX_DECLINED
                        : ngx_http_cio_queue_may_send(d->zone, sp->batch,
                                                      pc->lo, pc->n, d->mcf);

        if (rc == NGX_AGAIN) {
            sp->blocked = d->pass;
            pp = &pc->next;
            continue;
        }

        *pp = pc->next;

        if (d->waiting_tail == &pc->next) {
            d->waiting_tail = pp;
        }

        if (rc == NGX_OK && ngx_http_cio_deliver_piece_send(pc) == NGX_OK) {
            sp->out = 1;
            continue;
        }

        ngx_http_cio_deliver_piece_mark(sp, pc->lo, pc->n,
                                        NGX_HTTP_CIO_ACT_RETURN, 0,
                                        NGX_HTTP_CIO_WHY_RETRIES);
        ngx_http_cio_deliver_merge(&sp->st, &back);
        ngx_http_cio_deliver_piece_abort(sp);
        ngx_http_cio_deliver_piece_done(pc);

        /* the abort may have taken pieces from anywhere in the list */
        pp = &d->waiting;
    }
}


static ngx_int_t
ngx_http_cio_deliver_piece_send(ngx_http_cio_piece_t *pc)
{
    u_char                    *p;
    size_t                     len, span;
    ngx_uint_t                 last;
    ngx_http_cio_sreq_t       *req;
    ngx_http_cio_split_t      *sp;
    ngx_http_cio_batch_t      *batch;
    ngx_http_cio_deliver_t    *d;
    ngx_http_cio_main_conf_t  *mcf;

    d = &ngx_http_cio_deliver;
    mcf = d->mcf;
    sp = pc->split;
    batch = sp->batch;

    /* the piece's items and the commas between them, as the batch has them */
    last = pc->lo + pc->n - 1;
    span = batch->offs[last] + batch->lens[last] - batch->offs[pc->lo];

    len = sizeof(NGX_HTTP_CIO_BATCH_HEAD) - 1 + span
          + sizeof(NGX_HTTP_CIO_BATCH_TAIL) - 1;

    req = ngx_http_cio_sreq_alloc();
    if (req == NULL) {
        return NGX_ERROR;
    }

    req->body = malloc(len);
    req->url = strdup(sp->url);
    req->userpwd = strdup(sp->userpwd);

    if (req->body == NULL || req->url == NULL || req->userpwd == NULL) {
        ngx_http_cio_sreq_free(req);
        return NGX_ERROR;
    }

    p = ngx_cpymem(req->body, NGX_HTTP_CIO_BATCH_HEAD,
                   sizeof(NGX_HTTP_CIO_BATCH_HEAD) - 1);
    p = ngx_cpymem(p, sp->body + batch->offs[pc->lo], span);

    ngx_memcpy(p, NGX_HTTP_CIO_BATCH_TAIL,
               sizeof(NGX_HTTP_CIO_BATCH_TAIL) - 1);

    req->body_len = len;
    req->timeout_ms = (long) mcf->timeout;
    req->connect_timeout_ms = (long) mcf->connect_timeout;
    req->cainfo = mcf->trusted_certificate.len
                  ? (const char *) mcf->trusted_certificate.data : NULL;
    req->data = batch;
    req->part = pc;
    req->resp_max = NGX_HTTP_CIO_ANSWER_BASE
                    + pc->n * NGX_HTTP_CIO_ANSWER_PER_ITEM;

    if (ngx_http_cio_sender_submit(d->sender, req) != 0) {
        ngx_http_cio_sreq_free(req);
        return NGX_ERROR;
    }

    d->inflight++;

    return NGX_OK;
}


static void
ngx_http_cio_deliver_piece_answer(ngx_http_cio_sreq_t *req)
{
    char                    *a;
    u_char                   act;
    ngx_uint_t               i, refused, n, lo;
    const char              *reason, *why;
    ngx_http_cio_piece_t    *pc, **at;
    ngx_http_cio_split_t    *sp;
    ngx_http_cio_batch_t    *batch;
    ngx_http_cio_settle_t    st;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;
    pc = req->part;
    sp = pc->split;
    batch = sp->batch;
    lo = pc->lo;
    n = pc->n;

    sp->out = 0;

    if (!req->aborted) {
        ngx_http_cio_deliver_stats(req, batch->ws);
    }

    ngx_memzero(&st, sizeof(ngx_http_cio_settle_t));

    act = ngx_http_cio_deliver_classify(req, &st, &reason);

    if (act == NGX_HTTP_CIO_ACT_DEAD && n > 1 && d->exiting) {
        /* the next worker splits it again */
        act = NGX_HTTP_CIO_ACT_RETURN;
        st.outcome = NGX_HTTP_CIO_RETURN;
    }

    if (act == NGX_HTTP_CIO_ACT_DEAD) {

        if (n > 1 && sp->made + 2 <= NGX_HTTP_CIO_SPLIT_MAX) {
            /* before the batch's later pieces, in order */
            at = ngx_http_cio_deliver_piece_add(sp, lo, n / 2, &d->waiting);
            (void) ngx_http_cio_deliver_piece_add(sp, lo + n / 2, n - n / 2,
                                                  at);
            ngx_http_cio_deliver_piece_done(pc);
            return;
        }

        if (n > 1) {
            sp->together += n;
        }

        a = ngx_http_cio_deliver_answer(req);

        if (a) {
            sp->answers[sp->nanswers++] = a;
        }

        ngx_http_cio_deliver_piece_mark(sp, lo, n, NGX_HTTP_CIO_ACT_DEAD,
                                        req->status,
                                        NGX_HTTP_CIO_WHY_REJECTED);

        for (i = lo; i < lo + n; i++) {
            sp->errors[i] = a;
        }

    } else if (act == NGX_HTTP_CIO_ACT_DONE && req->status == 207) {
        refused = 0;
        why = ngx_http_cio_deliver_refused(req, batch, lo, n, sp->errors,
                                           &refused);

        for (i = lo; i < lo + n; i++) {
            if (sp->errors[i]) {
                sp->answers[sp->nanswers++] = sp->errors[i];
                sp->status[i] = 207;
                sp->why[i] = NGX_HTTP_CIO_WHY_REFUSED;

            } else if (why) {
                batch->acts[i] = NGX_HTTP_CIO_ACT_RETRY;
                sp->status[i] = 207;
                sp->why[i] = NGX_HTTP_CIO_WHY_RETRIES;
            }
        }

        if (why) {
            st.outcome = NGX_HTTP_CIO_RETRY;

            ngx_http_cio_deliver_unusable(req, batch->ws, n, why, refused);
        }

    } else {
        ngx_http_cio_deliver_piece_mark(sp, lo, n, act, req->status,
                                        NGX_HTTP_CIO_WHY_RETRIES);
    }

    if (st.outcome != NGX_HTTP_CIO_DONE) {
        ngx_http_cio_deliver_piece_abort(sp);
    }

    ngx_http_cio_deliver_merge(&sp->st, &st);
    ngx_http_cio_deliver_piece_done(pc);
}


static void
ngx_http_cio_deliver_piece_mark(ngx_http_cio_split_t *sp, ngx_uint_t lo,
    ngx_uint_t n, u_char act, long status, u_char why)
{
    ngx_uint_t  i;

    for (i = lo; i < lo + n; i++) {
        sp->batch->acts[i] = act;
        sp->status[i] = status;
        sp->why[i] = why;
    }
}


static void
ngx_http_cio_deliver_piece_done(ngx_http_cio_piece_t *pc)
{
    ngx_http_cio_split_t  *sp;

    sp = pc->split;

    ngx_free(pc);

    if (--sp->parts == 0) {
        ngx_http_cio_deliver_split_end(sp);
    }
}


/* the batch's outcome is the worst of its pieces' */

static void
ngx_http_cio_deliver_merge(ngx_http_cio_settle_t *into,
    ngx_http_cio_settle_t *from)
{
    static ngx_uint_t  rank[] = { 0, 2, 1, 3 };   /* by outcome */

    if (rank[from->outcome] > rank[into->outcome]) {
        into->outcome = from->outcome;
    }

    into->retry_after_ms = ngx_max(into->retry_after_ms,
                                   from->retry_after_ms);
}


static void
ngx_http_cio_deliver_split_end(ngx_http_cio_split_t *sp)
{
    char                      *a;
    u_char                     buf[NGX_INT_T_LEN + 32], *p;
    ngx_str_t                  where;
    ngx_uint_t                 i, level, lost;
    const char                *reason;
    ngx_http_cio_batch_t      *batch;
    ngx_http_cio_deliver_t    *d;
    ngx_http_cio_main_conf_t  *mcf;

    static const char  *reasons[] = {
        "refused", "batch rejected", "retries exhausted"
    };

    d = &ngx_http_cio_deliver;
    mcf = d->mcf;
    batch = sp->batch;
    lost = 0;

    ngx_http_cio_queue_settle(d->zone, batch, &sp->st, 0);

    for (i = 0; i < batch->n; i++) {

        if (batch->acts[i] != NGX_HTTP_CIO_ACT_DEAD) {
            continue;
        }

        a = sp->errors[i];
        reason = reasons[sp->why[i]];

        if (ngx_http_cio_dead_letter(mcf, d->log, batch->ws, batch, i,
                                     (u_char *) sp->body, sp->status[i],
                                     reason, (u_char *) a,
                                     a ? ngx_strlen(a) : 0)
            != NGX_OK)
        {
            lost++;
        }
    }

    if (sp->st.dead) {
        (void) ngx_http_cio_queue_bury(d->zone, batch, lost);
    }

    if (mcf->dead_letter) {
        where = mcf->dead_letter->name;

    } else {
        ngx_str_set(&where, "the error log (no cio_dead_letter)");
    }

    level = sp->st.dead ? NGX_LOG_ERR : NGX_LOG_WARN;

    p = ngx_http_cio_deliver_lost(buf, lost);

    ngx_log_error(level, d->log, 0,
                  "cio: the batch of %ui events for site \"%V\" rejected "
                  "with %l was sent again in %ui pieces: %ui delivered, "
                  "%ui dead-lettered to %V%*s, %ui queued again%s",
                  batch->n, &batch->ws->site_id, sp->first, sp->made,
                  sp->st.done, sp->st.dead - lost, &where,
                  (size_t) (p - buf), buf, sp->st.requeued,
                  sp->together ? "; the pieces still rejected at the "
                                 "limit of pieces were dead-lettered whole"
                               : "");

    for (i = 0; i < sp->nanswers; i++) {
        cJSON_free(sp->answers[i]);
    }

    ngx_http_cio_queue_free_body((u_char *) sp->body);
    free(sp->url);
    free(sp->userpwd);
    ngx_http_cio_queue_free_batch(batch);
    ngx_free(sp);
}


/* for cio_status: the answer's class, its latency, and what went wrong */

static void
ngx_http_cio_deliver_stats(ngx_http_cio_sreq_t *req, ngx_http_cio_shws_t *ws)
{
    size_t       len;
    const char  *err;

    err = NULL;
    len = 0;

    if (req->status == 0) {
        err = req->error;
        len = ngx_strlen(req->error);

    } else if (req->status < 200 || req->status >= 300 || req->status == 207)
    {
        err = req->resp ? req->resp : "";
        len = req->resp ? ngx_min(req->resp_len, NGX_HTTP_CIO_LAST_ERROR_LEN)
                        : 0;

        if (len == 0) {
            err = "(no body)";
            len = sizeof("(no body)") - 1;
        }
    }

    ngx_http_cio_stats_upstream(ngx_http_cio_deliver.zone, ws, req->status,
                                req->total_time, err, len);
}


static ngx_uint_t
ngx_http_cio_deliver_counts(ngx_http_cio_sreq_t *req)
{
    if (req->status == 0) {
        /* a batch that never left cannot be what fails */
        return !req->unsent;
    }

    /* busy or away, not a verdict on these items */
    return req->status != 429 && req->status != 502 && req->status != 503
           && req->status != 504;
}


/*
 * A 207 names the refused items by their index in what was sent (the n
 * items of the batch from lo on): those become dead.  errors[i] gets the
 * error object Customer.io gave for item i, as JSON text.  Returns NULL
 * when the answer names every refused item, or why it cannot be relied
 * on.
 */

static const char *
ngx_http_cio_deliver_refused(ngx_http_cio_sreq_t *req,
    ngx_http_cio_batch_t *batch, ngx_uint_t lo, ngx_uint_t n, char **errors,
    ngx_uint_t *refused)
{
    int          i, nerr;
    cJSON       *root, *list, *e, *idx;
    ngx_uint_t   k;
    const char  *why;

    *refused = 0;

    if (req->curl_code != 0) {
        return "the transfer failed";
    }

    if (req->resp_cut) {
        return "it is longer than the batch can need";
    }

    root = cJSON_ParseWithLength(req->resp ? req->resp : "", req->resp_len);
    list = cJSON_GetObjectItemCaseSensitive(root, "errors");

    if (!cJSON_IsArray(list)) {
        cJSON_Delete(root);
        return "no \"errors\" array";
    }

    why = NULL;
    nerr = cJSON_GetArraySize(list);

    for (i = 0; i < nerr; i++) {
        e = cJSON_GetArrayItem(list, i);
        idx = cJSON_GetObjectItemCaseSensitive(e, "batch_index");

        if (!cJSON_IsNumber(idx) || idx->valuedouble < 0
            || idx->valuedouble >= (double) n
            || idx->valuedouble != (double) (ngx_uint_t) idx->valuedouble)
        {
            why = "an error without a usable batch_index";
            continue;
        }

        k = lo + (ngx_uint_t) idx->valuedouble;

        if (batch->acts[k] == NGX_HTTP_CIO_ACT_DEAD) {
            continue;
        }

        batch->acts[k] = NGX_HTTP_CIO_ACT_DEAD;
        errors[k] = cJSON_PrintUnformatted(e);
        (*refused)++;
    }

    cJSON_Delete(root);

    if (why == NULL && *refused == 0) {
        why = "it names no item";
    }

    return why;
}


/*
 * The answer as JSON text for a dead letter: the body, or the error.  A
 * body that is not JSON, or too long to copy into every dead letter of
 * the batch, is kept as a string of its first bytes; either is made
 * UTF-8, so that the line stays JSON.
 */

static char *
ngx_http_cio_deliver_answer(ngx_http_cio_sreq_t *req)
{
    char    *s;
    size_t   n;
    cJSON   *json;

    json = NULL;

    if (req->resp_len) {
        n = ngx_min(req->resp_len, NGX_HTTP_CIO_ANSWER_KEEP);

        s = ngx_alloc(n + 1, ngx_cycle->log);
        if (s == NULL) {
            return NULL;
        }

        /* what is not UTF-8 is no JSON structure: the repair keeps it */
        ngx_memcpy(s, req->resp, n);
        s[n] = '\0';
        ngx_http_cio_utf8_clean((u_char *) s, n);

        if (n == req->resp_len) {
            json = cJSON_ParseWithLength(s, n);
        }

        if (json == NULL) {
            json = cJSON_CreateString(s);
        }

        ngx_free(s);

    } else if (req->error[0]) {
        json = cJSON_CreateString(req->error);
    }

    if (json == NULL) {
        return NULL;
    }

    s = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);

    return s;
}


/*
 * Dead letters are written before the items leave the zone: a crash in
 * between sends them again, which the dedupe id makes harmless, rather
 * than losing them.
 */

static void
ngx_http_cio_deliver_bury(ngx_http_cio_sreq_t *req,
    ngx_http_cio_batch_t *batch, char **errors, char *answer,
    const char *reason, ngx_uint_t *lost)
{
    char                    *a;
    ngx_uint_t               i, named;
    const char              *r;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    lost[0] = 0;
    lost[1] = 0;

    for (i = 0; i < batch->n; i++) {

        if (batch->acts[i] != NGX_HTTP_CIO_ACT_DEAD) {
            continue;
        }

        /* a 207 that could not be read in full still names some */
        named = (errors && errors[i]);

        if (named) {
            a = errors[i];
            r = "refused";

        } else {
            a = answer;
            r = reason;
        }

        if (ngx_http_cio_dead_letter(d->mcf, d->log, batch->ws, batch, i,
                                     (u_char *) req->body, req->status, r,
                                     (u_char *) a, a ? ngx_strlen(a) : 0)
            != NGX_OK)
        {
            lost[named ? 0 : 1]++;
        }
    }

    (void) ngx_http_cio_queue_bury(d->zone, batch, lost[0] + lost[1]);
}
