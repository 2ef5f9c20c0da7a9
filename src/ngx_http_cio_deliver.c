
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

#include <sys/eventfd.h>

#include <cjson/cJSON.h>

#include "ngx_http_cio_sender.h"


#define NGX_HTTP_CIO_MAX_WS          256
#define NGX_HTTP_CIO_RECLAIM_EVERY   1000
#define NGX_HTTP_CIO_STOP_TIMEOUT    2000
/* an absurd Retry-After must not stall a workspace for a day */
#define NGX_HTTP_CIO_MAX_RETRY_AFTER 3600


typedef struct {
    ngx_http_cio_main_conf_t    *mcf;
    ngx_http_cio_zone_t         *zone;
    ngx_http_cio_sender_t       *sender;
    ngx_connection_t            *notify;
    ngx_event_t                  timer;
    ngx_event_t                  kick;
    ngx_uint_t                   inflight;
    uint64_t                     reclaimed_at;
    ngx_log_t                   *log;
    ngx_uint_t                   generation;
    uint64_t                     drain_deadline;
    unsigned                     exiting:1;
    unsigned                     draining:1;
    unsigned                     drained:1;
} ngx_http_cio_deliver_t;


static void ngx_http_cio_deliver_timer(ngx_event_t *ev);
static ngx_int_t ngx_http_cio_deliver_drain_start(void);
static ngx_uint_t ngx_http_cio_deliver_drain_done(void);
static void ngx_http_cio_deliver_kick_handler(ngx_event_t *ev);
static void ngx_http_cio_deliver_drain(void);
static ngx_int_t ngx_http_cio_deliver_send(ngx_http_cio_shws_t *ws);
static void ngx_http_cio_deliver_notified(ngx_event_t *ev);
static void ngx_http_cio_deliver_results(void);
static void ngx_http_cio_deliver_settle(ngx_http_cio_sreq_t *req);
static void ngx_http_cio_deliver_stats(ngx_http_cio_sreq_t *req,
    ngx_http_cio_shws_t *ws);
static ngx_uint_t ngx_http_cio_deliver_counts(ngx_http_cio_sreq_t *req);
static ngx_uint_t ngx_http_cio_deliver_refused(ngx_http_cio_sreq_t *req,
    ngx_http_cio_batch_t *batch, char **errors);
