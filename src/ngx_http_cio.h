/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


#ifndef _NGX_HTTP_CIO_H_INCLUDED_
#define _NGX_HTTP_CIO_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_cio_map.h"


/*
 * bump when the layout or the meaning of anything in the zone changes
 * (09: its times are on the monotonic clock)
 */
#define NGX_HTTP_CIO_SHM_MAGIC      0x43494f0a

#define NGX_HTTP_CIO_INGEST_OFF       0
#define NGX_HTTP_CIO_INGEST_SEGMENT   1
#define NGX_HTTP_CIO_INGEST_AMPLITUDE 2

#define NGX_HTTP_CIO_CORS_ANY         0
#define NGX_HTTP_CIO_CORS_LIST        1
#define NGX_HTTP_CIO_CORS_OFF         2

#define NGX_HTTP_CIO_BATCH_HEAD     "{\"batch\":["
#define NGX_HTTP_CIO_BATCH_TAIL     "]}"


/* why a request was refused, for cio_status */
#define NGX_HTTP_CIO_REJ_INVALID       0    /* 400 */
#define NGX_HTTP_CIO_REJ_UNAUTHORIZED  1    /* 401 */
#define NGX_HTTP_CIO_REJ_TOO_LARGE     2    /* 413 */
#define NGX_HTTP_CIO_REJ_FULL          3    /* 503, queue full */
#define NGX_HTTP_CIO_REJ_OTHER         4    /* 403, 404, 405, 415 */
#define NGX_HTTP_CIO_REJ_N             5

/* upstream latency histogram: upper bounds in ms, the last is +Inf */
#define NGX_HTTP_CIO_LAT_N             10

#define NGX_HTTP_CIO_LAST_ERROR_LEN    200


/* counters every worker adds to, under the zone's mutex */
typedef struct {
    uint64_t                     filtered;   /* calls */
    uint64_t                     invalid;    /* calls the mapper refused */
    uint64_t                     rejected[NGX_HTTP_CIO_REJ_N]; /* requests */
    uint64_t                     requests[5]; /* 2xx 3xx 4xx 5xx failed */
    uint64_t                     latency[NGX_HTTP_CIO_LAT_N];
    uint64_t                     latency_ms;  /* sum */
    uint64_t                     last_error_at;  /* unix ms */
    size_t                       last_error_len;
    u_char                       last_error[NGX_HTTP_CIO_LAST_ERROR_LEN];
} ngx_http_cio_stats_t;


/* a Customer.io workspace as the zone keeps it: all a worker needs */
typedef struct {
    ngx_queue_t                  link;       /* sh->workspaces */
    ngx_queue_t                  pending;    /* nodes, oldest first */

    void                        *run;        /* its open run (queue.c) */
    ngx_uint_t                   npending;
    size_t                       pending_bytes;
    ngx_uint_t                   ninflight;

    uint64_t                     retry_at;   /* now_ms: backoff */
    ngx_uint_t                   failures;   /* in a row */

    uint64_t                     accepted;
    uint64_t                     delivered;
    uint64_t                     refused;
    uint64_t                     retried;

    ngx_str_t                    url;        /* .../api/v2/batch */
    ngx_str_t                    userpwd;    /* site_id:api_key */
    ngx_str_t                    site_id;

    uint64_t                     rate_at;    /* now_ms, last refill */
    uint64_t                     rate_tokens; /* 1/1000000 requests */
    uint64_t                     alert_at;   /* now_ms: next hold alert */
    uint64_t                     dead;       /* to the dead-letter file */
    uint64_t                     lost;       /* given up, not written */
    uint64_t                     stuck;      /* sh->unholds + 1: held */
    uint64_t                     making;     /* now_ms: a batch is being
                                                made of its head until */

    ngx_http_cio_stats_t         stats;
} ngx_http_cio_shws_t;


/*
 * A queued item.  Most live packed back to back in runs of the zone's
 * pages (queue.c), so every byte of the header counts against the item:
 * fields are as narrow as their use allows, 48 bytes in all.
 */
