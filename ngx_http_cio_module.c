/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * The module: every directive, the configuration it makes (created,
 * merged, checked here, and nowhere else), and the hooks nginx calls for
 * the zone and the processes.  The work is done elsewhere:
 *
 *   src/ngx_http_cio_handler.c      the ingest location
 *   src/ngx_http_cio_reply.c        what it and cio_status answer
 *   src/ngx_http_cio_map.c          calls to Customer.io items (pure C)
 *   src/ngx_http_cio_map_fast.c     the same in one pass, common calls
 *   src/ngx_http_cio_queue.c        the zone: queue, counters, rate
 *   src/ngx_http_cio_deliver.c      a worker's side of delivery
 *   src/ngx_http_cio_sender.c       the sender thread (no nginx headers)
 *   src/ngx_http_cio_dead_letter.c  the dead-letter file
 *   src/ngx_http_cio_spool.c        the spool file across a stop
 *   src/ngx_http_cio_journal.c      cio_journal: accepted items on disk
 *   src/ngx_http_cio_status.c       cio_status
 */


#include "ngx_http_cio.h"


#define NGX_HTTP_CIO_REGION_US        0
#define NGX_HTTP_CIO_REGION_EU        1

#define NGX_HTTP_CIO_MAX_BATCH        500000
#define NGX_HTTP_CIO_MIN_BATCH        40000


static ngx_int_t ngx_http_cio_init(ngx_conf_t *cf);
static void *ngx_http_cio_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_cio_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_cio_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_cio_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static void ngx_http_cio_map_options(ngx_http_cio_loc_conf_t *lcf);
static ngx_int_t ngx_http_cio_workspace(ngx_conf_t *cf,
    ngx_http_cio_loc_conf_t *lcf);
static void ngx_http_cio_check_body_size(ngx_conf_t *cf,
    ngx_http_cio_loc_conf_t *lcf);