static char *ngx_http_cio_deliver_answer(ngx_http_cio_sreq_t *req);
static void ngx_http_cio_deliver_bury(ngx_http_cio_sreq_t *req,
    ngx_http_cio_batch_t *batch, char **errors, char *answer,
    const char *reason);


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

    if (ngx_http_cio_sender_stop(d->sender, NGX_HTTP_CIO_STOP_TIMEOUT)
        == 0)
    {
        /* answered batches settle as usual, unanswered ones go back */
        ngx_http_cio_deliver_results();
        ngx_http_cio_sender_destroy(d->sender);

    } else {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "cio: sender thread did not stop in %d ms, "
                      "its %ui batches come back when their lease expires",
                      NGX_HTTP_CIO_STOP_TIMEOUT, d->inflight);
    }

    d->sender = NULL;

    ngx_close_connection(d->notify);
    d->notify = NULL;
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

    ngx_http_cio_deliver_drain();

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

    if (ngx_http_cio_queue_generation(d->zone) != d->generation) {
        ngx_log_error(NGX_LOG_INFO, d->log, 0,
                      "cio: reloaded, the new workers deliver the queue");
        return NGX_DECLINED;
    }

    if (d->mcf->drain_timeout == 0) {
        return NGX_DECLINED;
    }

    busy = ngx_http_cio_queue_busy(d->zone);

    if (busy == 0) {
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
    ngx_uint_t               busy;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    busy = ngx_http_cio_queue_busy(d->zone);

    if (busy == 0) {
        ngx_log_error(NGX_LOG_NOTICE, d->log, 0,
                      "cio: stopping, the queue is delivered");
        return 1;
    }

    if (ngx_http_cio_now_ms() >= d->drain_deadline) {

        if (d->zone->sh->orphaned) {
            /* nobody spools a zone a reload replaced */
            ngx_log_error(NGX_LOG_ALERT, d->log, 0,
                          "cio: %ui events of a zone a reload replaced "
                          "were not delivered in cio_drain_timeout and are "
                          "lost", busy);

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


static void
ngx_http_cio_deliver_kick_handler(ngx_event_t *ev)
{
    ngx_http_cio_deliver_drain();
}


static void
ngx_http_cio_deliver_drain(void)
{
    uint64_t                 now;
    ngx_uint_t               i, n, sent, reclaimed;
    ngx_queue_t             *q;
    ngx_http_cio_zone_t     *zone;
    ngx_http_cio_shws_t     *ws[NGX_HTTP_CIO_MAX_WS], *w;
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

    if (d->inflight >= d->mcf->max_inflight) {
        return;
    }

    /* the list only grows, but the master may append on reload */

    n = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (q = ngx_queue_head(&zone->sh->workspaces);
         q != ngx_queue_sentinel(&zone->sh->workspaces)
         && n < NGX_HTTP_CIO_MAX_WS;
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_http_cio_shws_t, link);

        if (w->npending && w->retry_at <= now) {
            ws[n++] = w;
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

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


static ngx_int_t
ngx_http_cio_deliver_send(ngx_http_cio_shws_t *ws)
{
    u_char                    *body;
    size_t                     len;
    ngx_http_cio_batch_t      *batch;
    ngx_http_cio_sreq_t       *req;
    ngx_http_cio_settle_t      st;
    ngx_http_cio_deliver_t    *d;
    ngx_http_cio_main_conf_t  *mcf;

    d = &ngx_http_cio_deliver;
    mcf = d->mcf;

    batch = ngx_http_cio_queue_take(d->zone, ws, mcf, &body, &len);
    if (batch == NULL) {
        return NGX_DECLINED;
    }

    req = ngx_http_cio_sreq_alloc();

    if (req == NULL) {
        ngx_log_error(NGX_LOG_ALERT, d->log, 0, "cio: out of memory");
        ngx_free(body);
        goto failed;
    }

    /* the credentials as the zone had them when the batch was taken */
    req->url = batch->url;
    req->userpwd = batch->userpwd;
    batch->url = NULL;
    batch->userpwd = NULL;

    req->body = (char *) body;
    req->body_len = len;
    req->timeout_ms = (long) mcf->timeout;
    req->connect_timeout_ms = (long) mcf->connect_timeout;
    req->cainfo = mcf->trusted_certificate.len
                  ? (const char *) mcf->trusted_certificate.data : NULL;
    req->data = batch;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, d->log, 0,
                   "cio: sending %ui events, %uz bytes, to \"%V\"",
                   batch->n, len, &ws->url);

    if (ngx_http_cio_sender_submit(d->sender, req) != 0) {
        ngx_http_cio_sreq_free(req);
        goto failed;
    }

    d->inflight++;

    return NGX_OK;

failed:

    ngx_memzero(&st, sizeof(ngx_http_cio_settle_t));
    st.outcome = NGX_HTTP_CIO_RETURN;
    ngx_memset(batch->acts, NGX_HTTP_CIO_ACT_RETURN, batch->n);

    ngx_http_cio_queue_settle(d->zone, batch, &st);
    ngx_http_cio_queue_free_batch(batch);

    return NGX_ERROR;
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
    ngx_http_cio_deliver_drain();
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
        ngx_http_cio_sreq_free(req);
    }
}


/*
 * What an answer means for the items of a batch:
 *
 *   2xx          delivered; a 207 names the refused ones, which are
 *                dead-lettered
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
    ngx_str_t                  where;
    ngx_uint_t                 i, level, refused;
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
    reason = "retries exhausted";

    d->inflight--;

    ngx_memzero(&st, sizeof(ngx_http_cio_settle_t));
    st.backoff_min = mcf->backoff_min;
    st.backoff_max = mcf->backoff_max;
    st.retry_max = mcf->retry_max;

    if (req->aborted) {
        st.outcome = NGX_HTTP_CIO_RETURN;
        act = NGX_HTTP_CIO_ACT_RETURN;

    } else if (status >= 200 && status < 300) {
        st.outcome = NGX_HTTP_CIO_DONE;
        act = NGX_HTTP_CIO_ACT_DONE;

    } else if ((status >= 300 && status < 400)
               || status == 401 || status == 403
               || status == 404 || status == 405)
    {
        st.outcome = NGX_HTTP_CIO_HOLD;
        act = NGX_HTTP_CIO_ACT_RETURN;

    } else if (status == 0 || status == 408 || status == 429
               || status >= 500)
    {
        st.outcome = NGX_HTTP_CIO_RETRY;
        act = ngx_http_cio_deliver_counts(req) ? NGX_HTTP_CIO_ACT_RETRY
                                               : NGX_HTTP_CIO_ACT_RETURN;

        if (req->retry_after > 0) {
            st.retry_after_ms = (uint64_t) ngx_min(req->retry_after,
                                              NGX_HTTP_CIO_MAX_RETRY_AFTER)
                                * 1000;
        }

    } else {
        /* Customer.io will never take these: retrying cannot help */
        st.outcome = NGX_HTTP_CIO_DONE;
        act = NGX_HTTP_CIO_ACT_DEAD;
        reason = "batch rejected";
    }

    ngx_memset(batch->acts, act, batch->n);

    if (!req->aborted) {
        ngx_http_cio_deliver_stats(req, ws);
    }

    if (status == 207 && !req->aborted) {
        errors = ngx_calloc(batch->n * sizeof(char *), d->log);

        if (errors) {
            refused = ngx_http_cio_deliver_refused(req, batch, errors);
            reason = "refused";
        }
    }

    ngx_http_cio_queue_settle(d->zone, batch, &st);

    if (st.dead) {
        answer = (status == 207) ? NULL : ngx_http_cio_deliver_answer(req);

        ngx_http_cio_deliver_bury(req, batch, errors, answer, reason);

        if (mcf->dead_letter) {
            where = mcf->dead_letter->name;

        } else {
            ngx_str_set(&where, "the error log (no cio_dead_letter)");
        }

        if (status == 207) {
            ngx_log_error(NGX_LOG_ERR, d->log, 0,
                          "cio: Customer.io refused %ui of %ui events for "
                          "site \"%V\" (207), %ui dead-lettered to %V",
                          refused, batch->n, &ws->site_id, st.dead, &where);

        } else if (act == NGX_HTTP_CIO_ACT_DEAD) {
            ngx_log_error(NGX_LOG_ERR, d->log, 0,
                          "cio: Customer.io rejected a batch of %ui events "
                          "for site \"%V\" with %l: %s; %ui dead-lettered "
                          "to %V",
                          batch->n, &ws->site_id, status,
                          req->resp ? req->resp : "", st.dead, &where);

        } else {
            ngx_log_error(NGX_LOG_ERR, d->log, 0,
                          "cio: gave up on %ui events for site \"%V\" after "
                          "%ui retries (cio_retry_max), the last got %l%s%s; "
                          "dead-lettered to %V",
                          st.dead, &ws->site_id, mcf->retry_max, status,
                          status ? "" : ": ", status ? "" : req->error,
                          &where);
        }

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

    if (st.outcome == NGX_HTTP_CIO_HOLD) {
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
                          "\"%V\" got %l%s%s, retrying in %uL ms",
                          st.requeued, &ws->site_id, &ws->url, status,
                          req->resp ? ": " : "", req->resp ? req->resp : "",
                          st.delay);

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
 * A 207 names the refused items by their index in the batch: those become
 * dead, the others stay delivered.  errors[i] gets the error object
 * Customer.io gave for item i, as JSON text.
 */

static ngx_uint_t
ngx_http_cio_deliver_refused(ngx_http_cio_sreq_t *req,
    ngx_http_cio_batch_t *batch, char **errors)
{
    int          i, n;
    cJSON       *root, *list, *e, *idx;
    ngx_uint_t   refused, k;

    refused = 0;

    root = cJSON_ParseWithLength(req->resp ? req->resp : "", req->resp_len);
    list = cJSON_GetObjectItemCaseSensitive(root, "errors");

    n = cJSON_GetArraySize(list);

    for (i = 0; i < n; i++) {
        e = cJSON_GetArrayItem(list, i);
        idx = cJSON_GetObjectItemCaseSensitive(e, "batch_index");

        if (!cJSON_IsNumber(idx) || idx->valuedouble < 0
            || idx->valuedouble >= (double) batch->n)
        {
            continue;
        }

        k = (ngx_uint_t) idx->valuedouble;

        if (batch->acts[k] == NGX_HTTP_CIO_ACT_DEAD) {
            continue;
        }

        batch->acts[k] = NGX_HTTP_CIO_ACT_DEAD;
        errors[k] = cJSON_PrintUnformatted(e);
        refused++;
    }

    if (refused == 0) {
        /* a 207 that names nobody: the batch is in, the answer is odd */
        ngx_log_error(NGX_LOG_WARN, ngx_http_cio_deliver.log, 0,
                      "cio: site \"%V\" answered 207 without a usable "
                      "batch_index: %s",
                      &batch->ws->site_id, req->resp ? req->resp : "");
    }

    cJSON_Delete(root);

    return refused;
}


/* the answer as JSON text for a dead letter: the body, or the error */

static char *
ngx_http_cio_deliver_answer(ngx_http_cio_sreq_t *req)
{
    char   *s;
    cJSON  *json;

    json = NULL;

    if (req->resp_len) {
        json = cJSON_ParseWithLength(req->resp, req->resp_len);

        if (json == NULL) {
            json = cJSON_CreateString(req->resp);
        }

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
    const char *reason)
{
    char                    *a;
    ngx_uint_t               i;
    ngx_http_cio_deliver_t  *d;

    d = &ngx_http_cio_deliver;

    for (i = 0; i < batch->n; i++) {

        if (batch->acts[i] != NGX_HTTP_CIO_ACT_DEAD) {
            continue;
        }

        a = (errors && errors[i]) ? errors[i] : answer;

        ngx_http_cio_dead_letter(d->mcf, d->log, batch->ws, batch, i,
                                 (u_char *) req->body, req->status, reason,
                                 (u_char *) a, a ? ngx_strlen(a) : 0);
    }

    (void) ngx_http_cio_queue_bury(d->zone, batch);
}