typedef struct {
    ngx_queue_t                  link;       /* ws->pending, sh->inflight */
    ngx_http_cio_shws_t         *ws;
    uint64_t                     jref;       /* in cio_journal, 0: none */
    uint32_t                     id;         /* new each lease, 0: freed */
    uint32_t                     lease;      /* now_ms mod 2^32, in flight */
    uint32_t                     person;     /* its key, 0: unordered */
    uint32_t                     len;
    uint16_t                     attempts;   /* saturates */
    uint16_t                     run;        /* 8-byte units back to its
                                                run, 0: a slab allocation */
    u_char                       data[1];
} ngx_http_cio_node_t;


typedef struct {
    uint32_t                     magic;
    ngx_queue_t                  workspaces;
    ngx_queue_t                  inflight;
    uint64_t                     next_id;
    ngx_uint_t                   count;

    /* items in flight per person bucket (see ngx_http_cio_queue_take) */
    uint32_t                    *persons;
    uint32_t                     persons_mask;
    uint64_t                     unholds;    /* items that left flight */

    /*
     * bumped on every reload that keeps the zone; both are written by the
     * master without the lock (see ngx_http_cio_queue_start)
     */
    ngx_atomic_t                 generation;

    /* a reload resized the zone: its pending items moved to the new one */
    ngx_atomic_t                 orphaned;
} ngx_http_cio_shctx_t;


typedef struct {
    ngx_http_cio_shctx_t        *sh;
    ngx_slab_pool_t             *shpool;
    ngx_array_t                 *workspaces; /* to intern at init */
    unsigned                     fresh:1;    /* created by this cycle */
} ngx_http_cio_zone_t;


/* a workspace as configuration knows it, in the conf pool */
typedef struct {
    ngx_str_t                    url;
    ngx_str_t                    userpwd;
    ngx_str_t                    site_id;
    ngx_http_cio_shws_t         *sh;         /* set by init_zone */
} ngx_http_cio_ws_t;


typedef struct ngx_http_cio_journal_s  ngx_http_cio_journal_t;


/* a request waiting for cio_journal's sync (sync=always) */
typedef struct {
    ngx_queue_t                  link;
    uint64_t                     seq;
    ngx_int_t                    rc;         /* NGX_OK: synced */
    ngx_event_t                  ev;         /* posted when it is over */
} ngx_http_cio_jwait_t;


/*
 * A request's records on their way into cio_journal: written with those
 * of the other requests of the same event loop pass, then handler runs,
 * rc NGX_OK with jrefs[] (where each item is), NGX_BUSY (full) or
 * NGX_ERROR (cannot be written: nothing of it stays in the journal).
 */
typedef struct ngx_http_cio_jappend_s  ngx_http_cio_jappend_t;

struct ngx_http_cio_jappend_s {
    ngx_http_cio_jappend_t      *next;
    void                       (*handler)(ngx_http_cio_jappend_t *a);
    void                        *data;
    ngx_log_t                   *log;
    u_char                      *buf;
    size_t                       len;
    uint32_t                    *offs;
    ngx_uint_t                   n;
    uint64_t                    *jrefs;
    ngx_int_t                    rc;
};


typedef struct {
    ngx_shm_zone_t              *shm_zone;
    ngx_array_t                  workspaces; /* ngx_http_cio_ws_t * */
    ngx_http_cio_journal_t      *journal;    /* cio_journal, or NULL */

    ngx_msec_t                   flush_interval;
    size_t                       batch_size;
    ngx_uint_t                   max_inflight;
    ngx_msec_t                   timeout;
    ngx_msec_t                   connect_timeout;
    ngx_msec_t                   backoff_min;
    ngx_msec_t                   backoff_max;
    ngx_msec_t                   lease;

    ngx_uint_t                   retry_max;
    ngx_uint_t                   rate;       /* milli-requests a second */
    ngx_uint_t                   burst;      /* requests */
    ngx_open_file_t             *dead_letter;
    ngx_str_t                    spool;
    ngx_msec_t                   drain_timeout;

    ngx_str_t                    trusted_certificate;   /* NUL-ended */
} ngx_http_cio_main_conf_t;


