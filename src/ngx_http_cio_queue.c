
/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * The queue in the cio_zone shared memory.  Every function here runs on a
 * worker's (or the master's) event loop thread, never on the sender
 * thread, and holds shpool->mutex only for list and copy work: the master
 * force-unlocks that very mutex when a worker dies holding it.
 *
 * A node is pending (on its workspace's list, oldest first) or in flight
 * (on sh->inflight, owned by a worker until its lease expires).  A worker
 * remembers the ids of the nodes it sent; a node freed or re-leased in
 * the meantime no longer matches and is left alone.
 */


#include "ngx_http_cio.h"


#define NGX_HTTP_CIO_MIN_ITEM  48


static ngx_http_cio_shws_t *ngx_http_cio_queue_find(
    ngx_http_cio_shctx_t *sh, ngx_http_cio_ws_t *ws);
static ngx_int_t ngx_http_cio_queue_copy_str(ngx_slab_pool_t *shpool,
    ngx_str_t *dst, ngx_str_t *src);


uint64_t
ngx_http_cio_now_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


ngx_int_t
ngx_http_cio_queue_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_cio_zone_t  *ozone = data;

    size_t                 len;
    ngx_http_cio_zone_t   *zone;

    zone = shm_zone->data;

    if (ozone) {
        zone->sh = ozone->sh;
        zone->shpool = ozone->shpool;

        if (zone->sh->magic != NGX_HTTP_CIO_SHM_MAGIC) {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "cio_zone \"%V\" was created by an incompatible "
                          "version of the module", &shm_zone->shm.name);
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        return NGX_OK;
    }

    zone->sh = ngx_slab_alloc(zone->shpool, sizeof(ngx_http_cio_shctx_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(zone->sh, sizeof(ngx_http_cio_shctx_t));

    zone->sh->magic = NGX_HTTP_CIO_SHM_MAGIC;
    ngx_queue_init(&zone->sh->workspaces);
    ngx_queue_init(&zone->sh->inflight);

    zone->shpool->data = zone->sh;

    len = sizeof(" in cio_zone \"\"") + shm_zone->shm.name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in cio_zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is answered with 503, not a log line per event */
    zone->shpool->log_nomem = 0;

    return NGX_OK;
}


ngx_int_t
ngx_http_cio_queue_intern(ngx_http_cio_zone_t *zone, ngx_http_cio_ws_t *ws,
    ngx_log_t *log)
{
    ngx_http_cio_shws_t  *shws;

    ngx_shmtx_lock(&zone->shpool->mutex);

    shws = ngx_http_cio_queue_find(zone->sh, ws);

    if (shws == NULL) {
        shws = ngx_slab_calloc_locked(zone->shpool,
                                      sizeof(ngx_http_cio_shws_t));
        if (shws == NULL) {
            goto nomem;
        }

        if (ngx_http_cio_queue_copy_str(zone->shpool, &shws->url, &ws->url)
            != NGX_OK
            || ngx_http_cio_queue_copy_str(zone->shpool, &shws->userpwd,
                                           &ws->userpwd)
               != NGX_OK
            || ngx_http_cio_queue_copy_str(zone->shpool, &shws->site_id,
                                           &ws->site_id)
               != NGX_OK)
        {
            /* the few bytes already taken are not worth unwinding */
            goto nomem;
        }

        ngx_queue_init(&shws->pending);
        ngx_queue_insert_tail(&zone->sh->workspaces, &shws->link);
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ws->sh = shws;

    return NGX_OK;

nomem:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_log_error(NGX_LOG_EMERG, log, 0,
                  "cio: no room for workspace \"%V\"%s",
                  &ws->site_id, zone->shpool->log_ctx);

    return NGX_ERROR;
}


static ngx_http_cio_shws_t *
ngx_http_cio_queue_find(ngx_http_cio_shctx_t *sh, ngx_http_cio_ws_t *ws)
{
    ngx_queue_t          *q;
    ngx_http_cio_shws_t  *shws;

    for (q = ngx_queue_head(&sh->workspaces);
         q != ngx_queue_sentinel(&sh->workspaces);
         q = ngx_queue_next(q))
    {
        shws = ngx_queue_data(q, ngx_http_cio_shws_t, link);

        if (shws->url.len == ws->url.len
            && shws->userpwd.len == ws->userpwd.len
            && ngx_memcmp(shws->url.data, ws->url.data, ws->url.len) == 0
            && ngx_memcmp(shws->userpwd.data, ws->userpwd.data,
                          ws->userpwd.len)
               == 0)
        {
            return shws;
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_cio_queue_copy_str(ngx_slab_pool_t *shpool, ngx_str_t *dst,
    ngx_str_t *src)
{
    /* NUL-terminated: libcurl takes these as C strings */
    dst->data = ngx_slab_alloc_locked(shpool, src->len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src->data, src->len);
    dst->data[src->len] = '\0';
    dst->len = src->len;

    return NGX_OK;
}


/*
 * All or nothing: a request's calls are queued together, or the request
 * is answered 503 and its sender retries it whole.
 */

ngx_int_t
ngx_http_cio_queue_push(ngx_http_cio_zone_t *zone, ngx_http_cio_shws_t *ws,
    ngx_str_t *items, ngx_uint_t n, ngx_uint_t max_events)
{
    size_t                bytes;
    ngx_uint_t            i;
    ngx_queue_t           added, *q;
    ngx_http_cio_node_t  *node;

    if (n == 0) {
        return NGX_OK;
    }

    ngx_queue_init(&added);
    bytes = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (max_events && zone->sh->count + n > max_events) {
        goto full;
    }

    for (i = 0; i < n; i++) {
        node = ngx_slab_alloc_locked(zone->shpool,
                                     offsetof(ngx_http_cio_node_t, data)
                                     + items[i].len);
        if (node == NULL) {
            goto full;
        }

        node->ws = ws;
        node->id = ++zone->sh->next_id;
        node->lease = 0;
        node->owner = 0;
        node->attempts = 0;
        node->len = (uint32_t) items[i].len;
        ngx_memcpy(node->data, items[i].data, items[i].len);

        ngx_queue_insert_tail(&added, &node->link);
        bytes += items[i].len;
    }

    ngx_queue_add(&ws->pending, &added);

    ws->npending += n;
    ws->pending_bytes += bytes;
    ws->accepted += n;
    zone->sh->count += n;
    zone->sh->bytes += bytes;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_OK;

full:

    while (!ngx_queue_empty(&added)) {
        q = ngx_queue_head(&added);
        ngx_queue_remove(q);
        ngx_slab_free_locked(zone->shpool,
                             ngx_queue_data(q, ngx_http_cio_node_t, link));
    }

    zone->sh->rejected_full++;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_BUSY;
}


/*
 * Leases the oldest pending items of a workspace, as many as fit in
 * max_bytes once wrapped in {"batch":[...]}, and copies them into a
 * malloc()ed body for the sender thread.
 */

ngx_http_cio_batch_t *
ngx_http_cio_queue_take(ngx_http_cio_zone_t *zone, ngx_http_cio_shws_t *ws,
    size_t max_bytes, ngx_msec_t lease, u_char **body, size_t *body_len)
{
    size_t                 size, need;
    u_char                *p, *buf;
    uint64_t               now, *ids;
    ngx_uint_t             n, cap;
    ngx_queue_t           *q;
    ngx_http_cio_node_t   *node, **nodes;
    ngx_http_cio_batch_t  *batch;

    /* no item is shorter than that, so the arrays never have to grow */
    cap = max_bytes / NGX_HTTP_CIO_MIN_ITEM + 1;

    batch = ngx_calloc(sizeof(ngx_http_cio_batch_t), ngx_cycle->log);
    buf = ngx_alloc(max_bytes, ngx_cycle->log);
    nodes = ngx_alloc(cap * sizeof(ngx_http_cio_node_t *), ngx_cycle->log);
    ids = ngx_alloc(cap * sizeof(uint64_t), ngx_cycle->log);

    if (batch == NULL || buf == NULL || nodes == NULL || ids == NULL) {
        goto failed;
    }

    now = ngx_http_cio_now_ms();

    p = ngx_cpymem(buf, NGX_HTTP_CIO_BATCH_HEAD,
                   sizeof(NGX_HTTP_CIO_BATCH_HEAD) - 1);
    size = sizeof(NGX_HTTP_CIO_BATCH_HEAD) - 1
           + sizeof(NGX_HTTP_CIO_BATCH_TAIL) - 1;
    n = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    while (!ngx_queue_empty(&ws->pending) && ws->retry_at <= now) {

        q = ngx_queue_head(&ws->pending);
        node = ngx_queue_data(q, ngx_http_cio_node_t, link);

        need = node->len + (n ? 1 : 0);

        if (size + need > max_bytes) {
            break;
        }

        if (n == cap) {
            break;
        }

        ngx_queue_remove(q);
        ngx_queue_insert_tail(&zone->sh->inflight, q);

        node->owner = ngx_pid;
        node->lease = now + lease;

        ws->npending--;
        ws->pending_bytes -= node->len;
        ws->ninflight++;

        if (n) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, node->data, node->len);
        size += need;

        nodes[n] = node;
        ids[n] = node->id;
        n++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (n == 0) {
        goto failed;
    }

    p = ngx_cpymem(p, NGX_HTTP_CIO_BATCH_TAIL,
                   sizeof(NGX_HTTP_CIO_BATCH_TAIL) - 1);

    batch->ws = ws;
    batch->n = n;
    batch->nodes = nodes;
    batch->ids = ids;
    batch->bytes = p - buf;

    *body = buf;
    *body_len = p - buf;

    return batch;

failed:

    ngx_free(batch);
    ngx_free(buf);
    ngx_free(nodes);
    ngx_free(ids);

    return NULL;
}


/*
 * Settles a batch once the sender has an answer.  Nodes whose id changed
 * were reclaimed after a lease expiry and belong to somebody else now.
 */

void
ngx_http_cio_queue_settle(ngx_http_cio_zone_t *zone,
    ngx_http_cio_batch_t *batch, ngx_http_cio_settle_t *st)
{
    uint64_t              now, delay;
    ngx_int_t             i;
    ngx_uint_t            settled, shift;
    ngx_http_cio_shws_t  *ws;
    ngx_http_cio_node_t  *node;

    ws = batch->ws;
    settled = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    /* backwards, so that items go back to the head in their order */

    for (i = (ngx_int_t) batch->n - 1; i >= 0; i--) {
        node = batch->nodes[i];

        if (node->id != batch->ids[i] || node->owner != ngx_pid) {
            continue;
        }

        settled++;

        ngx_queue_remove(&node->link);
        ws->ninflight--;

        if (st->outcome == NGX_HTTP_CIO_DONE) {
            zone->sh->count--;
            zone->sh->bytes -= node->len;
            node->id = 0;
            ngx_slab_free_locked(zone->shpool, node);
            continue;
        }

        if (st->outcome == NGX_HTTP_CIO_RETRY) {
            node->attempts++;
        }

        node->owner = 0;
        node->lease = 0;

        ngx_queue_insert_head(&ws->pending, &node->link);
        ws->npending++;
        ws->pending_bytes += node->len;
    }

    switch (st->outcome) {

    case NGX_HTTP_CIO_DONE:
        ws->failures = 0;
        ws->delivered += settled - ngx_min(settled, st->refused);
        ws->refused += ngx_min(settled, st->refused);
        break;

    case NGX_HTTP_CIO_RETRY:
        ws->retried += settled;
        ws->failures++;

        if (st->retry_after_ms) {
            delay = st->retry_after_ms;

        } else {
            shift = ngx_min(ws->failures - 1, 20);
            delay = (uint64_t) st->backoff_min << shift;

            if (delay > st->backoff_max) {
                delay = st->backoff_max;
            }

            /* full jitter on the upper half: workers do not stampede */
            delay = delay / 2 + (uint64_t) ngx_random() % (delay / 2 + 1);
        }

        now = ngx_http_cio_now_ms();

        if (ws->retry_at < now + delay) {
            ws->retry_at = now + delay;
        }

        st->delay = delay;
        break;

    default: /* NGX_HTTP_CIO_RETURN */
        break;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    st->settled = settled;
}


/*
 * Items whose lease ran out go back to the head of their workspace: their
 * worker died, or never heard back.
 */

ngx_uint_t
ngx_http_cio_queue_reclaim(ngx_http_cio_zone_t *zone)
{
    uint64_t              now;
    ngx_uint_t            n;
    ngx_queue_t          *q, *prev;
    ngx_http_cio_node_t  *node;

    now = ngx_http_cio_now_ms();
    n = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (q = ngx_queue_last(&zone->sh->inflight);
         q != ngx_queue_sentinel(&zone->sh->inflight);
         q = prev)
    {
        prev = ngx_queue_prev(q);
        node = ngx_queue_data(q, ngx_http_cio_node_t, link);

        if (node->lease > now) {
            continue;
        }

        ngx_queue_remove(q);

        node->owner = 0;
        node->lease = 0;
        node->attempts++;

        /* a new id, so that a late answer cannot settle it twice */
        node->id = ++zone->sh->next_id;

        ngx_queue_insert_head(&node->ws->pending, q);
        node->ws->ninflight--;
        node->ws->npending++;
        node->ws->pending_bytes += node->len;
        node->ws->retried++;
        n++;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return n;
}


void
ngx_http_cio_queue_free_batch(ngx_http_cio_batch_t *batch)
{
    ngx_free(batch->nodes);
    ngx_free(batch->ids);
    ngx_free(batch);
}
