
/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * The event-loop side of delivery, one per worker: a flush timer that
 * leases batches out of the zone and hands them to the sender thread, and
 * an eventfd the thread writes to when answers are in.  Everything that
 * touches nginx or the zone happens here, on the worker's own thread.
 */


#include <sys/eventfd.h>

#include <cjson/cJSON.h>

#include "ngx_http_cio.h"
#include "ngx_http_cio_sender.h"


#define NGX_HTTP_CIO_MAX_WS          256
#define NGX_HTTP_CIO_RECLAIM_EVERY   1000
#define NGX_HTTP_CIO_STOP_TIMEOUT    2000
#define NGX_HTTP_CIO_LOG_ITEM        256


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
    unsigned                     exiting:1;
} ngx_http_cio_deliver_t;


static void ngx_http_cio_deliver_timer(ngx_event_t *ev);
static void ngx_http_cio_deliver_kick_handler(ngx_event_t *ev);
static void ngx_http_cio_deliver_drain(void);
static ngx_int_t ngx_http_cio_deliver_send(ngx_http_cio_shws_t *ws);
static void ngx_http_cio_deliver_notified(ngx_event_t *ev);
static void ngx_http_cio_deliver_results(void);
static void ngx_http_cio_deliver_settle(ngx_http_cio_sreq_t *req);
static ngx_uint_t ngx_http_cio_deliver_refused(ngx_http_cio_sreq_t *req,
    ngx_http_cio_batch_t *batch);