/* an ingest location */
typedef struct {
    ngx_uint_t                   ingest;
    ngx_str_t                    site_id;
    ngx_str_t                    api_key;
    ngx_uint_t                   region;
    ngx_str_t                    endpoint;
    ngx_array_t                 *write_keys;
    ngx_uint_t                   screen_views;
    ngx_flag_t                   convert_timestamps;
    ngx_array_t                 *device_events;    /* of char *, NUL-ended */
    ngx_array_t                 *events_allow;     /* of char * */
    ngx_array_t                 *events_deny;      /* of char * */
    ngx_array_t                 *consent_deny;     /* of char * */
    ngx_uint_t                   cors;
    ngx_array_t                 *cors_origins;     /* of ngx_str_t */
    ngx_flag_t                   cors_credentials;
    size_t                       max_call_size;
    size_t                       max_batch_size;
    ngx_uint_t                   max_batch_calls;
    ngx_http_cio_ws_t           *ws;

    /* where cio_ingest is, for what merge finds missing there */
    u_char                      *ingest_file;
    ngx_uint_t                   ingest_line;

    /* what the mapper is told, short of the route and the arrival time */
    ngx_http_cio_map_opts_t      map_opts;

    /* a server's own configuration: one of its locations ingests */
    unsigned                     server_ingest:1;
} ngx_http_cio_loc_conf_t;


/* what becomes of one item of a batch once its answer is in */
#define NGX_HTTP_CIO_ACT_DONE       0    /* delivered: freed */
#define NGX_HTTP_CIO_ACT_RETRY      1    /* requeued, attempts + 1 */
#define NGX_HTTP_CIO_ACT_RETURN     2    /* requeued as it was */
#define NGX_HTTP_CIO_ACT_DEAD       3    /* to the dead-letter file */
#define NGX_HTTP_CIO_ACT_GONE       4    /* out: no longer ours */


/* one batch a worker has handed to its sender thread */
typedef struct ngx_http_cio_batch_s  ngx_http_cio_batch_t;

struct ngx_http_cio_batch_s {
    ngx_http_cio_shws_t         *ws;
    ngx_uint_t                   n;
    ngx_http_cio_node_t        **nodes;
    uint64_t                    *ids;
    uint64_t                    *jrefs;      /* in cio_journal, 0: none */

    /* where each item is in the request body, for dead letters */
    size_t                      *offs;
    uint32_t                    *lens;
    uint32_t                    *attempts;   /* out of settle */
    u_char                      *acts;       /* NGX_HTTP_CIO_ACT_* */
    ngx_uint_t                   settled;    /* the last ones, so far */
    ngx_http_cio_batch_t        *later;      /* deliver.c's, to settle */

    char                        *url;        /* copies, for the thread */
    char                        *userpwd;

    u_char                      *body;       /* take()'s, until sent */
    size_t                       size;

    /* while take() makes it, a slice at a time */
    uint32_t                    *persons;    /* each item's key */
    ngx_uint_t                   cap;
    ngx_uint_t                   skipped;
    ngx_http_cio_node_t         *next;       /* where the next begins */
    uint32_t                     next_id;
    uint64_t                     unholds;    /* sh->unholds then */
    uint32_t                     lease;      /* every item's */
    unsigned                     taking:1;
    unsigned                     moved:1;    /* an item left flight */
};


typedef enum {
    NGX_HTTP_CIO_DONE = 0,         /* answered: no backoff */
    NGX_HTTP_CIO_RETRY,            /* failed: back off */
    NGX_HTTP_CIO_RETURN,           /* never answered: no backoff */
    NGX_HTTP_CIO_HOLD              /* credentials or endpoint: pause */
} ngx_http_cio_outcome_e;


typedef struct {
    ngx_uint_t                   outcome;    /* ngx_http_cio_outcome_e */
    uint64_t                     retry_after_ms;
    uint64_t                     backoff_min;
    uint64_t                     backoff_max;
    ngx_uint_t                   retry_max;

    /* out */
    ngx_uint_t                   settled;
    ngx_uint_t                   done;
    ngx_uint_t                   requeued;
    ngx_uint_t                   dead;
    uint64_t                     delay;
    ngx_uint_t                   pending;    /* left in the workspace */
    unsigned                     alert:1;    /* a hold worth an alert */
} ngx_http_cio_settle_t;


extern ngx_module_t  ngx_http_cio_module;
extern ngx_uint_t    ngx_http_cio_latency_bounds[NGX_HTTP_CIO_LAT_N - 1];


/* ngx_http_cio_handler.c: the ingest location */
ngx_int_t ngx_http_cio_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_cio_add_variables(ngx_conf_t *cf);
ngx_int_t ngx_http_cio_log_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_cio_post_read_handler(ngx_http_request_t *r);