static char *ngx_http_cio_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cio_enum(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cio_ingest(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cio_write_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cio_names(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cio_trusted_certificate(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_cio_cors_origins(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cio_retry_backoff(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cio_check_batch_size(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_cio_rate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cio_dead_letter_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_cio_journal(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cio_spool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cio_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_cio_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_cio_init_process(ngx_cycle_t *cycle);
static void ngx_http_cio_exit_process(ngx_cycle_t *cycle);
static void ngx_http_cio_exit_master(ngx_cycle_t *cycle);


static ngx_conf_enum_t  ngx_http_cio_regions[] = {
    { ngx_string("us"), NGX_HTTP_CIO_REGION_US },
    { ngx_string("eu"), NGX_HTTP_CIO_REGION_EU },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_cio_screen_views[] = {
    { ngx_string("event"), 0 },
    { ngx_string("native"), 1 },
    { ngx_null_string, 0 }
};


static ngx_conf_num_bounds_t  ngx_http_cio_inflight_bounds = {
    ngx_conf_check_num_bounds, 1, 64
};


static ngx_conf_num_bounds_t  ngx_http_cio_retry_max_bounds = {
    ngx_conf_check_num_bounds, 0, 1000
};


static ngx_conf_post_t  ngx_http_cio_batch_size_post = {
    ngx_http_cio_check_batch_size
};


static ngx_command_t  ngx_http_cio_commands[] = {

    { ngx_string("cio_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_cio_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cio_flush_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cio_main_conf_t, flush_interval),
      NULL },

    { ngx_string("cio_batch_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cio_main_conf_t, batch_size),
      &ngx_http_cio_batch_size_post },

    { ngx_string("cio_max_inflight"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cio_main_conf_t, max_inflight),
      &ngx_http_cio_inflight_bounds },

    { ngx_string("cio_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cio_main_conf_t, timeout),
      NULL },

    { ngx_string("cio_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cio_main_conf_t, connect_timeout),
      NULL },

    { ngx_string("cio_retry_backoff"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_cio_retry_backoff,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cio_ingest"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_cio_ingest,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cio_site_id"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cio_loc_conf_t, site_id),
      NULL },

    { ngx_string("cio_api_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cio_loc_conf_t, api_key),
      NULL },

    { ngx_string("cio_region"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_cio_enum,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cio_loc_conf_t, region),
      &ngx_http_cio_regions },

    { ngx_string("cio_endpoint"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cio_loc_conf_t, endpoint),
      NULL },

    { ngx_string("cio_write_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_cio_write_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cio_screen_views"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_cio_enum,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cio_loc_conf_t, screen_views),
      &ngx_http_cio_screen_views },

    { ngx_string("cio_convert_timestamps"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cio_loc_conf_t, convert_timestamps),
      NULL },

    { ngx_string("cio_device_events"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_cio_names,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cio_loc_conf_t, device_events),
      NULL },

    { ngx_string("cio_events_allow"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_cio_names,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cio_loc_conf_t, events_allow),
      NULL },

    { ngx_string("cio_events_deny"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_cio_names,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cio_loc_conf_t, events_deny),
      NULL },

    { ngx_string("cio_consent_category"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_cio_names,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cio_loc_conf_t, consent_deny),
      NULL },

    { ngx_string("cio_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_cio_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cio_cors_origins"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_cio_cors_origins,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cio_cors_credentials"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cio_loc_conf_t, cors_credentials),
      NULL },

    { ngx_string("cio_max_call_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cio_loc_conf_t, max_call_size),
      NULL },

    { ngx_string("cio_max_batch_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cio_loc_conf_t, max_batch_size),
      NULL },

    { ngx_string("cio_max_batch_calls"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cio_loc_conf_t, max_batch_calls),
      NULL },

    { ngx_string("cio_retry_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cio_main_conf_t, retry_max),
      &ngx_http_cio_retry_max_bounds },

    { ngx_string("cio_rate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_cio_rate,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cio_dead_letter"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_cio_dead_letter_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cio_spool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_cio_spool,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cio_journal"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE123,
      ngx_http_cio_journal,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cio_drain_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cio_main_conf_t, drain_timeout),
      NULL },

    { ngx_string("cio_ssl_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_cio_trusted_certificate,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cio_lease"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cio_main_conf_t, lease),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_cio_module_ctx = {
    ngx_http_cio_add_variables,            /* preconfiguration */
    ngx_http_cio_init,                     /* postconfiguration */

    ngx_http_cio_create_main_conf,         /* create main configuration */
    ngx_http_cio_init_main_conf,           /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_cio_create_loc_conf,          /* create location configuration */
    ngx_http_cio_merge_loc_conf            /* merge location configuration */
};


ngx_module_t  ngx_http_cio_module = {
    NGX_MODULE_V1,
    &ngx_http_cio_module_ctx,              /* module context */
    ngx_http_cio_commands,                 /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_cio_init_module,              /* init module */
    ngx_http_cio_init_process,             /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_cio_exit_process,             /* exit process */
    ngx_http_cio_exit_master,              /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_cio_init(ngx_conf_t *cf)
{
    ngx_array_t                *a;
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    a = &cmcf->phases[NGX_HTTP_LOG_PHASE].handlers;

    h = ngx_array_push(a);
    if (h == NULL) {
        return NGX_ERROR;
    }

    /*
     * nginx calls log phase handlers in array order and the log module's
     * is already there: go first, so the access log sees the change.
     */
    h = a->elts;
    ngx_memmove(&h[1], &h[0], (a->nelts - 1) * sizeof(ngx_http_handler_pt));
    h[0] = ngx_http_cio_log_handler;

    /* before any line nginx logs with the request line in it */
    h = ngx_array_push(&cmcf->phases[NGX_HTTP_POST_READ_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_cio_post_read_handler;

    return NGX_OK;
}


static void *
ngx_http_cio_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_cio_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_cio_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mcf->shm_zone = NULL;
     *     mcf->spool = { 0, NULL };
     *     mcf->journal = NULL;
     */

    if (ngx_array_init(&mcf->workspaces, cf->pool, 2,
                       sizeof(ngx_http_cio_ws_t *))
        != NGX_OK)
    {
        return NULL;
    }

    mcf->flush_interval = NGX_CONF_UNSET_MSEC;
    mcf->batch_size = NGX_CONF_UNSET_SIZE;
    mcf->max_inflight = NGX_CONF_UNSET_UINT;
    mcf->timeout = NGX_CONF_UNSET_MSEC;
    mcf->connect_timeout = NGX_CONF_UNSET_MSEC;
    mcf->backoff_min = NGX_CONF_UNSET_MSEC;
    mcf->backoff_max = NGX_CONF_UNSET_MSEC;
    mcf->lease = NGX_CONF_UNSET_MSEC;
    mcf->retry_max = NGX_CONF_UNSET_UINT;
    mcf->rate = NGX_CONF_UNSET_UINT;
    mcf->dead_letter = NGX_CONF_UNSET_PTR;
    mcf->drain_timeout = NGX_CONF_UNSET_MSEC;

    return mcf;
}


static char *
ngx_http_cio_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_cio_main_conf_t *mcf = conf;

    ngx_conf_init_msec_value(mcf->flush_interval, 100);
    ngx_conf_init_size_value(mcf->batch_size, NGX_HTTP_CIO_MAX_BATCH);
    ngx_conf_init_uint_value(mcf->max_inflight, 4);
    ngx_conf_init_msec_value(mcf->timeout, 10000);
    ngx_conf_init_msec_value(mcf->connect_timeout, 5000);
    ngx_conf_init_msec_value(mcf->backoff_min, 1000);
    ngx_conf_init_msec_value(mcf->backoff_max, 60000);

    if (mcf->backoff_max < mcf->backoff_min) {
        mcf->backoff_max = mcf->backoff_min;
    }

    /* a batch is never taken back from a worker that may still send it */
    ngx_conf_init_msec_value(mcf->lease,
                             mcf->connect_timeout + mcf->timeout + 30000);

    if (mcf->lease < mcf->connect_timeout + mcf->timeout) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"cio_lease\" is shorter than \"cio_timeout\" "
                           "and \"cio_connect_timeout\" together: a slow "
                           "batch may be sent twice");
    }

    ngx_conf_init_uint_value(mcf->retry_max, 10);
    ngx_conf_init_ptr_value(mcf->dead_letter, NULL);
    ngx_conf_init_msec_value(mcf->drain_timeout, 5000);

    /* Customer.io's conservative guidance: 100 requests a second */
    if (mcf->rate == NGX_CONF_UNSET_UINT) {
        mcf->rate = 100 * 1000;
        mcf->burst = 100;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_cio_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_cio_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_cio_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     lcf->ingest = NGX_HTTP_CIO_INGEST_OFF;
     *     lcf->site_id = { 0, NULL };
     *     lcf->api_key = { 0, NULL };
     *     lcf->endpoint = { 0, NULL };
     *     lcf->ws = NULL;
     */

    lcf->region = NGX_CONF_UNSET_UINT;
    lcf->write_keys = NGX_CONF_UNSET_PTR;
    lcf->screen_views = NGX_CONF_UNSET_UINT;
    lcf->convert_timestamps = NGX_CONF_UNSET;
    lcf->device_events = NGX_CONF_UNSET_PTR;
    lcf->events_allow = NGX_CONF_UNSET_PTR;
    lcf->events_deny = NGX_CONF_UNSET_PTR;
    lcf->consent_deny = NGX_CONF_UNSET_PTR;
    lcf->cors = NGX_CONF_UNSET_UINT;
    lcf->cors_credentials = NGX_CONF_UNSET;
    lcf->max_call_size = NGX_CONF_UNSET_SIZE;
    lcf->max_batch_size = NGX_CONF_UNSET_SIZE;
    lcf->max_batch_calls = NGX_CONF_UNSET_UINT;

    return lcf;
}


static char *
ngx_http_cio_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_cio_loc_conf_t *prev = parent;
    ngx_http_cio_loc_conf_t *conf = child;

    ngx_http_cio_loc_conf_t   *slcf;
    ngx_http_core_srv_conf_t  *cscf;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    /*
     * An "if" or "limit_except" block inside a cio location: nginx runs
     * the location's handler with the block's configuration, as it does
     * proxy_pass's.  No cio directive is allowed in such a block, so it
     * is the location's in all but name, and its workspace too.
     */
    if ((clcf->noname || clcf->lmt_excpt)
        && conf->ingest == NGX_HTTP_CIO_INGEST_OFF
        && prev->ingest != NGX_HTTP_CIO_INGEST_OFF)
    {
        conf->ingest = prev->ingest;
        conf->ingest_file = prev->ingest_file;
        conf->ingest_line = prev->ingest_line;
        conf->ws = prev->ws;
    }

    /* methods a limit_except names are not run by the location's handler */
    if (clcf->lmt_excpt && clcf->handler == NULL
        && conf->ingest != NGX_HTTP_CIO_INGEST_OFF)
    {
        clcf->handler = ngx_http_cio_handler;
    }

    ngx_conf_merge_str_value(conf->site_id, prev->site_id, "");
    ngx_conf_merge_str_value(conf->api_key, prev->api_key, "");
    ngx_conf_merge_str_value(conf->endpoint, prev->endpoint, "");
    ngx_conf_merge_uint_value(conf->region, prev->region,
                              NGX_HTTP_CIO_REGION_US);
    ngx_conf_merge_ptr_value(conf->write_keys, prev->write_keys, NULL);
    ngx_conf_merge_uint_value(conf->screen_views, prev->screen_views, 0);
    ngx_conf_merge_value(conf->convert_timestamps, prev->convert_timestamps,
                         1);
    ngx_conf_merge_ptr_value(conf->device_events, prev->device_events, NULL);
    ngx_conf_merge_ptr_value(conf->events_allow, prev->events_allow, NULL);
    ngx_conf_merge_ptr_value(conf->events_deny, prev->events_deny, NULL);
    ngx_conf_merge_ptr_value(conf->consent_deny, prev->consent_deny, NULL);

    if (conf->cors == NGX_CONF_UNSET_UINT) {
        conf->cors = (prev->cors == NGX_CONF_UNSET_UINT)
                     ? NGX_HTTP_CIO_CORS_ANY : prev->cors;
        conf->cors_origins = prev->cors_origins;
    }
    ngx_conf_merge_value(conf->cors_credentials, prev->cors_credentials, 0);
    ngx_conf_merge_size_value(conf->max_call_size, prev->max_call_size,
                              32 * 1024);
    ngx_conf_merge_size_value(conf->max_batch_size, prev->max_batch_size,
                              500 * 1024);
    ngx_conf_merge_uint_value(conf->max_batch_calls, prev->max_batch_calls,
                              NGX_HTTP_CIO_MAP_MAX_BATCH_CALLS);

    ngx_http_cio_map_options(conf);

    if (conf->ingest == NGX_HTTP_CIO_INGEST_OFF) {
        return NGX_CONF_OK;
    }

    /* credentials for any origin would let every site act as the user */
    if (conf->cors_credentials && conf->cors != NGX_HTTP_CIO_CORS_LIST) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"cio_cors_credentials on\" needs a list of "
                           "origins in \"cio_cors_origins\"");
        return NGX_CONF_ERROR;
    }

    if (conf->ws == NULL && ngx_http_cio_workspace(cf, conf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_http_cio_check_body_size(cf, conf);

    /*
     * The server learns that it has an ingest location: requests nginx
     * answers before choosing a location keep the write key out of the
     * logs too (ngx_http_cio_log_handler).
     */
    cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);
    slcf = cscf->ctx->loc_conf[ngx_http_cio_module.ctx_index];
    slcf->server_ingest = 1;

    return NGX_CONF_OK;
}


/* what the mapper is told for every request of the location */

static void
ngx_http_cio_map_options(ngx_http_cio_loc_conf_t *lcf)
{
    ngx_http_cio_map_opts_t  *opts;

    opts = &lcf->map_opts;

    ngx_memzero(opts, sizeof(ngx_http_cio_map_opts_t));

    opts->max_item_size = NGX_HTTP_CIO_MAP_MAX_ITEM_SIZE;
    opts->max_batch_calls = lcf->max_batch_calls;
    opts->screen_native = lcf->screen_views;
    opts->convert_timestamps = lcf->convert_timestamps;

    if (lcf->device_events) {
        opts->device_events = lcf->device_events->elts;
        opts->ndevice_events = lcf->device_events->nelts;
    }

    if (lcf->events_allow) {
        opts->events_allow = lcf->events_allow->elts;
        opts->nevents_allow = lcf->events_allow->nelts;
    }

    if (lcf->events_deny) {
        opts->events_deny = lcf->events_deny->elts;
        opts->nevents_deny = lcf->events_deny->nelts;
    }

    if (lcf->consent_deny) {
        opts->consent_deny = lcf->consent_deny->elts;
        opts->nconsent_deny = lcf->consent_deny->nelts;
    }
}


/* the workspace an ingest location feeds, shared by equal locations */

static ngx_int_t
ngx_http_cio_workspace(ngx_conf_t *cf, ngx_http_cio_loc_conf_t *lcf)
{
    u_char                    *p;
    ngx_str_t                  base;
    ngx_uint_t                 i;
    ngx_http_cio_ws_t         *ws, **wsp;
    ngx_http_cio_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_cio_module);

    /*
     * Merging runs at the end of the http block, wherever the location
     * is: what is missing is reported at the cio_ingest that needs it.
     */

    if (mcf->shm_zone == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "no \"cio_zone\" is defined in the http block for "
                      "the \"cio_ingest\" directive in %s:%ui",
                      lcf->ingest_file, lcf->ingest_line);
        return NGX_ERROR;
    }

    if (lcf->site_id.len == 0 || lcf->api_key.len == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "no %s defined for the \"cio_ingest\" directive "
                      "(in its location, server or http block) in %s:%ui",
                      lcf->api_key.len ? "\"cio_site_id\" is"
                      : lcf->site_id.len ? "\"cio_api_key\" is"
                      : "\"cio_site_id\" and \"cio_api_key\" are",
                      lcf->ingest_file, lcf->ingest_line);
        return NGX_ERROR;
    }

    if (ngx_strlchr(lcf->site_id.data, lcf->site_id.data + lcf->site_id.len,
                    ':'))
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"cio_site_id\" \"%V\" of the \"cio_ingest\" "
                      "directive contains \":\" in %s:%ui",
                      &lcf->site_id, lcf->ingest_file, lcf->ingest_line);
        return NGX_ERROR;
    }

    if (lcf->endpoint.len) {
        base = lcf->endpoint;

        if (!(base.len > 7 && ngx_strncasecmp(base.data,
                                              (u_char *) "http://", 7) == 0)
            && !(base.len > 8 && ngx_strncasecmp(base.data,
                                                 (u_char *) "https://", 8)
                                 == 0))
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"cio_endpoint\" must be an http:// or https:// "
                          "URL, not \"%V\", for the \"cio_ingest\" "
                          "directive in %s:%ui",
                          &base, lcf->ingest_file, lcf->ingest_line);
            return NGX_ERROR;
        }

        while (base.len && base.data[base.len - 1] == '/') {
            base.len--;
        }

    } else if (lcf->region == NGX_HTTP_CIO_REGION_EU) {
        ngx_str_set(&base, "https://track-eu.customer.io");

    } else {
        ngx_str_set(&base, "https://track.customer.io");
    }

    ws = ngx_pcalloc(cf->pool, sizeof(ngx_http_cio_ws_t));
    if (ws == NULL) {
        return NGX_ERROR;
    }

    ws->url.len = base.len + sizeof("/api/v2/batch") - 1;
    ws->url.data = ngx_pnalloc(cf->pool, ws->url.len);
    if (ws->url.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(ws->url.data, base.data, base.len);
    ngx_memcpy(p, "/api/v2/batch", sizeof("/api/v2/batch") - 1);

    ws->userpwd.len = lcf->site_id.len + 1 + lcf->api_key.len;
    ws->userpwd.data = ngx_pnalloc(cf->pool, ws->userpwd.len);
    if (ws->userpwd.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ws->userpwd.data, "%V:%V", &lcf->site_id, &lcf->api_key);

    ws->site_id = lcf->site_id;

    wsp = mcf->workspaces.elts;

    /* the zone keeps one queue, with one key, per site and endpoint */

    for (i = 0; i < mcf->workspaces.nelts; i++) {
        if (wsp[i]->url.len != ws->url.len
            || wsp[i]->site_id.len != ws->site_id.len
            || ngx_memcmp(wsp[i]->url.data, ws->url.data, ws->url.len) != 0
            || ngx_memcmp(wsp[i]->site_id.data, ws->site_id.data,
                          ws->site_id.len)
               != 0)
        {
            continue;
        }

        if (wsp[i]->userpwd.len != ws->userpwd.len
            || ngx_memcmp(wsp[i]->userpwd.data, ws->userpwd.data,
                          ws->userpwd.len)
               != 0)
        {
            ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                          "site \"%V\" has another \"cio_api_key\" in an "
                          "earlier location with the same endpoint: their "
                          "events share one queue and are all sent with "
                          "the earlier key, for the \"cio_ingest\" "
                          "directive in %s:%ui",
                          &ws->site_id, lcf->ingest_file, lcf->ingest_line);
        }

        lcf->ws = wsp[i];
        return NGX_OK;
    }

    wsp = ngx_array_push(&mcf->workspaces);
    if (wsp == NULL) {
        return NGX_ERROR;
    }

    *wsp = ws;
    lcf->ws = ws;

    return NGX_OK;
}


/*
 * A batch nginx refuses before the handler sees it gets nginx's own 413
 * page instead of Segment's answer: worth a word, not an error, since
 * client_max_body_size may be lowered on purpose.
 */

static void
ngx_http_cio_check_body_size(ngx_conf_t *cf, ngx_http_cio_loc_conf_t *lcf)
{
    ngx_http_core_loc_conf_t  *clcf;

    /* nginx merges the core module's locations before any other module's */
    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->client_max_body_size
        && (off_t) lcf->max_batch_size > clcf->client_max_body_size)
    {
        ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                      "\"cio_max_batch_size\" %uz is over "
                      "\"client_max_body_size\" %O: nginx answers larger "
                      "batches with its own 413 page, raise "
                      "\"client_max_body_size\" for the \"cio_ingest\" "
                      "directive in %s:%ui",
                      lcf->max_batch_size, clcf->client_max_body_size,
                      lcf->ingest_file, lcf->ingest_line);
    }
}


/* "cio_zone zone=NAME:SIZE;", as limit_req_zone and keyval_zone have it */

static char *
ngx_http_cio_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cio_main_conf_t *mcf = conf;

    u_char               *p;
    ssize_t               size;
    ngx_str_t            *value, name, s;
    ngx_uint_t            i;
    ngx_shm_zone_t       *shm_zone;
    ngx_http_cio_zone_t  *zone;

    if (mcf->shm_zone) {
        return "is duplicate: one zone serves all the locations, "
               "declare it once in the http block";
    }

    value = cf->args->elts;

    ngx_str_null(&name);
    size = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (name.len == 0
            && ngx_strncmp(value[i].data, "zone=", 5) == 0)
        {
            name.data = value[i].data + 5;

            p = (u_char *) ngx_strchr(name.data, ':');

            if (p == NULL || p == name.data) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid zone \"%V\", it must be like "
                                   "\"zone=cio:64m\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            name.len = p - name.data;

            s.data = p + 1;
            s.len = value[i].data + value[i].len - s.data;

            size = ngx_parse_size(&s);

            if (size == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid zone size \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            if (size < (ssize_t) (8 * ngx_pagesize)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "zone \"%V\" is too small, "
                                   "it needs at least %uzk",
                                   &name, 8 * ngx_pagesize / 1024);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\", the zone is "
                           "given as \"zone=NAME:SIZE\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have the \"zone=NAME:SIZE\" "
                           "parameter", &cmd->name);
        return NGX_CONF_ERROR;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_cio_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->workspaces = &mcf->workspaces;

    shm_zone = ngx_shared_memory_add(cf, &name, size, &ngx_http_cio_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate zone \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    shm_zone->init = ngx_http_cio_queue_init_zone;
    shm_zone->data = zone;

    mcf->shm_zone = shm_zone;

    return NGX_CONF_OK;
}


static char *
ngx_http_cio_ingest(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cio_loc_conf_t *lcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->ingest != NGX_HTTP_CIO_INGEST_OFF) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "segment") == 0) {
        lcf->ingest = NGX_HTTP_CIO_INGEST_SEGMENT;

    } else if (ngx_strcmp(value[1].data, "amplitude") == 0) {
        lcf->ingest = NGX_HTTP_CIO_INGEST_AMPLITUDE;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\", it must be \"segment\" "
                           "or \"amplitude\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    lcf->ingest_file = cf->conf_file->file.name.data;
    lcf->ingest_line = cf->conf_file->line;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_cio_handler;

    return NGX_CONF_OK;
}


/* ngx_conf_set_enum_slot() that names the values it accepts */

static char *
ngx_http_cio_enum(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    u_char           *last, *q;
    ngx_str_t        *value;
    ngx_uint_t       *np, i;
    ngx_conf_enum_t  *e;
    u_char            list[256];

    np = (ngx_uint_t *) (p + cmd->offset);

    if (*np != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    e = cmd->post;

    for (i = 0; e[i].name.len != 0; i++) {
        if (e[i].name.len == value[1].len
            && ngx_strcasecmp(e[i].name.data, value[1].data) == 0)
        {
            *np = e[i].value;
            return NGX_CONF_OK;
        }
    }

    q = list;
    last = list + sizeof(list);

    for (i = 0; e[i].name.len != 0; i++) {
        q = ngx_slprintf(q, last, "%s\"%V\"",
                         i == 0 ? "" : e[i + 1].name.len ? ", " : " or ",
                         &e[i].name);
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\", it must be %*s",
                       &value[1], (size_t) (q - list), list);

    return NGX_CONF_ERROR;
}


/*
 * "cio_write_key k1 k2 ...;" and repeated directives add up, so a key can
 * be rotated by listing the old and the new one side by side.
 */

static char *
ngx_http_cio_write_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cio_loc_conf_t *lcf = conf;

    ngx_str_t   *value, *key;
    ngx_uint_t   i;

    if (lcf->write_keys == NGX_CONF_UNSET_PTR) {
        lcf->write_keys = ngx_array_create(cf->pool, 2, sizeof(ngx_str_t));
        if (lcf->write_keys == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (value[i].len == 0) {
            return "has an empty key";
        }

        key = ngx_array_push(lcf->write_keys);
        if (key == NULL) {
            return NGX_CONF_ERROR;
        }

        *key = value[i];
    }

    return NGX_CONF_OK;
}


/*
 * Lists of event names or consent categories.  The mapper wants C strings;
 * configuration words are NUL-terminated already.
 */

static char *
ngx_http_cio_names(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    char         **name;
    ngx_str_t     *value;
    ngx_uint_t     i;
    ngx_array_t  **a;

    a = (ngx_array_t **) (p + cmd->offset);

    if (*a != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    *a = ngx_array_create(cf->pool, cf->args->nelts - 1, sizeof(char *));
    if (*a == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (value[i].len == 0 || value[i].len > 150) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid name \"%V\", it must be 1 to "
                               "150 bytes", &value[i]);
            return NGX_CONF_ERROR;
        }

        name = ngx_array_push(*a);
        if (name == NULL) {
            return NGX_CONF_ERROR;
        }

        *name = (char *) value[i].data;
    }

    return NGX_CONF_OK;
}


/*
 * The CA bundle the sender thread trusts for https endpoints (a private
 * CA in front of Customer.io, or a test's).  Checked here, so that a typo
 * fails "nginx -t" rather than every delivery.
 */

static char *
ngx_http_cio_trusted_certificate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_cio_main_conf_t *mcf = conf;

    ngx_str_t  *value;

    if (mcf->trusted_certificate.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    mcf->trusted_certificate = value[1];

    /* ngx_conf_full_name() leaves the name NUL-terminated for libcurl */
    if (ngx_conf_full_name(cf->cycle, &mcf->trusted_certificate, 1)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (access((char *) mcf->trusted_certificate.data, R_OK) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot read \"%V\"",
                           &mcf->trusted_certificate);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* "cio_cors_origins off | * | ORIGIN ...;" */

static char *
ngx_http_cio_cors_origins(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cio_loc_conf_t *lcf = conf;

    ngx_str_t   *value, *origin;
    ngx_uint_t   i;

    if (lcf->cors != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        lcf->cors = NGX_HTTP_CIO_CORS_OFF;
        return NGX_CONF_OK;
    }

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "*") == 0) {
        lcf->cors = NGX_HTTP_CIO_CORS_ANY;
        return NGX_CONF_OK;
    }

    lcf->cors = NGX_HTTP_CIO_CORS_LIST;
    lcf->cors_origins = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                         sizeof(ngx_str_t));
    if (lcf->cors_origins == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        /* an origin is scheme://host[:port], with nothing after it */
        if ((ngx_strncmp(value[i].data, "http://", 7) != 0
             && ngx_strncmp(value[i].data, "https://", 8) != 0)
            || value[i].data[value[i].len - 1] == '/')
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid origin \"%V\", it must be like "
                               "\"https://www.example.com\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        origin = ngx_array_push(lcf->cors_origins);
        if (origin == NULL) {
            return NGX_CONF_ERROR;
        }

        *origin = value[i];
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_cio_retry_backoff(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cio_main_conf_t *mcf = conf;

    ngx_str_t   *value;
    ngx_msec_t   v;
    ngx_uint_t   i;

    if (mcf->backoff_min != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        v = ngx_parse_time(&value[i], 0);

        if (v == (ngx_msec_t) NGX_ERROR || v == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid backoff \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (i == 1) {
            mcf->backoff_min = v;

        } else {
            mcf->backoff_max = v;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_cio_check_batch_size(ngx_conf_t *cf, void *post, void *data)
{
    size_t *sp = data;

    if (*sp > NGX_HTTP_CIO_MAX_BATCH) {
        return "must not be over 500000, Customer.io's request limit";
    }

    if (*sp < NGX_HTTP_CIO_MIN_BATCH) {
        return "must be at least 40000, to hold the largest event";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_cio_dead_letter_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_cio_main_conf_t *mcf = conf;

    ngx_str_t  *value;

    if (mcf->dead_letter != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        mcf->dead_letter = NULL;
        return NGX_CONF_OK;
    }

    /* opened, and reopened on USR1, by nginx itself, as access logs are */
    mcf->dead_letter = ngx_conf_open_file(cf->cycle, &value[1]);
    if (mcf->dead_letter == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * "cio_rate 100r/s [burst=N]", "cio_rate 6000r/m", "cio_rate off": the
 * requests a second every workspace may send, all workers together.
 */

static char *
ngx_http_cio_rate(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cio_main_conf_t *mcf = conf;

    u_char      *p;
    size_t       len;
    ngx_int_t    rate, scale, burst;
    ngx_str_t   *value;
    ngx_uint_t   i;

    if (mcf->rate != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;
    burst = NGX_CONF_UNSET;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (cf->args->nelts > 2) {
            return "takes no burst when \"off\"";
        }

        mcf->rate = 0;
        mcf->burst = 0;
        return NGX_CONF_OK;
    }

    len = value[1].len;
    p = value[1].data + len - 3;
    scale = 1;

    if (len > 3 && ngx_strncmp(p, "r/s", 3) == 0) {
        len -= 3;

    } else if (len > 3 && ngx_strncmp(p, "r/m", 3) == 0) {
        scale = 60;
        len -= 3;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid rate \"%V\", it must be like 100r/s "
                           "or 6000r/m", &value[1]);
        return NGX_CONF_ERROR;
    }

    rate = ngx_atoi(value[1].data, len);

    if (rate <= 0 || rate > 1000000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid rate \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            burst = ngx_atoi(value[i].data + 6, value[i].len - 6);

            if (burst <= 0 || burst > 1000000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid burst \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    mcf->rate = rate * 1000 / scale;

    /* a second's worth by default: Customer.io averages over seconds */
    if (burst == NGX_CONF_UNSET) {
        burst = ngx_max(rate / scale, 1);
    }

    mcf->burst = burst;

    return NGX_CONF_OK;
}


/*
 * cio_journal PATH [max_size=SIZE] [sync=always|TIME|off];
 */

static char *
ngx_http_cio_journal(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cio_main_conf_t *mcf = conf;

    off_t        max_size;
    u_char      *p;
    ngx_str_t   *value, path, s;
    ngx_msec_t   interval;
    ngx_uint_t   i, sync;

    if (mcf->journal) {
        return "is duplicate";
    }

    value = cf->args->elts;

    path = value[1];

    /* relative to the prefix, as nginx's own paths are */
    if (ngx_conf_full_name(cf->cycle, &path, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    while (path.len > 1 && path.data[path.len - 1] == '/') {
        path.len--;
    }

    p = ngx_pnalloc(cf->pool, path.len + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(p, path.data, path.len);
    p[path.len] = '\0';
    path.data = p;

    max_size = 1024 * 1024 * 1024;
    sync = NGX_HTTP_CIO_J_SYNC_TIMER;
    interval = 1000;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "max_size=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            max_size = ngx_parse_offset(&s);

            if (max_size == NGX_ERROR
                || max_size < NGX_HTTP_CIO_J_MIN_SIZE)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid max_size \"%V\", at least "
                                   "128k", &s);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "sync=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            if (s.len == 3 && ngx_strncmp(s.data, "off", 3) == 0) {
                sync = NGX_HTTP_CIO_J_SYNC_OFF;
                continue;
            }

            if (s.len == 6 && ngx_strncmp(s.data, "always", 6) == 0) {
                sync = NGX_HTTP_CIO_J_SYNC_ALWAYS;
                continue;
            }

            interval = ngx_parse_time(&s, 0);

            if (interval == (ngx_msec_t) NGX_ERROR || interval == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid sync \"%V\": always, off or a "
                                   "time", &s);
                return NGX_CONF_ERROR;
            }

            sync = NGX_HTTP_CIO_J_SYNC_TIMER;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    mcf->journal = ngx_http_cio_journal_add(cf, &path, max_size, sync,
                                            interval);

    return mcf->journal ? NGX_CONF_OK : NGX_CONF_ERROR;
}


static char *
ngx_http_cio_spool(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cio_main_conf_t *mcf = conf;

    ngx_str_t  *value;

    if (mcf->spool.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        ngx_str_set(&mcf->spool, "");
        mcf->spool.len = 0;
        return NGX_CONF_OK;
    }

    mcf->spool = value[1];

    /* relative to the prefix, as nginx's own paths are */
    if (ngx_conf_full_name(cf->cycle, &mcf->spool, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_cio_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t   *clcf;
    ngx_http_cio_main_conf_t   *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_cio_module);

    if (mcf->shm_zone == NULL) {
        return "needs a \"cio_zone\" before it in the http block";
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_cio_status_handler;

    return NGX_CONF_OK;
}


/*
 * The master, once the cycle's zones are set up: the zone's lifecycle on
 * a reload is queue.c's; a zone new to this master gets the spool.  Not
 * for "nginx -t", which creates a zone too and must leave the file alone.
 */

static ngx_int_t
ngx_http_cio_init_module(ngx_cycle_t *cycle)
{
    ngx_uint_t                 fresh;
    ngx_http_cio_zone_t       *zone, *ozone;
    ngx_http_cio_main_conf_t  *mcf, *omcf;

    if (ngx_test_config) {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_cio_module);
    zone = (mcf && mcf->shm_zone) ? mcf->shm_zone->data : NULL;

    /* ngx_cycle is still the cycle being replaced, if any */

    omcf = ngx_is_init_cycle(ngx_cycle)
           ? NULL
           : ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                                 ngx_http_cio_module);
    ozone = (omcf && omcf->shm_zone) ? omcf->shm_zone->data : NULL;

    fresh = ngx_http_cio_queue_start(zone, ozone, cycle->log);

    ngx_http_cio_journal_cycle(omcf ? omcf->journal : NULL,
                               mcf ? mcf->journal : NULL);

    /* its directory is checked and locked when its zone is made */
    if (zone
        && ngx_http_cio_journal_start(cycle, mcf->journal, zone, fresh)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (fresh) {
        ngx_http_cio_spool_load(cycle, &mcf->spool, zone);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_cio_init_process(ngx_cycle_t *cycle)
{
    ngx_http_cio_main_conf_t  *mcf;

    /* cache managers and loaders run this too */
    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_cio_module);

    if (mcf == NULL || mcf->shm_zone == NULL) {
        return NGX_OK;
    }

    /*
     * A zone kept over a reload learns of new workspaces (and new API
     * keys) here, from the worker, which may wait for the lock: the
     * master may not (queue.c).  A workspace without room answers 503.
     */
    (void) ngx_http_cio_queue_workspaces(mcf->shm_zone->data, cycle->log);

    /*
     * a worker that cannot send still queues; the others deliver, and
     * failing here would keep nginx from ever respawning it
     */

    ngx_http_cio_journal_init_process(cycle, mcf->journal);

    (void) ngx_http_cio_deliver_init(cycle, mcf);

    return NGX_OK;
}


static void
ngx_http_cio_exit_process(ngx_cycle_t *cycle)
{
    /* settles what the sender still had, then the journal syncs */
    ngx_http_cio_deliver_exit(cycle);
    ngx_http_cio_journal_exit_process(cycle);

    ngx_http_cio_map_release();
}


/* "nginx -s quit" and "-s stop", once every worker has exited */

static void
ngx_http_cio_exit_master(ngx_cycle_t *cycle)
{
    ngx_http_cio_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_cio_module);

    if (mcf == NULL || mcf->shm_zone == NULL
        || mcf->shm_zone->data == NULL)
    {
        return;
    }

    ngx_http_cio_spool_save(cycle, &mcf->spool, mcf->shm_zone->data,
                            mcf->journal);
}
