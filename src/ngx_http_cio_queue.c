/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * The cio_zone shared memory and everything in it: its creation, reuse
 * and resizing on reload, the queue (push, lease, settle, bury, reclaim),
 * the token bucket each workspace's requests draw from, and every counter
 * cio_status shows.  Nothing else writes the zone (deliver.c only scans
 * it, under the lock, for workspaces with work).  Each operation takes
 * shpool->mutex once, for list and copy work only, and runs on a worker's
 * (or the master's) event loop thread, never on the sender thread: the
 * master force-unlocks that very mutex when a worker dies holding it.
 *
 * An item refused for good goes settle -> dead letter -> bury: settle
 * keeps it leased to this worker, deliver.c writes its dead letter, and
 * only then does bury free it.  A crash in between loses nothing: the
 * lease runs out and the item is sent again (at worst it is written to
 * the dead-letter file twice).
 *
 * A node is pending (on its workspace's list, oldest first) or in flight
 * (on sh->inflight, owned by a worker until its lease expires).  Each
 * lease gives the node a new id, and a worker remembers the ids of the
 * nodes it sent; a node freed or leased again in the meantime no longer
 * matches and is left alone.
 *
 * Nodes are packed back to back, 8-aligned, into runs: 16 KB of whole
 * pages taken from the slab at once (its power-of-two slots would cost
 * a 330-byte node 512 bytes).  A workspace's new nodes go into its open
 * run only, so that a workspace on hold never pins the runs of one that
 * delivers; a run that a node no longer fits in is closed for good, and
 * goes back to the slab when its last node is freed.  A FIFO queue frees
 * mostly in order, so closed runs empty; what pins one is a node that
 * stays long while the rest were delivered: an item retried (at most
 * cio_retry_max times, then dead-lettered), or leased to a worker that
 * hangs (at most cio_lease).  At worst every closed run holds one such
 * node, and the zone holds one node per 16 KB until they settle
 * (docs/scaling.md).
 * When no run can be had, a node takes a slab slot, in the pages the
 * slab has for that size already; a node larger than a run, its own
 * pages.
 */


#include "ngx_http_cio.h"


#define NGX_HTTP_CIO_MIN_ITEM     48
#define NGX_HTTP_CIO_RUN_SIZE     16384
#define NGX_HTTP_CIO_ALERT_EVERY  60000

/*
 * The person table: a bucket for every 512 bytes of the zone (1/128 of
 * it), a power of two; take() passes over at most SKIP_MAX items of
 * people with items in flight before it sends what it has.
 */
#define NGX_HTTP_CIO_PERSONS_MIN  64
#define NGX_HTTP_CIO_PERSONS_MAX  1048576
#define NGX_HTTP_CIO_SKIP_MAX     256

/* a request's first items have their person keys computed unlocked */
#define NGX_HTTP_CIO_PUSH_KEYS    64

/*
 * How many items one slice of a take looks at with the zone locked: a
 * full batch is some 650 items of 750 bytes, each a cache miss of its
 * own, some 120 us in one go, during which the worker answers nobody.
 */
#define NGX_HTTP_CIO_SLICE        64

/*
 * While a worker makes a batch of a workspace's head, the others leave
 * that workspace alone, as they did when a take was one pass under the
 * lock: a backlog that fits one batch goes in one.  Each slice renews
 * the claim; a worker that stops making it (killed, stuck) loses it
 * after so many ms.
 */
#define NGX_HTTP_CIO_MAKING       500

/*
 * A settle asks for the node so many places ahead while it works on one:
 * the nodes of a batch are scattered over the zone, and their cache
 * misses, one after another, are most of its time.
 */
#define NGX_HTTP_CIO_AHEAD        8

#if (defined __GNUC__)
#define ngx_http_cio_prefetch(p)  __builtin_prefetch(p, 1)
#else
#define ngx_http_cio_prefetch(p)
#endif

/* how long the master tries for the old zone's lock on a resize */
#define NGX_HTTP_CIO_MIGRATE_WAIT 200


/* a run of pages that nodes are packed into */
typedef struct {
    uint32_t                     size;       /* bytes, this header included */
    uint32_t                     used;       /* bytes handed out, ditto */
    uint32_t                     live;       /* nodes not freed yet */
    uint32_t                     pad;
} ngx_http_cio_run_t;


#define ngx_http_cio_node_size(len)                                           \
    ngx_align(offsetof(ngx_http_cio_node_t, data) + (len), 8)


/*
 * A worker's spare batch bodies (cio_batch_size bytes each) and batch
 * arrays (some 400 KB): from malloc() each is an mmap(), and its free() a
 * munmap() whose TLB shootdown interrupts the other core too, for every
 * take(), most of them takes that found no token.  Kept, they cost their
 * pages once (measured at Customer.io's rate: the handler that settles a
 * batch and takes the next went from 217 to 164 us on average, its
 * longest from 874 to 630, and page faults left its profile).
 */
#define NGX_HTTP_CIO_SPARES       4

typedef struct {
    void                        *free[NGX_HTTP_CIO_SPARES];
    ngx_uint_t                   n;
    size_t                       size;
} ngx_http_cio_spares_t;


static ngx_http_cio_node_t *ngx_http_cio_queue_node_alloc(
    ngx_http_cio_zone_t *zone, ngx_http_cio_shws_t *ws, size_t len);
static void ngx_http_cio_queue_node_free(ngx_http_cio_zone_t *zone,
    ngx_http_cio_node_t *node);
static ngx_http_cio_run_t *ngx_http_cio_queue_run(ngx_http_cio_zone_t *zone,
    ngx_http_cio_shws_t *ws, size_t size);
static uint32_t ngx_http_cio_queue_id(ngx_http_cio_shctx_t *sh);
static ngx_int_t ngx_http_cio_queue_attach(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_cio_queue_intern(ngx_http_cio_zone_t *zone,
    ngx_http_cio_ws_t *ws, ngx_log_t *log);
static ngx_int_t ngx_http_cio_queue_migrate(ngx_http_cio_zone_t *from,
    ngx_http_cio_zone_t *to, ngx_uint_t *moved, ngx_uint_t *left);
static ngx_http_cio_shws_t *ngx_http_cio_queue_find(
    ngx_http_cio_shctx_t *sh, ngx_str_t *url, ngx_str_t *site_id);
static ngx_int_t ngx_http_cio_queue_token(ngx_http_cio_shws_t *ws,
    ngx_http_cio_main_conf_t *mcf, uint64_t now);
static void ngx_http_cio_queue_untoken(ngx_http_cio_shws_t *ws,
    ngx_http_cio_main_conf_t *mcf);
static uint32_t ngx_http_cio_queue_person(u_char *p, size_t len);
static ngx_inline ngx_uint_t ngx_http_cio_queue_held(
    ngx_http_cio_shctx_t *sh, ngx_http_cio_node_t *node);
static ngx_http_cio_batch_t *ngx_http_cio_queue_new_batch(ngx_uint_t cap);
static ngx_inline void ngx_http_cio_queue_hold(ngx_http_cio_shctx_t *sh,
    ngx_http_cio_node_t *node);
static void ngx_http_cio_queue_slice(ngx_http_cio_zone_t *zone,
    ngx_http_cio_batch_t *batch, ngx_http_cio_main_conf_t *mcf);
static ngx_queue_t *ngx_http_cio_queue_resume(ngx_http_cio_shctx_t *sh,
    ngx_http_cio_batch_t *batch);
static void ngx_http_cio_queue_taken(ngx_http_cio_shctx_t *sh,
    ngx_http_cio_batch_t *batch, ngx_http_cio_main_conf_t *mcf);
static ngx_int_t ngx_http_cio_queue_mine_init(ngx_http_cio_shctx_t *sh);
static void ngx_http_cio_queue_unmark(ngx_http_cio_batch_t *batch);
static void ngx_http_cio_queue_outcome(ngx_http_cio_shws_t *ws,
    ngx_http_cio_settle_t *st, uint64_t now);
static void ngx_http_cio_queue_unhold(ngx_http_cio_shctx_t *sh,
    ngx_http_cio_node_t *node);
static void ngx_http_cio_queue_renew(ngx_http_cio_batch_t *batch,
    uint32_t lease);
static ngx_uint_t ngx_http_cio_queue_leased(ngx_http_cio_batch_t *batch,
    ngx_uint_t lo, ngx_uint_t n);
static void ngx_http_cio_queue_count_unjournaled(void *data,
    ngx_http_cio_node_t *node);
static void *ngx_http_cio_queue_spare(ngx_http_cio_spares_t *sp,
    size_t size);
static void ngx_http_cio_queue_unspare(ngx_http_cio_spares_t *sp,
    void *p);
static void ngx_http_cio_queue_drop_spares(ngx_http_cio_spares_t *sp);
static char *ngx_http_cio_queue_dup(ngx_str_t *s);
static ngx_int_t ngx_http_cio_queue_copy_str(ngx_slab_pool_t *shpool,
    ngx_str_t *dst, ngx_str_t *src);


static ngx_http_cio_spares_t  ngx_http_cio_queue_bodies;
static ngx_http_cio_spares_t  ngx_http_cio_queue_arrays;

/*
 * The person buckets the batch this worker is making holds, a bit each:
 * its own, so that it takes more of their items, where anybody else's
 * hold makes it pass them over.  A worker makes one batch at a time.
 */
static uint64_t              *ngx_http_cio_queue_mine;
static uint32_t               ngx_http_cio_queue_mine_mask;


/* the upper bounds of the latency histogram's buckets, in ms */
ngx_uint_t  ngx_http_cio_latency_bounds[NGX_HTTP_CIO_LAT_N - 1] = {
    25, 50, 100, 250, 500, 1000, 2500, 5000, 10000
};


/*
 * Leases, backoffs, the rate's bucket and the drain's deadline count on
 * the monotonic clock, the same in every process of the machine: a step
 * of the wall clock (NTP, date -s, a VM resumed) would otherwise stop
 * delivery for as long as a step back, or take back every batch on the
 * wire at a step forward.  Only the status page's times are the wall's.
 */

uint64_t
ngx_http_cio_now_ms(void)
{
    struct timespec  ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1) {
        return ngx_http_cio_wall_ms();
    }

    return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


uint64_t
ngx_http_cio_wall_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


/*
 * The zone, new or reused.  The master never waits for the lock of a zone
 * that workers share: it reloads with its signals blocked, so a worker
 * that died holding the lock would never be unlocked (nginx unlocks a dead
 * owner's mutexes when it reaps it) and the master would wait for good.
 * So a zone this cycle created, which no other process maps yet, gets its
 * workspaces here; a reused one gets them from each new worker, in
 * init_process (ngx_http_cio_queue_workspaces).
 */

ngx_int_t
ngx_http_cio_queue_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_cio_zone_t  *zone;

    if (ngx_http_cio_queue_attach(shm_zone, data) != NGX_OK) {
        return NGX_ERROR;
    }

    zone = shm_zone->data;

    if (!zone->fresh) {
        return NGX_OK;
    }

    return ngx_http_cio_queue_workspaces(zone, shm_zone->shm.log);
}


/* each configured workspace into the zone, and its place there into ws */

ngx_int_t
ngx_http_cio_queue_workspaces(ngx_http_cio_zone_t *zone, ngx_log_t *log)
{
    ngx_uint_t            i;
    ngx_http_cio_ws_t   **ws;

    ws = zone->workspaces->elts;

    for (i = 0; i < zone->workspaces->nelts; i++) {
        if (ngx_http_cio_queue_intern(zone, ws[i], log) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_cio_queue_attach(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_cio_zone_t  *ozone = data;

    size_t                 len;
    ngx_uint_t             n;
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

    for (n = NGX_HTTP_CIO_PERSONS_MIN;
         n < NGX_HTTP_CIO_PERSONS_MAX && n * 2 * 512 <= shm_zone->shm.size;
         n *= 2)
    {
        /* void */
    }

    /* one allocation: a small zone has no page to spare for the table */
    len = sizeof(ngx_http_cio_shctx_t) + n * sizeof(uint32_t);

    zone->sh = ngx_slab_calloc(zone->shpool, len);
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    zone->sh->persons = (uint32_t *) (zone->sh + 1);
    zone->sh->persons_mask = (uint32_t) (n - 1);

    zone->sh->magic = NGX_HTTP_CIO_SHM_MAGIC;
    zone->sh->generation = 1;
    zone->fresh = 1;
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


/*
 * A workspace is its endpoint and site id.  A reload that changes only the
 * API key updates the key in place, so that events queued under a wrong
 * key are sent with the corrected one, at once.
 */

static ngx_int_t
ngx_http_cio_queue_intern(ngx_http_cio_zone_t *zone, ngx_http_cio_ws_t *ws,
    ngx_log_t *log)
{
    ngx_str_t             old;
    ngx_uint_t            rekeyed;
    ngx_http_cio_shws_t  *shws;

    rekeyed = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    shws = ngx_http_cio_queue_find(zone->sh, &ws->url, &ws->site_id);

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

    } else if (shws->userpwd.len != ws->userpwd.len
               || ngx_memcmp(shws->userpwd.data, ws->userpwd.data,
                             ws->userpwd.len)
                  != 0)
    {
        old = shws->userpwd;

        if (ngx_http_cio_queue_copy_str(zone->shpool, &shws->userpwd,
                                        &ws->userpwd)
            != NGX_OK)
        {
            shws->userpwd = old;
            goto nomem;
        }

        /* workers copy the key under the lock only: nobody holds it */
        ngx_slab_free_locked(zone->shpool, old.data);

        shws->retry_at = 0;
        shws->failures = 0;
        shws->alert_at = 0;
        rekeyed = shws->npending + shws->ninflight;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (rekeyed) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "cio: the API key of site \"%V\" changed, its %ui "
                      "queued events are sent with the new one",
                      &ws->site_id, rekeyed);
    }

    ws->sh = shws;

    return NGX_OK;

nomem:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    ngx_log_error(NGX_LOG_EMERG, log, 0,
                  "cio: no room for workspace \"%V\"%s",
                  &ws->site_id, zone->shpool->log_ctx);

    return NGX_ERROR;
}


ngx_http_cio_shws_t *
ngx_http_cio_queue_lookup(ngx_http_cio_zone_t *zone, ngx_str_t *url,
    ngx_str_t *site_id)
{
    ngx_http_cio_shws_t  *shws;

    ngx_shmtx_lock(&zone->shpool->mutex);
    shws = ngx_http_cio_queue_find(zone->sh, url, site_id);
    ngx_shmtx_unlock(&zone->shpool->mutex);

    return shws;
}


static ngx_http_cio_shws_t *
ngx_http_cio_queue_find(ngx_http_cio_shctx_t *sh, ngx_str_t *url,
    ngx_str_t *site_id)
{
    ngx_queue_t          *q;
    ngx_http_cio_shws_t  *shws;

    for (q = ngx_queue_head(&sh->workspaces);
         q != ngx_queue_sentinel(&sh->workspaces);
         q = ngx_queue_next(q))
    {
        shws = ngx_queue_data(q, ngx_http_cio_shws_t, link);

        if (shws->url.len == url->len
            && shws->site_id.len == site_id->len
            && ngx_memcmp(shws->url.data, url->data, url->len) == 0
            && ngx_memcmp(shws->site_id.data, site_id->data, site_id->len)
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
 * A node of workspace ws for an item of len bytes, with the lock held;
 * its ws and run fields set, the rest the caller's.  NULL: the zone is
 * full.
 */

static ngx_http_cio_node_t *
ngx_http_cio_queue_node_alloc(ngx_http_cio_zone_t *zone,
    ngx_http_cio_shws_t *ws, size_t len)
{
    size_t                size;
    ngx_http_cio_run_t   *run;
    ngx_http_cio_node_t  *node;

    size = ngx_http_cio_node_size(len);
    run = ws->run;

    if (size > NGX_HTTP_CIO_RUN_SIZE - sizeof(ngx_http_cio_run_t)) {
        goto slab;
    }

    if (run == NULL || run->used + size > run->size) {
        run = ngx_http_cio_queue_run(zone, ws, size);
        if (run == NULL) {
            goto slab;
        }
    }

    node = (ngx_http_cio_node_t *) ((u_char *) run + run->used);
    node->ws = ws;
    node->run = (uint16_t) (run->used / 8);
    run->used += size;
    run->live++;

    return node;

slab:

    node = ngx_slab_alloc_locked(zone->shpool,
                                 offsetof(ngx_http_cio_node_t, data) + len);
    if (node) {
        node->ws = ws;
        node->run = 0;
    }

    return node;
}


/*
 * A new open run that a node of size bytes fits in: a whole run, or, in a
 * zone too full or too cut up for one, a page.  The run open so far is
 * closed by it, and freed by its last node.
 */

static ngx_http_cio_run_t *
ngx_http_cio_queue_run(ngx_http_cio_zone_t *zone, ngx_http_cio_shws_t *ws,
    size_t size)
{
    size_t               len;
    ngx_http_cio_run_t  *run;

    len = NGX_HTTP_CIO_RUN_SIZE;
    run = ngx_slab_alloc_locked(zone->shpool, len);

    if (run == NULL && size + sizeof(ngx_http_cio_run_t) <= ngx_pagesize) {
        len = ngx_pagesize;
        run = ngx_slab_alloc_locked(zone->shpool, len);
    }

    if (run == NULL) {
        /* the open run stays open: a smaller node may fit in it yet */
        return NULL;
    }

    run->size = (uint32_t) len;
    run->used = sizeof(ngx_http_cio_run_t);
    run->live = 0;
    run->pad = 0;

    ws->run = run;

    return run;
}


/*
 * Every node freed goes through here, with the lock held.  A run goes
 * back to the slab with its last node, open or closed: an idle workspace
 * keeps none.
 */

static void
ngx_http_cio_queue_node_free(ngx_http_cio_zone_t *zone,
    ngx_http_cio_node_t *node)
{
    ngx_http_cio_run_t  *run;

    node->id = 0;

    if (node->run == 0) {
        ngx_slab_free_locked(zone->shpool, node);
        return;
    }

    run = (ngx_http_cio_run_t *) ((u_char *) node - (size_t) node->run * 8);

    if (--run->live) {
        return;
    }

    if (run == node->ws->run) {
        node->ws->run = NULL;
    }

    ngx_slab_free_locked(zone->shpool, run);
}


/* a node's id: never 0, which marks a freed one */

static uint32_t
ngx_http_cio_queue_id(ngx_http_cio_shctx_t *sh)
{
    uint32_t  id;

    do {
        id = (uint32_t) ++sh->next_id;
    } while (id == 0);

    return id;
}


/*
 * The least of the zone an item of len bytes takes when queued: its node,
 * packed into a run, or the slab's pages for a node larger than a run.
 */

size_t
ngx_http_cio_queue_cost(size_t len)
{
    size_t  size;

    size = ngx_http_cio_node_size(len);

    if (size > NGX_HTTP_CIO_RUN_SIZE - sizeof(ngx_http_cio_run_t)) {
        return ngx_align(offsetof(ngx_http_cio_node_t, data) + len,
                         ngx_pagesize);
    }

    return size;
}


/*
 * All or nothing: a request's calls are queued together, or the request
 * is answered 503 (counted as a full-queue refusal) and its sender
 * retries it whole.  The calls a filter dropped and those the mapper
 * refused are counted under the same lock, so a request takes it once.
 *
 * Each node goes onto the workspace's list, counted, as soon as it is
 * allocated, and a failure takes them off again: a worker killed in the
 * middle leaves what it pushed so far in the queue, to be delivered,
 * rather than on a list of its own that nobody would ever free.
 */

ngx_int_t
ngx_http_cio_queue_push(ngx_http_cio_zone_t *zone, ngx_http_cio_shws_t *ws,
    ngx_str_t *items, ngx_uint_t n, ngx_uint_t filtered, ngx_uint_t refused,
    uint64_t *jrefs)
{
    uint32_t              keys[NGX_HTTP_CIO_PUSH_KEYS];
    ngx_uint_t            i;
    ngx_queue_t          *q;
    ngx_http_cio_node_t  *node;

    if (n == 0 && filtered == 0 && refused == 0) {
        return NGX_OK;
    }

    /* the persons before the lock, which other workers wait for */
    for (i = 0; i < n && i < NGX_HTTP_CIO_PUSH_KEYS; i++) {
        keys[i] = ngx_http_cio_queue_person(items[i].data, items[i].len);
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (i = 0; i < n; i++) {
        node = ngx_http_cio_queue_node_alloc(zone, ws, items[i].len);
        if (node == NULL) {
            goto full;
        }

        node->id = ngx_http_cio_queue_id(zone->sh);
        node->jref = jrefs ? jrefs[i] : 0;
        node->lease = 0;
        node->person = (i < NGX_HTTP_CIO_PUSH_KEYS)
                       ? keys[i]
                       : ngx_http_cio_queue_person(items[i].data,
                                                   items[i].len);
        node->attempts = 0;
        node->len = (uint32_t) items[i].len;
        ngx_memcpy(node->data, items[i].data, items[i].len);

        ngx_queue_insert_tail(&ws->pending, &node->link);
        ws->npending++;
        ws->pending_bytes += node->len;
        zone->sh->count++;
    }

    ws->accepted += n;
    ws->stats.filtered += filtered;
    ws->stats.invalid += refused;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_OK;

full:

    /* the i nodes of this request are the tail of the list */

    while (i--) {
        q = ngx_queue_last(&ws->pending);
        node = ngx_queue_data(q, ngx_http_cio_node_t, link);

        ngx_queue_remove(q);
        ws->npending--;
        ws->pending_bytes -= node->len;
        zone->sh->count--;

        ngx_http_cio_queue_node_free(zone, node);
    }

    ws->stats.rejected[NGX_HTTP_CIO_REJ_FULL]++;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_BUSY;
}


/*
 * Leases the oldest pending items of a workspace, as many as fit in
 * cio_batch_size once wrapped in {"batch":[...]}, and lays them out in a
 * malloc()ed body, which the sender thread fills (ngx_http_cio_queue_fill)
 * before it sends it.  A request costs a token of the
 * workspace's bucket, which all workers share: when it is empty the items
 * wait, and the next batch carries more of them.
 *
 * The items of one person never overtake each other: an item whose
 * person has items in flight (in another batch, whoever sent it) is
 * passed over, left in place with that person's later items behind it,
 * and the batch goes on with other people's items.  The items a batch
 * takes of one person are in their order, which Customer.io keeps.  A
 * batch that comes back for a retry goes to the head of the list, before
 * the items that waited for it.  After SKIP_MAX items passed over the
 * batch goes with what it has: the scan is bounded, and the others wait
 * for the next batch.
 *
 * The batch is made in slices of SLICE items, each under the lock: this
 * call makes the first, and while batch->taking is set the caller asks
 * for the others (ngx_http_cio_queue_take_more), one a turn of its event
 * loop, so that the requests the worker serves meanwhile wait for one
 * slice at most.  NULL: nothing to send.
 */

ngx_http_cio_batch_t *
ngx_http_cio_queue_take(ngx_http_cio_zone_t *zone, ngx_http_cio_shws_t *ws,
    ngx_http_cio_main_conf_t *mcf)
{
    size_t                 max_bytes;
    uint64_t               now;
    ngx_uint_t             cap;
    ngx_http_cio_batch_t  *batch;

    if (ws->stuck == zone->sh->unholds + 1) {
        /* a hint, read without the lock: nothing moved since (below) */
        return NULL;
    }

    max_bytes = mcf->batch_size;

    /* no item is shorter than that, so the arrays never have to grow */
    cap = max_bytes / NGX_HTTP_CIO_MIN_ITEM + 1;

    batch = ngx_http_cio_queue_new_batch(cap);
    if (batch == NULL) {
        return NULL;
    }

    batch->body = ngx_http_cio_queue_spare(&ngx_http_cio_queue_bodies,
                                           max_bytes);

    if (batch->body == NULL
        || ngx_http_cio_queue_mine_init(zone->sh) != NGX_OK)
    {
        goto failed;
    }

    batch->ws = ws;
    batch->cap = cap;
    batch->size = sizeof(NGX_HTTP_CIO_BATCH_HEAD) - 1
                  + sizeof(NGX_HTTP_CIO_BATCH_TAIL) - 1;

    now = ngx_http_cio_now_ms();

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (ngx_queue_empty(&ws->pending) || ws->retry_at > now
        || ws->making > now)
    {
        goto unlock;
    }

    if (ngx_http_cio_queue_token(ws, mcf, now) != NGX_OK) {
        goto unlock;
    }

    batch->url = ngx_http_cio_queue_dup(&ws->url);
    batch->userpwd = ngx_http_cio_queue_dup(&ws->userpwd);

    if (batch->url == NULL || batch->userpwd == NULL) {
        ngx_http_cio_queue_untoken(ws, mcf);
        goto unlock;
    }

    /*
     * One lease for all its items, as when a batch was made in one pass:
     * a lease that runs out takes the whole batch back, in its order,
     * not the items of its first slices before those of its last.
     */
    batch->lease = (uint32_t) (now + mcf->lease);
    batch->taking = 1;
    batch->unholds = zone->sh->unholds;

    ngx_http_cio_queue_slice(zone, batch, mcf);

unlock:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (batch->n || batch->taking) {
        return batch;
    }

failed:

    ngx_http_cio_queue_free_batch(batch);

    return NULL;
}


/*
 * The next slice of a batch take() began: NGX_AGAIN while there may be
 * more, NGX_OK once it is made, NGX_DECLINED when it took nothing at all
 * (the batch is freed then).
 */

ngx_int_t
ngx_http_cio_queue_take_more(ngx_http_cio_zone_t *zone,
    ngx_http_cio_batch_t *batch, ngx_http_cio_main_conf_t *mcf)
{
    ngx_shmtx_lock(&zone->shpool->mutex);

    ngx_http_cio_queue_slice(zone, batch, mcf);

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (batch->taking) {
        return NGX_AGAIN;
    }

    if (batch->n == 0) {
        ngx_http_cio_queue_free_batch(batch);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* one slice of a take, the zone locked */

static void
ngx_http_cio_queue_slice(ngx_http_cio_zone_t *zone,
    ngx_http_cio_batch_t *batch, ngx_http_cio_main_conf_t *mcf)
{
    size_t                 need;
    uint64_t               now;
    ngx_uint_t             n, looked;
    ngx_queue_t           *q, *next;
    ngx_http_cio_shws_t   *ws;
    ngx_http_cio_node_t   *node;

    ws = batch->ws;
    n = batch->n;
    now = ngx_http_cio_now_ms();

    /* a batch that took longer to make than its lease goes as it is */
    q = ((int32_t) (batch->lease - (uint32_t) now) > 0)
        ? ngx_http_cio_queue_resume(zone->sh, batch)
        : ngx_queue_sentinel(&ws->pending);

    for (looked = 0;
         q != ngx_queue_sentinel(&ws->pending)
         && batch->skipped < NGX_HTTP_CIO_SKIP_MAX;
         q = next, looked++)
    {
        next = ngx_queue_next(q);
        node = ngx_queue_data(q, ngx_http_cio_node_t, link);

        if (looked == NGX_HTTP_CIO_SLICE) {
            /* the rest on the next turn, from here if nothing moved */
            batch->next = node;
            batch->next_id = node->id;
            batch->n = n;
            batch->unholds = zone->sh->unholds;
            ws->making = now + NGX_HTTP_CIO_MAKING;
            return;
        }

        if (ngx_http_cio_queue_held(zone->sh, node)) {
            /* its person's later items stay behind it: held too */
            batch->skipped++;
            continue;
        }

        need = node->len + (n ? 1 : 0);

        if (batch->size + need > mcf->batch_size || n == batch->cap) {
            break;
        }

        ngx_queue_remove(q);
        ngx_queue_insert_tail(&zone->sh->inflight, q);

        /* a lease of its own: a batch settles only what it leased */
        node->id = ngx_http_cio_queue_id(zone->sh);
        node->lease = batch->lease;
        ngx_http_cio_queue_hold(zone->sh, node);

        ws->npending--;
        ws->pending_bytes -= node->len;
        ws->ninflight++;

        /* where ngx_http_cio_queue_fill will copy it, after a comma */
        batch->offs[n] = batch->size - (sizeof(NGX_HTTP_CIO_BATCH_TAIL) - 1)
                         + (n ? 1 : 0);
        batch->lens[n] = node->len;
        batch->size += need;

        batch->nodes[n] = node;
        batch->ids[n] = node->id;
        batch->jrefs[n] = node->jref;
        batch->persons[n] = node->person;
        n++;
    }

    batch->n = n;

    ngx_http_cio_queue_taken(zone->sh, batch, mcf);
}


/*
 * Where a slice begins: where the last one stopped, unless an item left
 * flight since, or the item there is not pending any more (another
 * worker took it): then from the head again.  An item that left flight
 * anywhere in the zone may have gone back to the head of this list,
 * before its person's later items, or freed a person whose earlier items
 * this batch passed over, behind the cursor, with her later ones ahead
 * of it.  The items passed over are passed over again, and counted
 * again: the batch's scan stays bounded.
 */

static ngx_queue_t *
ngx_http_cio_queue_resume(ngx_http_cio_shctx_t *sh,
    ngx_http_cio_batch_t *batch)
{
    ngx_http_cio_node_t  *node;

    node = batch->next;

    if (node == NULL) {
        return ngx_queue_head(&batch->ws->pending);
    }

    if (sh->unholds != batch->unholds) {
        batch->moved = 1;
        return ngx_queue_head(&batch->ws->pending);
    }

    if (node->id != batch->next_id || node->lease != 0
        || node->ws != batch->ws)
    {
        return ngx_queue_head(&batch->ws->pending);
    }

    return &node->link;
}


/*
 * A piece of a split batch (ngx_http_cio_deliver_pieces), items lo to
 * lo + n - 1, is a request to Customer.io like any batch: it costs a
 * token of the workspace's bucket (NGX_AGAIN: none yet, the piece waits
 * for the next round), and none goes while the workspace waits out a 429,
 * a backoff or a wrong key, or once the lease of one of its items expired
 * while it waited (another worker may have sent it): NGX_DECLINED, the
 * split gives its items back to the queue.
 */

ngx_int_t
ngx_http_cio_queue_may_send(ngx_http_cio_zone_t *zone,
    ngx_http_cio_batch_t *batch, ngx_uint_t lo, ngx_uint_t n,
    ngx_http_cio_main_conf_t *mcf)
{
    uint64_t              now;
    ngx_int_t             rc;
    ngx_http_cio_shws_t  *ws;

    ws = batch->ws;
    now = ngx_http_cio_now_ms();

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (!ngx_http_cio_queue_leased(batch, lo, n) || ws->retry_at > now) {
        rc = NGX_DECLINED;

    } else if (ngx_http_cio_queue_token(ws, mcf, now) != NGX_OK) {
        rc = NGX_AGAIN;

    } else {
        rc = NGX_OK;
    }

    if (rc != NGX_DECLINED) {
        ngx_http_cio_queue_renew(batch, (uint32_t) (now + mcf->lease));
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return rc;
}


/*
 * A split goes on for as long as its pieces take, one after the other:
 * each piece cleared to go, or waiting for a token, renews the lease of
 * every item the batch still holds.  Otherwise a split that outlives
 * cio_lease has its items taken back, delivered ones and the one at fault
 * with them, and the batch is taken, refused and split again, for ever.
 */

static void
ngx_http_cio_queue_renew(ngx_http_cio_batch_t *batch, uint32_t lease)
{
    ngx_uint_t            i;
    ngx_http_cio_node_t  *node;

    for (i = 0; i < batch->n; i++) {
        node = batch->nodes[i];

        if (node->id == batch->ids[i] && node->lease != 0) {
            node->lease = lease;
        }
    }
}


/*
 * Runs in the sender thread (ngx_http_cio_sreq_t.fill), and calls nothing
 * of nginx: the items are copied from the zone's nodes, which stay where
 * they are while the batch holds their lease, so that neither the zone's
 * lock nor the worker's event loop waits for the half megabyte.  A node
 * whose lease expired and that another worker took back, sent and freed
 * meanwhile has another id: then what was copied cannot be trusted, and
 * -1 has the batch go back unsent.
 */

int
ngx_http_cio_queue_fill(void *data, char *body)
{
    u_char                *p;
    ngx_uint_t             i;
    ngx_http_cio_batch_t  *batch;

    batch = data;

    p = ngx_cpymem((u_char *) body, NGX_HTTP_CIO_BATCH_HEAD,
                   sizeof(NGX_HTTP_CIO_BATCH_HEAD) - 1);

    for (i = 0; i < batch->n; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, batch->nodes[i]->data, batch->lens[i]);
    }

    ngx_memcpy(p, NGX_HTTP_CIO_BATCH_TAIL,
               sizeof(NGX_HTTP_CIO_BATCH_TAIL) - 1);

    /* the ids are read after the copies, not before */
    ngx_memory_barrier();

    return ngx_http_cio_queue_leased(batch, 0, batch->n) ? 0 : -1;
}


/*
 * Whether items lo to lo + n - 1 of a batch are still its own: a node
 * taken back after its lease expired, and sent and freed by another
 * worker, has another id.  Read with the zone's lock or, from the sender
 * thread, without it: an id is one aligned word.
 */

static ngx_uint_t
ngx_http_cio_queue_leased(ngx_http_cio_batch_t *batch, ngx_uint_t lo,
    ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = lo; i < lo + n; i++) {
        if (*(volatile uint32_t *) &batch->nodes[i]->id != batch->ids[i]) {
            return 0;
        }
    }

    return 1;
}


/* a batch with room for cap items in its arrays, one allocation */

static ngx_http_cio_batch_t *
ngx_http_cio_queue_new_batch(ngx_uint_t cap)
{
    u_char                *mem;
    ngx_http_cio_batch_t  *batch;

    batch = ngx_calloc(sizeof(ngx_http_cio_batch_t), ngx_cycle->log);
    if (batch == NULL) {
        return NULL;
    }

    mem = ngx_http_cio_queue_spare(&ngx_http_cio_queue_arrays,
                                   cap * (sizeof(ngx_http_cio_node_t *)
                                          + 2 * sizeof(uint64_t)
                                          + sizeof(size_t)
                                          + 3 * sizeof(uint32_t) + 1));
    if (mem == NULL) {
        ngx_free(batch);
        return NULL;
    }

    /* largest alignment first */
    batch->nodes = (ngx_http_cio_node_t **) mem;
    batch->ids = (uint64_t *) (batch->nodes + cap);
    batch->jrefs = batch->ids + cap;
    batch->offs = (size_t *) (batch->jrefs + cap);
    batch->lens = (uint32_t *) (batch->offs + cap);
    batch->attempts = batch->lens + cap;
    batch->persons = batch->attempts + cap;
    batch->acts = (u_char *) (batch->persons + cap);

    return batch;
}


/*
 * The person table counts the items in flight of each bucket (a person's
 * key modulo the table's size): two people in one bucket are ordered as
 * one, stricter, never looser.  A bucket the batch being made holds is
 * "mine" (ngx_http_cio_queue_mine), so that the batch takes more items of
 * the same person but not those of a person somebody else holds.  The
 * marks are the worker's own memory: a worker killed while it makes a
 * batch leaves none in the zone.
 */

static ngx_inline ngx_uint_t
ngx_http_cio_queue_held(ngx_http_cio_shctx_t *sh, ngx_http_cio_node_t *node)
{
    uint32_t  b;

    if (node->person == 0) {
        return 0;
    }

    b = node->person & sh->persons_mask;

    return sh->persons[b] != 0
           && !(ngx_http_cio_queue_mine[b >> 6] & ((uint64_t) 1 << (b & 63)));
}


static ngx_inline void
ngx_http_cio_queue_hold(ngx_http_cio_shctx_t *sh, ngx_http_cio_node_t *node)
{
    uint32_t  b;

    if (node->person) {
        b = node->person & sh->persons_mask;
        sh->persons[b]++;
        ngx_http_cio_queue_mine[b >> 6] |= (uint64_t) 1 << (b & 63);
    }
}


/* the marks, for the zone's table, all clear */

static ngx_int_t
ngx_http_cio_queue_mine_init(ngx_http_cio_shctx_t *sh)
{
    size_t  size;

    if (ngx_http_cio_queue_mine
        && ngx_http_cio_queue_mine_mask == sh->persons_mask)
    {
        return NGX_OK;
    }

    ngx_free(ngx_http_cio_queue_mine);

    size = ((size_t) sh->persons_mask / 64 + 1) * sizeof(uint64_t);

    ngx_http_cio_queue_mine = ngx_calloc(size, ngx_cycle->log);
    if (ngx_http_cio_queue_mine == NULL) {
        return NGX_ERROR;
    }

    ngx_http_cio_queue_mine_mask = sh->persons_mask;

    return NGX_OK;
}


/*
 * The batch is made: its marks are cleared.  When it found nothing but
 * SKIP_MAX held items, and no item left flight while it looked, so will
 * every take until one does (sh->unholds): until then nothing changes at
 * the head of the list, pushes go to its tail, and take() returns at
 * once, without the lock.
 */

static void
ngx_http_cio_queue_taken(ngx_http_cio_shctx_t *sh,
    ngx_http_cio_batch_t *batch, ngx_http_cio_main_conf_t *mcf)
{
    ngx_http_cio_queue_unmark(batch);

    batch->ws->making = 0;
    batch->ws->stuck = (batch->n == 0
                        && batch->skipped == NGX_HTTP_CIO_SKIP_MAX
                        && !batch->moved)
                       ? sh->unholds + 1 : 0;

    if (batch->n == 0) {
        ngx_http_cio_queue_untoken(batch->ws, mcf);
    }
}


/* the batch is made, or given up unmade: its marks go */

static void
ngx_http_cio_queue_unmark(ngx_http_cio_batch_t *batch)
{
    uint32_t    b;
    ngx_uint_t  i;

    if (!batch->taking) {
        return;
    }

    for (i = 0; i < batch->n; i++) {
        if (batch->persons[i]) {
            b = batch->persons[i] & ngx_http_cio_queue_mine_mask;
            ngx_http_cio_queue_mine[b >> 6] &= ~((uint64_t) 1 << (b & 63));
        }
    }

    batch->taking = 0;
    batch->next = NULL;
}


/* a node leaves flight: settled, buried, reclaimed, given back */

static void
ngx_http_cio_queue_unhold(ngx_http_cio_shctx_t *sh, ngx_http_cio_node_t *node)
{
    uint32_t  *c;

    /* even unordered: it may go back to the head, where take() looks */
    sh->unholds++;

    if (node->person) {
        c = &sh->persons[node->person & sh->persons_mask];

        if (*c) {
            (*c)--;
        }
    }
}


/*
 * The person an item is about, as a key of 32 bits: a hash (FNV-1a) of
 * its top-level "identifiers", or a merge's "primary", with the quotes
 * left out, so that an id sent as 42 and as "42" is one person.  0: none,
 * the item is not ordered.  The items are the mapper's compact JSON.
 */

static uint32_t
ngx_http_cio_queue_person(u_char *p, size_t len)
{
    u_char      c, *last;
    uint32_t    h;
    ngx_uint_t  depth, str;

    last = p + len;
    depth = 0;
    str = 0;

    for ( /* void */ ; p < last; p++) {
        c = *p;

        if (str) {
            if (c == '\\') {
                p++;

            } else if (c == '"') {
                str = 0;
            }

            continue;
        }

        if (c == '{' || c == '[') {
            depth++;
            continue;
        }

        if (c == '}' || c == ']') {
            if (--depth == 0) {
                return 0;
            }

            continue;
        }

        if (c != '"') {
            continue;
        }

        str = 1;

        if (depth != 1 || (p[-1] != '{' && p[-1] != ',')) {
            continue;
        }

        /* a key of the item itself */

        if ((size_t) (last - p) > sizeof("\"identifiers\":") - 1
            && ngx_strncmp(p, "\"identifiers\":",
                           sizeof("\"identifiers\":") - 1) == 0)
        {
            p += sizeof("\"identifiers\":") - 1;
            goto found;
        }

        if ((size_t) (last - p) > sizeof("\"primary\":") - 1
            && ngx_strncmp(p, "\"primary\":", sizeof("\"primary\":") - 1)
               == 0)
        {
            p += sizeof("\"primary\":") - 1;
            goto found;
        }
    }

    return 0;

found:

    if (*p != '{') {
        return 0;
    }

    h = 2166136261u;
    depth = 0;
    str = 0;

    for ( /* void */ ; p < last; p++) {
        c = *p;

        if (c == '"') {
            str = !str;
            continue;
        }

        h = (h ^ c) * 16777619u;

        if (str) {
            if (c == '\\' && p + 1 < last) {
                p++;
                h = (h ^ *p) * 16777619u;
            }

            continue;
        }

        if (c == '{') {
            depth++;

        } else if (c == '}' && --depth == 0) {
            return h ? h : 1;
        }
    }

    return 0;
}


/*
 * The workspace's token bucket, which all workers share: a request costs
 * a token, in millionths so that no rounding is lost per refill.  Called
 * with the lock held.  NGX_DECLINED: none left, the items wait.  Without
 * cio_rate there is always one.
 */

static ngx_int_t
ngx_http_cio_queue_token(ngx_http_cio_shws_t *ws,
    ngx_http_cio_main_conf_t *mcf, uint64_t now)
{
    uint64_t  tokens, burst;

    if (mcf->rate == 0) {
        return NGX_OK;
    }

    burst = (uint64_t) mcf->burst * 1000000;

    if (ws->rate_at == 0) {
        ws->rate_at = now;
        ws->rate_tokens = burst;

    } else if (now > ws->rate_at) {
        /* a long idle time fills the bucket, and must not overflow */
        if (now - ws->rate_at > burst / mcf->rate) {
            ws->rate_tokens = burst;

        } else {
            ws->rate_tokens += (now - ws->rate_at) * mcf->rate;
        }

        ws->rate_at = now;
    }

    /*
     * else another worker's cached time is ahead of ours: no refill,
     * or workers a few milliseconds apart would refill it over again
     */

    tokens = ngx_min(ws->rate_tokens, burst);

    if (tokens < 1000000) {
        ws->rate_tokens = tokens;
        return NGX_DECLINED;
    }

    ws->rate_tokens = tokens - 1000000;

    return NGX_OK;
}


/* a token taken for a request that does not go: it is not spent */

static void
ngx_http_cio_queue_untoken(ngx_http_cio_shws_t *ws,
    ngx_http_cio_main_conf_t *mcf)
{
    if (mcf->rate) {
        ws->rate_tokens += 1000000;
    }
}


static char *
ngx_http_cio_queue_dup(ngx_str_t *s)
{
    char  *p;

    /* plain malloc(): the batch outlives nothing but this worker */
    p = malloc(s->len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, s->data, s->len);
    p[s->len] = '\0';

    return p;
}


/*
 * Settles a batch once the sender has an answer, item by item as
 * batch->acts[] says.  Nodes whose id changed were reclaimed after a
 * lease expiry and belong to somebody else now.  An item that has failed
 * more than cio_retry_max times becomes dead: it stays leased to this
 * worker until its dead letter is written, so that a crash in between
 * sends it again rather than loses it.
 *
 * With slice set, for a batch whose items were all delivered, it frees
 * NGX_HTTP_CIO_SLICE items at most, from where the last call stopped, and
 * returns how many are left: the caller goes on in later turns of the
 * event loop.  Each item holds its person until its own slice frees it:
 * a worker that dies between two slices leaves the rest leased, and their
 * reclaim lets go of exactly those (a batch that let go of every person
 * at once would have them let go twice, and another batch's person, in
 * the same slot, overtaken).  A node reclaimed meanwhile has a new id and
 * is left alone.  The outcome (the workspace's failures, its backoff) is
 * the first call's.
 */

ngx_uint_t
ngx_http_cio_queue_settle(ngx_http_cio_zone_t *zone,
    ngx_http_cio_batch_t *batch, ngx_http_cio_settle_t *st, ngx_uint_t slice)
{
    u_char                act;
    uint64_t              now;
    ngx_int_t             i, lo, hi;
    ngx_uint_t            done;
    ngx_http_cio_shws_t  *ws;
    ngx_http_cio_node_t  *node;

    ws = batch->ws;
    now = ngx_http_cio_now_ms();
    done = st->done;

    hi = (ngx_int_t) (batch->n - batch->settled);
    lo = (slice && hi > NGX_HTTP_CIO_SLICE) ? hi - NGX_HTTP_CIO_SLICE : 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    /* backwards, so that items go back to the head in their order */

    for (i = hi - 1; i >= lo; i--) {
        if (i - lo >= NGX_HTTP_CIO_AHEAD) {
            ngx_http_cio_prefetch(batch->nodes[i - NGX_HTTP_CIO_AHEAD]);
        }

        node = batch->nodes[i];

        if (node->id != batch->ids[i]) {
            batch->acts[i] = NGX_HTTP_CIO_ACT_GONE;
            continue;
        }

        st->settled++;

        act = batch->acts[i];

        if (act == NGX_HTTP_CIO_ACT_DEAD) {
            /* refused by Customer.io, not worn out by retries */
            ws->refused++;
        }

        if (act == NGX_HTTP_CIO_ACT_RETRY) {
            if (node->attempts < 0xffff) {
                node->attempts++;
            }

            if (node->attempts > st->retry_max) {
                act = NGX_HTTP_CIO_ACT_DEAD;
            }
        }

        batch->attempts[i] = node->attempts;
        batch->acts[i] = act;

        switch (act) {

        case NGX_HTTP_CIO_ACT_DONE:
            ngx_http_cio_queue_unhold(zone->sh, node);
            ngx_queue_remove(&node->link);
            ws->ninflight--;
            zone->sh->count--;
            ngx_http_cio_queue_node_free(zone, node);
            st->done++;
            break;

        case NGX_HTTP_CIO_ACT_DEAD:
            st->dead++;
            break;

        default: /* NGX_HTTP_CIO_ACT_RETRY, NGX_HTTP_CIO_ACT_RETURN */
            ngx_http_cio_queue_unhold(zone->sh, node);
            ngx_queue_remove(&node->link);
            ws->ninflight--;

            node->lease = 0;

            ngx_queue_insert_head(&ws->pending, &node->link);
            ws->npending++;
            ws->pending_bytes += node->len;
            st->requeued++;
        }
    }

    ws->delivered += st->done - done;

    if (batch->settled == 0) {
        ngx_http_cio_queue_outcome(ws, st, now);
    }

    st->pending = ws->npending + ws->ninflight;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    /* what this call freed (DONE now) is settled in cio_journal too */
    ngx_http_cio_journal_settled(batch->jrefs + lo, batch->acts + lo,
                                 (ngx_uint_t) (hi - lo),
                                 NGX_HTTP_CIO_ACT_DONE);

    batch->settled = batch->n - (ngx_uint_t) lo;

    return (ngx_uint_t) lo;
}


/* what a batch's answer does to its workspace: failures, backoff, alert */

static void
ngx_http_cio_queue_outcome(ngx_http_cio_shws_t *ws,
    ngx_http_cio_settle_t *st, uint64_t now)
{
    uint64_t    delay;
    ngx_uint_t  shift;

    switch (st->outcome) {

    case NGX_HTTP_CIO_DONE:
        ws->failures = 0;
        break;

    case NGX_HTTP_CIO_RETRY:
    case NGX_HTTP_CIO_HOLD:
        ws->retried += st->requeued;

        /*
         * The other batches that were on the wire when the first of them
         * failed come back one after another: that is one failure, not
         * several, and must not double the pause each (8 answers of 429
         * in a few ms would otherwise make it a minute).
         */
        if (ws->retry_at > now && st->retry_after_ms == 0) {
            st->delay = ws->retry_at - now;
            goto alert;
        }

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

        if (ws->retry_at < now + delay) {
            ws->retry_at = now + delay;
        }

        st->delay = delay;

    alert:

        if (st->outcome == NGX_HTTP_CIO_HOLD && now >= ws->alert_at) {
            ws->alert_at = now + NGX_HTTP_CIO_ALERT_EVERY;
            st->alert = 1;
        }

        break;

    default: /* NGX_HTTP_CIO_RETURN */
        break;
    }
}


/*
 * Frees the dead items of a batch once their dead letters are written;
 * lost: how many of those could not be, counted apart.
 */

ngx_uint_t
ngx_http_cio_queue_bury(ngx_http_cio_zone_t *zone,
    ngx_http_cio_batch_t *batch, ngx_uint_t lost)
{
    ngx_uint_t            i, n;
    ngx_http_cio_shws_t  *ws;
    ngx_http_cio_node_t  *node;

    ws = batch->ws;
    n = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (i = 0; i < batch->n; i++) {

        if (batch->acts[i] != NGX_HTTP_CIO_ACT_DEAD) {
            continue;
        }

        node = batch->nodes[i];

        if (node->id != batch->ids[i]) {
            batch->acts[i] = NGX_HTTP_CIO_ACT_GONE;
            continue;
        }

        ngx_http_cio_queue_unhold(zone->sh, node);
        ngx_queue_remove(&node->link);
        ws->ninflight--;
        zone->sh->count--;
        ngx_http_cio_queue_node_free(zone, node);
        n++;
    }

    lost = ngx_min(lost, n);
    ws->dead += n - lost;
    ws->lost += lost;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (n) {
        ngx_http_cio_journal_settled(batch->jrefs, batch->acts, batch->n,
                                     NGX_HTTP_CIO_ACT_DEAD);
    }

    return n;
}


/* one item at the tail of a workspace: the spool and the journal load so */

ngx_int_t
ngx_http_cio_queue_append(ngx_http_cio_zone_t *zone, ngx_http_cio_shws_t *ws,
    u_char *data, size_t len, uint32_t attempts, uint64_t jref)
{
    ngx_http_cio_node_t  *node;

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = ngx_http_cio_queue_node_alloc(zone, ws, len);
    if (node == NULL) {
        goto full;
    }

    node->id = ngx_http_cio_queue_id(zone->sh);
    node->jref = jref;
    node->lease = 0;
    node->person = ngx_http_cio_queue_person(data, len);
    node->attempts = (uint16_t) ngx_min(attempts, 0xffff);
    node->len = (uint32_t) len;
    ngx_memcpy(node->data, data, len);

    ngx_queue_insert_tail(&ws->pending, &node->link);

    ws->npending++;
    ws->pending_bytes += len;
    zone->sh->count++;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_OK;

full:

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_BUSY;
}


/*
 * A reload that resizes cio_zone makes a new zone: the master moves the
 * pending items of the old one into it, oldest first, while it still maps
 * both.  Items in flight stay: their old worker settles them, and drains
 * what comes back before it exits.
 *
 * The master only tries the old zone's lock, for a short while (see
 * ngx_http_cio_queue_init_zone for why it never waits for it): when a
 * worker holds it that long, the old workers deliver the whole queue.
 * The new zone's lock is uncontended: no other process maps it yet.
 * NGX_BUSY: nothing moved.
 */

static ngx_int_t
ngx_http_cio_queue_migrate(ngx_http_cio_zone_t *from,
    ngx_http_cio_zone_t *to, ngx_uint_t *moved, ngx_uint_t *left)
{
    ngx_uint_t            waited;
    ngx_queue_t          *q, *wq;
    ngx_http_cio_shws_t  *ws, *nws;
    ngx_http_cio_node_t  *node;

    *moved = 0;
    *left = 0;

    for (waited = 0; !ngx_shmtx_trylock(&from->shpool->mutex); waited++) {

        if (waited == NGX_HTTP_CIO_MIGRATE_WAIT) {
            from->sh->orphaned = 1;
            *left = from->sh->count;    /* a guess, for the log */
            return NGX_BUSY;
        }

        ngx_msleep(1);
    }

    for (wq = ngx_queue_head(&from->sh->workspaces);
         wq != ngx_queue_sentinel(&from->sh->workspaces);
         wq = ngx_queue_next(wq))
    {
        ws = ngx_queue_data(wq, ngx_http_cio_shws_t, link);

        nws = ngx_http_cio_queue_lookup(to, &ws->url, &ws->site_id);

        while (!ngx_queue_empty(&ws->pending)) {
            q = ngx_queue_head(&ws->pending);
            node = ngx_queue_data(q, ngx_http_cio_node_t, link);

            if (nws == NULL
                || ngx_http_cio_queue_append(to, nws, node->data, node->len,
                                             node->attempts, node->jref)
                   != NGX_OK)
            {
                /* the old workers deliver the rest */
                *left += ws->npending;
                break;
            }

            ngx_queue_remove(q);
            ws->npending--;
            ws->pending_bytes -= node->len;
            from->sh->count--;
            ngx_http_cio_queue_node_free(from, node);
            (*moved)++;
        }

        *left += ws->ninflight;
    }

    from->sh->orphaned = 1;

    ngx_shmtx_unlock(&from->shpool->mutex);

    return NGX_OK;
}


/* an atomic word: the master bumps it without the lock */

ngx_uint_t
ngx_http_cio_queue_generation(ngx_http_cio_zone_t *zone)
{
    return (ngx_uint_t) zone->sh->generation;
}


/* items in the zone, pending or in flight, whoever holds them */

ngx_uint_t
ngx_http_cio_queue_busy(ngx_http_cio_zone_t *zone)
{
    ngx_uint_t  n;

    ngx_shmtx_lock(&zone->shpool->mutex);
    n = zone->sh->count;
    ngx_shmtx_unlock(&zone->shpool->mutex);

    return n;
}


/*
 * Items in the zone that cio_journal does not hold (pushed without it, or
 * loaded from the spool): what an old zone's drain that ends loses.
 */

ngx_uint_t
ngx_http_cio_queue_unjournaled(ngx_http_cio_zone_t *zone)
{
    ngx_uint_t  n;

    n = 0;

    ngx_shmtx_lock(&zone->shpool->mutex);
    (void) ngx_http_cio_queue_walk(zone,
                                   ngx_http_cio_queue_count_unjournaled, &n);
    ngx_shmtx_unlock(&zone->shpool->mutex);

    return n;
}


static void
ngx_http_cio_queue_count_unjournaled(void *data, ngx_http_cio_node_t *node)
{
    ngx_uint_t  *n = data;

    if (node->jref == 0) {
        (*n)++;
    }
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

        /* wraps every 49 days: leases are far shorter than half that */
        if ((int32_t) (node->lease - (uint32_t) now) > 0) {
            continue;
        }

        ngx_queue_remove(q);
        ngx_http_cio_queue_unhold(zone->sh, node);

        node->lease = 0;

        if (node->attempts < 0xffff) {
            node->attempts++;
        }

        /* a new id, so that a late answer cannot settle it twice */
        node->id = ngx_http_cio_queue_id(zone->sh);

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
    /* a batch given up while it was made: what it took went back */
    ngx_http_cio_queue_unmark(batch);
    ngx_http_cio_queue_unspare(&ngx_http_cio_queue_bodies, batch->body);

    /* the arrays are one allocation, from nodes on */
    ngx_http_cio_queue_unspare(&ngx_http_cio_queue_arrays, batch->nodes);
    free(batch->url);
    free(batch->userpwd);
    ngx_free(batch);
}


/* a body take() made, when its batch is done with it; NULL: none */

void
ngx_http_cio_queue_free_body(u_char *body)
{
    ngx_http_cio_queue_unspare(&ngx_http_cio_queue_bodies, body);
}


/* at exit, so that nothing the worker kept looks leaked */

void
ngx_http_cio_queue_free_spares(void)
{
    ngx_free(ngx_http_cio_queue_mine);
    ngx_http_cio_queue_mine = NULL;

    ngx_http_cio_queue_drop_spares(&ngx_http_cio_queue_bodies);
    ngx_http_cio_queue_drop_spares(&ngx_http_cio_queue_arrays);
}


/*
 * A block of spares' size, kept or new.  All of a worker's are one size
 * (from its cycle's cio_batch_size); should another be asked for, the
 * kept ones go.
 */

static void *
ngx_http_cio_queue_spare(ngx_http_cio_spares_t *sp, size_t size)
{
    if (sp->size != size) {
        ngx_http_cio_queue_drop_spares(sp);
        sp->size = size;
    }

    if (sp->n) {
        return sp->free[--sp->n];
    }

    return ngx_alloc(size, ngx_cycle->log);
}


static void
ngx_http_cio_queue_drop_spares(ngx_http_cio_spares_t *sp)
{
    while (sp->n) {
        ngx_free(sp->free[--sp->n]);
    }
}


static void
ngx_http_cio_queue_unspare(ngx_http_cio_spares_t *sp, void *p)
{
    if (p == NULL) {
        return;
    }

    if (sp->n < NGX_HTTP_CIO_SPARES) {
        sp->free[sp->n++] = p;
        return;
    }

    ngx_free(p);
}


/*
 * Runs in the master once a cycle's zones are set up (init_module): a
 * reload that resized the zone, or dropped cio_zone, hands the old zone's
 * queue on; a reload that kept the zone bumps its generation, which tells
 * the old workers not to drain (deliver.c).  Returns 1 when the zone is
 * new to this master, so that the spool is loaded into it.
 *
 * It waits for no lock of a zone the workers use (see init_zone): the
 * flags the old workers read are atomic words, and the counts logged are
 * read without the lock, as a guess.
 */

ngx_uint_t
ngx_http_cio_queue_start(ngx_http_cio_zone_t *zone,
    ngx_http_cio_zone_t *ozone, ngx_log_t *log)
{
    ngx_uint_t  moved, left, level;

    if (ozone && ozone->sh && ozone->sh->magic == NGX_HTTP_CIO_SHM_MAGIC
        && (zone == NULL || ozone->shpool != zone->shpool))
    {
        if (zone
            && ngx_http_cio_queue_migrate(ozone, zone, &moved, &left)
               == NGX_OK)
        {
            level = left ? NGX_LOG_WARN : NGX_LOG_NOTICE;

            ngx_log_error(level, log, 0,
                          "cio: the zone was resized, %ui queued events "
                          "moved to the new one, %ui left to the old "
                          "workers to deliver", moved, left);

        } else if (zone) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "cio: the zone was resized, but a worker held the "
                          "old zone's lock too long to move its queue: the "
                          "old workers deliver its %ui queued events for up "
                          "to cio_drain_timeout", left);

        } else {
            ozone->sh->orphaned = 1;
            left = ozone->sh->count;

            if (left) {
                ngx_log_error(NGX_LOG_WARN, log, 0,
                              "cio: cio_zone is no longer configured, the "
                              "old workers deliver its %ui queued events "
                              "for up to cio_drain_timeout", left);
            }
        }
    }

    if (zone == NULL) {
        return 0;
    }

    if (!zone->fresh) {
        (void) ngx_atomic_fetch_add(&zone->sh->generation, 1);
        return 0;
    }

    zone->fresh = 0;

    return 1;
}


/*
 * Every item, in flight first (they are older), then each workspace's
 * pending ones, oldest first.  It takes no lock: the master calls this
 * once every worker has exited, and a worker killed while holding the lock
 * must not hang the stop; a worker holds the lock around it.  Returns the
 * number of items.
 */

ngx_uint_t
ngx_http_cio_queue_walk(ngx_http_cio_zone_t *zone,
    void (*handler)(void *data, ngx_http_cio_node_t *node), void *data)
{
    ngx_uint_t            n;
    ngx_queue_t          *q, *wq;
    ngx_http_cio_shws_t  *ws;

    if (zone == NULL || zone->sh == NULL) {
        return 0;
    }

    if (handler == NULL) {
        return zone->sh->count;
    }

    n = 0;

    for (q = ngx_queue_head(&zone->sh->inflight);
         q != ngx_queue_sentinel(&zone->sh->inflight);
         q = ngx_queue_next(q))
    {
        handler(data, ngx_queue_data(q, ngx_http_cio_node_t, link));
        n++;
    }

    for (wq = ngx_queue_head(&zone->sh->workspaces);
         wq != ngx_queue_sentinel(&zone->sh->workspaces);
         wq = ngx_queue_next(wq))
    {
        ws = ngx_queue_data(wq, ngx_http_cio_shws_t, link);

        for (q = ngx_queue_head(&ws->pending);
             q != ngx_queue_sentinel(&ws->pending);
             q = ngx_queue_next(q))
        {
            handler(data, ngx_queue_data(q, ngx_http_cio_node_t, link));
            n++;
        }
    }

    return n;
}


/*
 * A consistent copy of every workspace for cio_status, its strings in the
 * pool, the API key left behind (userpwd is empty in the copies), so that
 * formatting and a slow client never hold the lock; *nfree: the zone's
 * free bytes.
 */

ngx_http_cio_shws_t *
ngx_http_cio_queue_snapshot(ngx_http_cio_zone_t *zone, ngx_pool_t *pool,
    ngx_uint_t *n, size_t *nfree)
{
    ngx_uint_t            i, nws;
    ngx_queue_t          *q;
    ngx_http_cio_shws_t  *ws, *copy;

    ngx_shmtx_lock(&zone->shpool->mutex);

    nws = 0;

    for (q = ngx_queue_head(&zone->sh->workspaces);
         q != ngx_queue_sentinel(&zone->sh->workspaces);
         q = ngx_queue_next(q))
    {
        nws++;
    }

    copy = ngx_palloc(pool, (nws + 1) * sizeof(ngx_http_cio_shws_t));

    if (copy) {
        i = 0;

        for (q = ngx_queue_head(&zone->sh->workspaces);
             q != ngx_queue_sentinel(&zone->sh->workspaces);
             q = ngx_queue_next(q))
        {
            ws = ngx_queue_data(q, ngx_http_cio_shws_t, link);
            copy[i] = *ws;

            copy[i].site_id.data = ngx_pstrdup(pool, &ws->site_id);
            copy[i].url.data = ngx_pstrdup(pool, &ws->url);
            ngx_str_null(&copy[i].userpwd);

            if (copy[i].site_id.data == NULL || copy[i].url.data == NULL) {
                copy = NULL;
                break;
            }

            i++;
        }
    }

    *nfree = zone->shpool->pfree * ngx_pagesize;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    *n = nws;

    return copy;
}


void
ngx_http_cio_queue_reject(ngx_http_cio_zone_t *zone, ngx_http_cio_shws_t *ws,
    ngx_uint_t reason, ngx_uint_t invalid)
{
    if (zone == NULL || ws == NULL || reason >= NGX_HTTP_CIO_REJ_N) {
        return;
    }

    ngx_shmtx_lock(&zone->shpool->mutex);
    ws->stats.rejected[reason]++;
    ws->stats.invalid += invalid;
    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/* one answer (or failure) of Customer.io: status 0 is no answer */

void
ngx_http_cio_stats_upstream(ngx_http_cio_zone_t *zone,
    ngx_http_cio_shws_t *ws, long status, double seconds, const char *error,
    size_t error_len)
{
    u_char                *p;
    ngx_uint_t             c, i, ms;
    ngx_http_cio_stats_t  *st;

    c = (status >= 200 && status < 600) ? (ngx_uint_t) status / 100 - 2 : 4;
    ms = (seconds > 0) ? (ngx_uint_t) (seconds * 1000) : 0;

    for (i = 0; i < NGX_HTTP_CIO_LAT_N - 1; i++) {
        if (ms <= ngx_http_cio_latency_bounds[i]) {
            break;
        }
    }

    ngx_shmtx_lock(&zone->shpool->mutex);

    st = &ws->stats;
    st->requests[c]++;

    if (status) {
        st->latency[i]++;
        st->latency_ms += ms;
    }

    if (error && error_len) {
        st->last_error_at = ngx_http_cio_wall_ms();

        if (status) {
            p = ngx_snprintf(st->last_error, NGX_HTTP_CIO_LAST_ERROR_LEN,
                             "%l: %*s", status, error_len, error);

        } else {
            p = ngx_snprintf(st->last_error, NGX_HTTP_CIO_LAST_ERROR_LEN,
                             "%*s", error_len, error);
        }

        st->last_error_len = p - st->last_error;
        ngx_http_cio_utf8_clean(st->last_error, st->last_error_len);
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/*
 * An answer's text for JSON (the status page's, a dead letter's): it may
 * be cut inside a character, or not be UTF-8 at all (a proxy's Latin-1
 * page); what is not UTF-8 becomes "?".
 */

void
ngx_http_cio_utf8_clean(u_char *s, size_t len)
{
    u_char  *p, *c, *last;

    last = s + len;

    for (p = s; p < last; /* void */) {

        if (*p < 0x80) {
            p++;
            continue;
        }

        c = p;

        if (ngx_utf8_decode(&p, last - c) > 0x10ffff) {
            *c = '?';
            p = c + 1;
        }
    }
}
