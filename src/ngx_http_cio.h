
/*
 * Copyright (C) ngx_http_cio_module authors
 */


#ifndef _NGX_HTTP_CIO_H_INCLUDED_
#define _NGX_HTTP_CIO_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* bump when the layout of anything in the zone changes */
#define NGX_HTTP_CIO_SHM_MAGIC      0x43494f02

#define NGX_HTTP_CIO_BATCH_HEAD     "{\"batch\":["
#define NGX_HTTP_CIO_BATCH_TAIL     "]}"


/* a Customer.io workspace as the zone keeps it: all a worker needs */
typedef struct {
    ngx_queue_t                  link;       /* sh->workspaces */
    ngx_queue_t                  pending;    /* nodes, oldest first */

    ngx_uint_t                   npending;
    size_t                       pending_bytes;
    ngx_uint_t                   ninflight;

    uint64_t                     retry_at;   /* unix ms: backoff */
    ngx_uint_t                   failures;   /* in a row */

    uint64_t                     accepted;
    uint64_t                     delivered;
    uint64_t                     refused;
    uint64_t                     retried;

    ngx_str_t                    url;        /* .../api/v2/batch */
    ngx_str_t                    userpwd;    /* site_id:api_key */
    ngx_str_t                    site_id;
} ngx_http_cio_shws_t;


typedef struct {
    ngx_queue_t                  link;       /* ws->pending, sh->inflight */
    ngx_http_cio_shws_t         *ws;
    uint64_t                     id;         /* 0 once freed */
    uint64_t                     lease;      /* unix ms, in flight only */
    ngx_pid_t                    owner;
    uint32_t                     attempts;
    uint32_t                     len;
    u_char                       data[1];
} ngx_http_cio_node_t;


typedef struct {
    uint32_t                     magic;
    ngx_queue_t                  workspaces;
    ngx_queue_t                  inflight;
    uint64_t                     next_id;
    ngx_uint_t                   count;
    size_t                       bytes;
    uint64_t                     rejected_full;
} ngx_http_cio_shctx_t;


typedef struct {
    ngx_http_cio_shctx_t        *sh;
    ngx_slab_pool_t             *shpool;
    ngx_array_t                 *workspaces; /* to intern at init */
} ngx_http_cio_zone_t;


/* a workspace as configuration knows it, in the conf pool */
typedef struct {
    ngx_str_t                    url;
    ngx_str_t                    userpwd;
    ngx_str_t                    site_id;
    ngx_http_cio_shws_t         *sh;         /* set by init_zone */
} ngx_http_cio_ws_t;


typedef struct {
    ngx_shm_zone_t              *shm_zone;
    ngx_array_t                  workspaces; /* ngx_http_cio_ws_t * */

    ngx_msec_t                   flush_interval;
    size_t                       batch_size;
    ngx_uint_t                   max_inflight;
    ngx_msec_t                   timeout;
    ngx_msec_t                   connect_timeout;
    ngx_msec_t                   backoff_min;
    ngx_msec_t                   backoff_max;
    ngx_msec_t                   lease;
    ngx_uint_t                   max_events;
} ngx_http_cio_main_conf_t;


/* one batch a worker has handed to its sender thread */
typedef struct {
    ngx_http_cio_shws_t         *ws;
    ngx_uint_t                   n;
    ngx_http_cio_node_t        **nodes;
    uint64_t                    *ids;
    size_t                       bytes;
} ngx_http_cio_batch_t;


typedef enum {
    NGX_HTTP_CIO_DONE = 0,         /* delivered: free the nodes */
    NGX_HTTP_CIO_RETRY,            /* back to pending, attempts + 1 */
    NGX_HTTP_CIO_RETURN            /* back to pending, as they were */
} ngx_http_cio_outcome_e;


typedef struct {
    ngx_uint_t                   outcome;    /* ngx_http_cio_outcome_e */
    ngx_uint_t                   refused;    /* of a DONE batch */
    uint64_t                     retry_after_ms;
    uint64_t                     backoff_min;
    uint64_t                     backoff_max;

    /* out */
    ngx_uint_t                   settled;
    uint64_t                     delay;
} ngx_http_cio_settle_t;


extern ngx_module_t  ngx_http_cio_module;


ngx_int_t ngx_http_cio_queue_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
ngx_int_t ngx_http_cio_queue_intern(ngx_http_cio_zone_t *zone,
    ngx_http_cio_ws_t *ws, ngx_log_t *log);
ngx_int_t ngx_http_cio_queue_push(ngx_http_cio_zone_t *zone,
    ngx_http_cio_shws_t *ws, ngx_str_t *items, ngx_uint_t n,
    ngx_uint_t max_events);
ngx_http_cio_batch_t *ngx_http_cio_queue_take(ngx_http_cio_zone_t *zone,
    ngx_http_cio_shws_t *ws, size_t max_bytes, ngx_msec_t lease,
    u_char **body, size_t *body_len);
void ngx_http_cio_queue_settle(ngx_http_cio_zone_t *zone,
    ngx_http_cio_batch_t *batch, ngx_http_cio_settle_t *st);
ngx_uint_t ngx_http_cio_queue_reclaim(ngx_http_cio_zone_t *zone);
void ngx_http_cio_queue_free_batch(ngx_http_cio_batch_t *batch);
uint64_t ngx_http_cio_now_ms(void);

ngx_int_t ngx_http_cio_deliver_init(ngx_cycle_t *cycle,
    ngx_http_cio_main_conf_t *mcf);
void ngx_http_cio_deliver_exit(ngx_cycle_t *cycle);
void ngx_http_cio_deliver_kick(void);


#endif /* _NGX_HTTP_CIO_H_INCLUDED_ */