static void ngx_http_cio_deliver_log_item(ngx_uint_t level,
    ngx_http_cio_batch_t *batch, ngx_uint_t i, const char *why);


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

    /* cancelable: a pending flush must not keep an exiting worker alive */

    d->timer.handler = ngx_http_cio_deliver_timer;
    d->timer.log = cycle->log;
    d->timer.data = &ngx_http_cio_dummy;
    d->timer.cancelable = 1;

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

    if (ngx_exiting || d->exiting) {
        return;
    }

    ngx_http_cio_deliver_drain();

    ngx_add_timer(ev, d->mcf->flush_interval);
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

    if (d->exiting || ngx_exiting) {
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

    batch = ngx_http_cio_queue_take(d->zone, ws, mcf->batch_size,
                                    mcf->lease, &body, &len);
    if (batch == NULL) {
        return NGX_DECLINED;
    }

    req = ngx_http_cio_sreq_alloc();

    if (req == NULL
        || (req->url = strdup((char *) ws->url.data)) == NULL
        || (req->userpwd = strdup((char *) ws->userpwd.data)) == NULL)
    {
        ngx_log_error(NGX_LOG_ALERT, d->log, 0, "cio: out of memory");
        ngx_http_cio_sreq_free(req);
        ngx_free(body);
        goto failed;
    }

    req->body = (char *) body;
    req->body_len = len;
    req->timeout_ms = (long) mcf->timeout;
    req->connect_timeout_ms = (long) mcf->connect_timeout;
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


static void
ngx_http_cio_deliver_settle(ngx_http_cio_sreq_t *req)
{
    ngx_uint_t                 level;
    ngx_http_cio_batch_t      *batch;
    ngx_http_cio_shws_t       *ws;
    ngx_http_cio_settle_t      st;
    ngx_http_cio_deliver_t    *d;

    d = &ngx_http_cio_deliver;
    batch = req->data;
    ws = batch->ws;

    d->inflight--;

    ngx_memzero(&st, sizeof(ngx_http_cio_settle_t));
    st.backoff_min = d->mcf->backoff_min;
    st.backoff_max = d->mcf->backoff_max;

    if (req->aborted) {
        st.outcome = NGX_HTTP_CIO_RETURN;

    } else if (req->status >= 200 && req->status < 300) {
        st.outcome = NGX_HTTP_CIO_DONE;

        if (req->status == 207) {
            st.refused = ngx_http_cio_deliver_refused(req, batch);
        }

    } else if (req->status == 0 || req->status == 408 || req->status == 429
               || req->status >= 500
               || req->status == 401 || req->status == 403)
    {
        /* a wrong key must not throw events away: they wait for a fix */
        st.outcome = NGX_HTTP_CIO_RETRY;

        if (req->retry_after > 0) {
            st.retry_after_ms = (uint64_t) req->retry_after * 1000;
        }

    } else {
        /* Customer.io will never take these: retrying cannot help */
        st.outcome = NGX_HTTP_CIO_DONE;
        st.refused = batch->n;

        ngx_log_error(NGX_LOG_ERR, d->log, 0,
                      "cio: Customer.io refused a batch of %ui events for "
                      "site \"%V\" with %l: %s",
                      batch->n, &ws->site_id, req->status,
                      req->resp ? req->resp : "");

        ngx_http_cio_deliver_log_item(NGX_LOG_ERR, batch, 0,
                                      "first refused event");
    }

    ngx_http_cio_queue_settle(d->zone, batch, &st);

    if (st.outcome == NGX_HTTP_CIO_RETRY) {
        level = (req->status == 401 || req->status == 403) ? NGX_LOG_ERR
                                                             : NGX_LOG_WARN;

        if (req->status) {
            ngx_log_error(level, d->log, 0,
                          "cio: sending %ui events for site \"%V\" to "
                          "\"%V\" got %l%s%s, retrying in %uL ms",
                          st.settled, &ws->site_id, &ws->url, req->status,
                          req->resp ? ": " : "", req->resp ? req->resp : "",
                          st.delay);

        } else {
            ngx_log_error(level, d->log, 0,
                          "cio: sending %ui events for site \"%V\" to "
                          "\"%V\" failed: %s, retrying in %uL ms",
                          st.settled, &ws->site_id, &ws->url, req->error,
                          st.delay);
        }
    }

    ngx_http_cio_queue_free_batch(batch);
}


/* a 207 names the refused items by their index in the batch */

static ngx_uint_t
ngx_http_cio_deliver_refused(ngx_http_cio_sreq_t *req,
    ngx_http_cio_batch_t *batch)
{
    int          i, n;
    cJSON       *root, *errors, *e, *idx, *msg, *field;
    ngx_uint_t   refused;
    char         why[256];

    refused = 0;

    root = cJSON_ParseWithLength(req->resp ? req->resp : "", req->resp_len);
    errors = cJSON_GetObjectItemCaseSensitive(root, "errors");

    n = cJSON_GetArraySize(errors);

    for (i = 0; i < n; i++) {
        e = cJSON_GetArrayItem(errors, i);
        idx = cJSON_GetObjectItemCaseSensitive(e, "batch_index");
        msg = cJSON_GetObjectItemCaseSensitive(e, "message");
        field = cJSON_GetObjectItemCaseSensitive(e, "field");

        if (!cJSON_IsNumber(idx) || idx->valuedouble < 0
            || idx->valuedouble >= (double) batch->n)
        {
            continue;
        }

        refused++;

        ngx_snprintf((u_char *) why, sizeof(why) - 1, "refused (%s%s%s)%Z",
                     cJSON_IsString(msg) ? msg->valuestring : "no reason",
                     cJSON_IsString(field) ? ", field " : "",
                     cJSON_IsString(field) ? field->valuestring : "");
        why[sizeof(why) - 1] = '\0';

        ngx_http_cio_deliver_log_item(NGX_LOG_ERR, batch,
                                      (ngx_uint_t) idx->valuedouble, why);
    }

    cJSON_Delete(root);

    return refused;
}


static void
ngx_http_cio_deliver_log_item(ngx_uint_t level, ngx_http_cio_batch_t *batch,
    ngx_uint_t i, const char *why)
{
    size_t                len;
    ngx_http_cio_node_t  *node;

    node = batch->nodes[i];

    /* still ours until settled: nobody else frees or reuses it */
    if (node->id != batch->ids[i] || node->owner != ngx_pid) {
        return;
    }

    len = ngx_min(node->len, NGX_HTTP_CIO_LOG_ITEM);

    ngx_log_error(level, ngx_http_cio_deliver.log, 0,
                  "cio: site \"%V\" event %ui of the batch %s: %*s%s",
                  &batch->ws->site_id, i, why, len, node->data,
                  len < node->len ? "..." : "");
}