/* ngx_http_cio_reply.c: answers */
ngx_int_t ngx_http_cio_reply_ok(ngx_http_request_t *r,
    ngx_http_cio_map_result_t *res);
ngx_int_t ngx_http_cio_reply_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *error, ngx_uint_t amplitude);
ngx_int_t ngx_http_cio_reply_amplitude(ngx_http_request_t *r,
    ngx_http_cio_map_result_t *res, size_t received);
ngx_int_t ngx_http_cio_reply_amplitude_invalid(ngx_http_request_t *r,
    ngx_http_cio_map_result_t *res);
ngx_int_t ngx_http_cio_reply_amplitude_missing(ngx_http_request_t *r,
    const char *error, const char *field);
ngx_int_t ngx_http_cio_send(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len);
ngx_int_t ngx_http_cio_send_type(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *body, size_t len);
ngx_table_elt_t *ngx_http_cio_header_in(ngx_http_request_t *r,
    const char *name, size_t len);
ngx_int_t ngx_http_cio_header_out(ngx_http_request_t *r, const char *key,
    u_char *value, size_t len);

/* ngx_http_cio_queue.c: the zone and everything in it */
ngx_int_t ngx_http_cio_queue_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
ngx_int_t ngx_http_cio_queue_workspaces(ngx_http_cio_zone_t *zone,
    ngx_log_t *log);
ngx_uint_t ngx_http_cio_queue_start(ngx_http_cio_zone_t *zone,
    ngx_http_cio_zone_t *ozone, ngx_log_t *log);
ngx_int_t ngx_http_cio_queue_push(ngx_http_cio_zone_t *zone,
    ngx_http_cio_shws_t *ws, ngx_str_t *items, ngx_uint_t n,
    ngx_uint_t filtered, ngx_uint_t refused, uint64_t *jrefs);
ngx_http_cio_batch_t *ngx_http_cio_queue_take(ngx_http_cio_zone_t *zone,
    ngx_http_cio_shws_t *ws, ngx_http_cio_main_conf_t *mcf);
ngx_int_t ngx_http_cio_queue_take_more(ngx_http_cio_zone_t *zone,
    ngx_http_cio_batch_t *batch, ngx_http_cio_main_conf_t *mcf);
/*
 * Settle, then the dead letters (deliver.c), then bury: an item refused
 * for good stays leased until its dead letter is written, so a crash in
 * between sends it again rather than loses it.
 */
ngx_uint_t ngx_http_cio_queue_settle(ngx_http_cio_zone_t *zone,
    ngx_http_cio_batch_t *batch, ngx_http_cio_settle_t *st,
    ngx_uint_t slice);
ngx_uint_t ngx_http_cio_queue_bury(ngx_http_cio_zone_t *zone,
    ngx_http_cio_batch_t *batch, ngx_uint_t lost);
ngx_uint_t ngx_http_cio_queue_reclaim(ngx_http_cio_zone_t *zone);
void ngx_http_cio_queue_free_batch(ngx_http_cio_batch_t *batch);
void ngx_http_cio_queue_free_body(u_char *body);
int ngx_http_cio_queue_fill(void *data, char *body);
ngx_int_t ngx_http_cio_queue_may_send(ngx_http_cio_zone_t *zone,
    ngx_http_cio_batch_t *batch, ngx_uint_t lo, ngx_uint_t n,
    ngx_http_cio_main_conf_t *mcf);
void ngx_http_cio_queue_free_spares(void);
ngx_int_t ngx_http_cio_queue_append(ngx_http_cio_zone_t *zone,
    ngx_http_cio_shws_t *ws, u_char *data, size_t len, uint32_t attempts,
    uint64_t jref);
size_t ngx_http_cio_queue_cost(size_t len);
ngx_http_cio_shws_t *ngx_http_cio_queue_lookup(ngx_http_cio_zone_t *zone,
    ngx_str_t *url, ngx_str_t *site_id);
ngx_uint_t ngx_http_cio_queue_generation(ngx_http_cio_zone_t *zone);
ngx_uint_t ngx_http_cio_queue_busy(ngx_http_cio_zone_t *zone);
ngx_uint_t ngx_http_cio_queue_unjournaled(ngx_http_cio_zone_t *zone);
ngx_uint_t ngx_http_cio_queue_walk(ngx_http_cio_zone_t *zone,
    void (*handler)(void *data, ngx_http_cio_node_t *node), void *data);
ngx_http_cio_shws_t *ngx_http_cio_queue_snapshot(ngx_http_cio_zone_t *zone,
    ngx_pool_t *pool, ngx_uint_t *n, size_t *nfree);
/* a refused request, and the calls in it the mapper refused */
void ngx_http_cio_queue_reject(ngx_http_cio_zone_t *zone,
    ngx_http_cio_shws_t *ws, ngx_uint_t reason, ngx_uint_t invalid);
void ngx_http_cio_stats_upstream(ngx_http_cio_zone_t *zone,
    ngx_http_cio_shws_t *ws, long status, double seconds,
    const char *error, size_t error_len);
uint64_t ngx_http_cio_now_ms(void);         /* monotonic */
uint64_t ngx_http_cio_wall_ms(void);        /* unix */
void ngx_http_cio_utf8_clean(u_char *s, size_t len);

/* ngx_http_cio_deliver.c: the worker's side of delivery */
ngx_int_t ngx_http_cio_deliver_init(ngx_cycle_t *cycle,
    ngx_http_cio_main_conf_t *mcf);
void ngx_http_cio_deliver_exit(ngx_cycle_t *cycle);
void ngx_http_cio_deliver_kick(void);

/* ngx_http_cio_dead_letter.c: NGX_OK when the item was kept */
ngx_int_t ngx_http_cio_dead_letter(ngx_http_cio_main_conf_t *mcf,
    ngx_log_t *log, ngx_http_cio_shws_t *ws, ngx_http_cio_batch_t *batch,
    ngx_uint_t i, u_char *body, long status, const char *reason,
    u_char *answer, size_t answer_len);

/* ngx_http_cio_spool.c: the master's spool file */
void ngx_http_cio_spool_load(ngx_cycle_t *cycle, ngx_str_t *path,
    ngx_http_cio_zone_t *zone);
void ngx_http_cio_spool_save(ngx_cycle_t *cycle, ngx_str_t *path,
    ngx_http_cio_zone_t *zone, ngx_http_cio_journal_t *journal);

/* ngx_http_cio_journal.c: cio_journal, the accepted items on disk */
#define NGX_HTTP_CIO_J_SYNC_OFF      0
#define NGX_HTTP_CIO_J_SYNC_TIMER    1
#define NGX_HTTP_CIO_J_SYNC_ALWAYS   2
#define NGX_HTTP_CIO_J_MIN_SIZE      (128 * 1024)    /* two segments */

ngx_http_cio_journal_t *ngx_http_cio_journal_add(ngx_conf_t *cf,
    ngx_str_t *path, off_t max_size, ngx_uint_t sync, ngx_msec_t interval);
ngx_int_t ngx_http_cio_journal_start(ngx_cycle_t *cycle,
    ngx_http_cio_journal_t *j, ngx_http_cio_zone_t *zone,
    ngx_uint_t fresh);
ngx_uint_t ngx_http_cio_journal_holds(ngx_http_cio_journal_t *j,
    uint64_t jref);
void ngx_http_cio_journal_cycle(ngx_http_cio_journal_t *oj,
    ngx_http_cio_journal_t *j);
void ngx_http_cio_journal_init_process(ngx_cycle_t *cycle,
    ngx_http_cio_journal_t *j);
void ngx_http_cio_journal_exit_process(ngx_cycle_t *cycle);
ngx_int_t ngx_http_cio_journal_append(ngx_http_cio_journal_t *j,
    ngx_http_cio_ws_t *ws, ngx_str_t *items, ngx_uint_t n, ngx_pool_t *pool,
    ngx_http_cio_jappend_t *a);
void ngx_http_cio_journal_settled(uint64_t *jrefs, u_char *acts,
    ngx_uint_t n, u_char act);
ngx_int_t ngx_http_cio_journal_wait(ngx_http_cio_journal_t *j,
    ngx_http_cio_jwait_t *w);

/* ngx_http_cio_status.c: the cio_status location */
ngx_int_t ngx_http_cio_status_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_CIO_H_INCLUDED_ */
