
/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * The nginx glue: directives, the ingest handler, the zone and the worker
 * hooks.  The mapping itself lives in src/ngx_http_cio_map.c, the queue in
 * src/ngx_http_cio_queue.c, and delivery in src/ngx_http_cio_deliver.c and
 * src/ngx_http_cio_sender.c.
 */


#include "ngx_http_cio.h"
#include "ngx_http_cio_map.h"


#define NGX_HTTP_CIO_INGEST_OFF       0
#define NGX_HTTP_CIO_INGEST_SEGMENT   1

#define NGX_HTTP_CIO_REGION_US        0
#define NGX_HTTP_CIO_REGION_EU        1

#define NGX_HTTP_CIO_ROUTE_NONE       -1
#define NGX_HTTP_CIO_ROUTE_METRICS    -2

#define NGX_HTTP_CIO_MAX_BATCH        500000
#define NGX_HTTP_CIO_MIN_BATCH        40000
#define NGX_HTTP_CIO_FULL_RETRY_AFTER "5"


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
    size_t                       max_call_size;
    size_t                       max_batch_size;
    ngx_uint_t                   max_batch_calls;
    ngx_http_cio_ws_t           *ws;
} ngx_http_cio_loc_conf_t;


typedef struct {
    ngx_str_t                    name;
    ngx_int_t                    type;
} ngx_http_cio_route_t;


static ngx_int_t ngx_http_cio_handler(ngx_http_request_t *r);
static void ngx_http_cio_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_cio_process(ngx_http_request_t *r,
    ngx_int_t route);
static ngx_int_t ngx_http_cio_route(ngx_http_request_t *r);
static void ngx_http_cio_log_changes(ngx_http_request_t *r,
    ngx_uint_t changes);
static ngx_int_t ngx_http_cio_read_body(ngx_http_request_t *r,
    ngx_str_t *body);
static ngx_int_t ngx_http_cio_header_key(ngx_http_request_t *r,
    ngx_str_t *key);
static ngx_uint_t ngx_http_cio_key_allowed(ngx_array_t *keys, u_char *key,
    size_t len);
static ngx_int_t ngx_http_cio_answer(ngx_http_request_t *r,
    ngx_http_cio_map_result_t *res);
static ngx_int_t ngx_http_cio_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *error);
static ngx_int_t ngx_http_cio_send(ngx_http_request_t *r,
    ngx_uint_t status, u_char *body, size_t len);

static ngx_int_t ngx_http_cio_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void *ngx_http_cio_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_cio_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_cio_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_cio_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_cio_workspace(ngx_conf_t *cf,
    ngx_http_cio_loc_conf_t *lcf);
static char *ngx_http_cio_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cio_ingest(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cio_write_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cio_device_events(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cio_retry_backoff(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cio_check_batch_size(ngx_conf_t *cf, void *post,
    void *data);
static ngx_int_t ngx_http_cio_init_process(ngx_cycle_t *cycle);
static void ngx_http_cio_exit_process(ngx_cycle_t *cycle);


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


static ngx_http_cio_route_t  ngx_http_cio_routes[] = {
    { ngx_string("identify"), NGX_HTTP_CIO_CALL_IDENTIFY },
    { ngx_string("i"), NGX_HTTP_CIO_CALL_IDENTIFY },
    { ngx_string("track"), NGX_HTTP_CIO_CALL_TRACK },
    { ngx_string("t"), NGX_HTTP_CIO_CALL_TRACK },
    { ngx_string("page"), NGX_HTTP_CIO_CALL_PAGE },
    { ngx_string("p"), NGX_HTTP_CIO_CALL_PAGE },
    { ngx_string("screen"), NGX_HTTP_CIO_CALL_SCREEN },
    { ngx_string("s"), NGX_HTTP_CIO_CALL_SCREEN },
    { ngx_string("group"), NGX_HTTP_CIO_CALL_GROUP },
    { ngx_string("g"), NGX_HTTP_CIO_CALL_GROUP },
    { ngx_string("alias"), NGX_HTTP_CIO_CALL_ALIAS },
    { ngx_string("a"), NGX_HTTP_CIO_CALL_ALIAS },
    { ngx_string("batch"), NGX_HTTP_CIO_CALL_BATCH },
    { ngx_string("b"), NGX_HTTP_CIO_CALL_BATCH },
    { ngx_string("import"), NGX_HTTP_CIO_CALL_BATCH },
    { ngx_string("m"), NGX_HTTP_CIO_ROUTE_METRICS },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_cio_commands[] = {

    { ngx_string("cio_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
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
      ngx_conf_set_enum_slot,
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
      ngx_conf_set_enum_slot,
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
      ngx_http_cio_device_events,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
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
      ngx_http_cio_rate_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cio_dead_letter"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_cio_dead_letter_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cio_spool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_cio_spool_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cio_drain_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cio_main_conf_t, drain_timeout),
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
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

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
    ngx_http_cio_spool_init_module,        /* init module */
    ngx_http_cio_init_process,             /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_cio_exit_process,             /* exit process */
    ngx_http_cio_spool_exit_master,        /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_cio_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc, route;

    route = ngx_http_cio_route(r);

    if (route == NGX_HTTP_CIO_ROUTE_NONE) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_cio_error(r, NGX_HTTP_NOT_FOUND, "unknown route");
    }

    if (r->method != NGX_HTTP_POST) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_cio_error(r, NGX_HTTP_NOT_ALLOWED,
                                  "method not allowed, use POST");
    }

    if (route == NGX_HTTP_CIO_ROUTE_METRICS) {
        /* analytics.js telemetry: accepted, not forwarded */
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_cio_send(r, NGX_HTTP_OK,
                                 (u_char *) "{\"success\":true}",
                                 sizeof("{\"success\":true}") - 1);
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_cio_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_cio_body_handler(ngx_http_request_t *r)
{
    ngx_http_finalize_request(r,
                              ngx_http_cio_process(r, ngx_http_cio_route(r)));
}


static ngx_int_t
ngx_http_cio_process(ngx_http_request_t *r, ngx_int_t route)
{
    size_t                      max;
    ngx_int_t                   rc;
    ngx_str_t                   body, key, *items;
    ngx_uint_t                  i, j, n, authed;
    ngx_http_cio_zone_t        *zone;
    ngx_http_cio_loc_conf_t    *lcf;
    ngx_http_cio_main_conf_t   *mcf;
    ngx_http_cio_map_opts_t     opts;
    ngx_http_cio_map_call_t    *call;
    ngx_http_cio_map_result_t   res;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cio_module);
    mcf = ngx_http_get_module_main_conf(r, ngx_http_cio_module);

    authed = (lcf->write_keys == NULL);

    if (!authed) {
        rc = ngx_http_cio_header_key(r, &key);

        if (rc == NGX_OK) {
            if (!ngx_http_cio_key_allowed(lcf->write_keys, key.data,
                                          key.len))
            {
                ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                              "cio: invalid write key in the "
                              "Authorization header");
                return ngx_http_cio_error(r, NGX_HTTP_UNAUTHORIZED,
                                          "invalid write key");
            }

            authed = 1;
        }
    }

    if (ngx_http_cio_read_body(r, &body) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (body.len == 0) {
        return ngx_http_cio_error(r, NGX_HTTP_BAD_REQUEST,
                                  "request body is empty");
    }

    max = (route == NGX_HTTP_CIO_CALL_BATCH) ? lcf->max_batch_size
                                            : lcf->max_call_size;

    if (body.len > max) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "cio: request body of %uz bytes is over the %uz "
                      "bytes limit", body.len, max);
        return ngx_http_cio_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                  route == NGX_HTTP_CIO_CALL_BATCH
                                  ? "batch is larger than the limit"
                                  : "call is larger than the limit");
    }

    ngx_memzero(&opts, sizeof(ngx_http_cio_map_opts_t));
    opts.route = (int) route;
    opts.received_ms = (int64_t) r->start_sec * 1000 + r->start_msec;
    opts.max_item_size = 32768;
    opts.max_batch_calls = lcf->max_batch_calls;
    opts.screen_native = lcf->screen_views;
    opts.convert_timestamps = lcf->convert_timestamps;

    if (lcf->device_events) {
        opts.device_events = lcf->device_events->elts;
        opts.ndevice_events = lcf->device_events->nelts;
    }

    ngx_memzero(&res, sizeof(ngx_http_cio_map_result_t));

    if (ngx_http_cio_map_request((char *) body.data, body.len, &opts, &res)
        != 0)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "cio: rejected request: %s", res.error);

        /* a key in the header is checked before the body is believed */
        if (!authed) {
            rc = ngx_http_cio_error(r, NGX_HTTP_UNAUTHORIZED,
                                    "write key is missing or invalid");
        } else {
            rc = ngx_http_cio_error(r, NGX_HTTP_BAD_REQUEST, res.error);
        }

        goto done;
    }

    if (!authed) {
        if (res.write_key == NULL
            || !ngx_http_cio_key_allowed(lcf->write_keys,
                                         (u_char *) res.write_key,
                                         ngx_strlen(res.write_key)))
        {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "cio: write key is missing or invalid");
            rc = ngx_http_cio_error(r, NGX_HTTP_UNAUTHORIZED,
                                    "write key is missing or invalid");
            goto done;
        }
    }

    if (route != NGX_HTTP_CIO_CALL_BATCH && res.calls[0].error[0]) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "cio: rejected %s call: %s",
                      ngx_http_cio_call_name(res.calls[0].type),
                      res.calls[0].error);
        rc = ngx_http_cio_error(r, NGX_HTTP_BAD_REQUEST, res.calls[0].error);
        goto done;
    }

    n = 0;

    for (i = 0; i < res.ncalls; i++) {
        n += res.calls[i].nitems;
    }

    items = ngx_palloc(r->pool, (n ? n : 1) * sizeof(ngx_str_t));
    if (items == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    n = 0;

    for (i = 0; i < res.ncalls; i++) {
        call = &res.calls[i];

        for (j = 0; j < (ngx_uint_t) call->nitems; j++) {
            items[n].data = (u_char *) call->item[j];
            items[n].len = call->item_len[j];
            n++;
        }
    }

    zone = mcf->shm_zone->data;

    rc = ngx_http_cio_queue_push(zone, lcf->ws->sh, items, n,
                                 mcf->max_events);

    if (rc == NGX_BUSY) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "cio: queue is full, %ui events refused with 503",
                      n);
        rc = ngx_http_cio_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                "queue is full, retry later");
        goto done;
    }

    if (rc != NGX_OK) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    if (res.changes) {
        ngx_http_cio_log_changes(r, res.changes);
    }

    /* a full batch need not wait for the flush timer */
    if (lcf->ws->sh->pending_bytes >= mcf->batch_size) {
        ngx_http_cio_deliver_kick();
    }

    rc = ngx_http_cio_answer(r, &res);

done:

    ngx_http_cio_map_result_free(&res);

    return rc;
}


/* the route is the tail of the URI: ".../v1/track", ".../v1/t", ... */

static ngx_int_t
ngx_http_cio_route(ngx_http_request_t *r)
{
    u_char                *p, *end;
    ngx_str_t              name;
    ngx_http_cio_route_t  *rt;

    end = r->uri.data + r->uri.len;

    if (end > r->uri.data && end[-1] == '/') {
        end--;
    }

    for (p = end; p > r->uri.data && p[-1] != '/'; p--) {
        /* void */
    }

    name.data = p;
    name.len = end - p;

    if (p - r->uri.data < 4 || ngx_strncmp(p - 4, "/v1/", 4) != 0) {
        return NGX_HTTP_CIO_ROUTE_NONE;
    }

    for (rt = ngx_http_cio_routes; rt->name.len; rt++) {
        if (rt->name.len == name.len
            && ngx_strncmp(rt->name.data, name.data, name.len) == 0)
        {
            return rt->type;
        }
    }

    return NGX_HTTP_CIO_ROUTE_NONE;
}


/* the body in one piece, also when nginx buffered it to a file */

static ngx_int_t
ngx_http_cio_read_body(ngx_http_request_t *r, ngx_str_t *body)
{
    off_t         size;
    size_t        len;
    u_char       *p;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    body->len = 0;
    body->data = (u_char *) "";

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        len += b->in_file ? (size_t) (b->file_last - b->file_pos)
                          : (size_t) (b->last - b->pos);
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            size = b->file_last - b->file_pos;

            n = ngx_read_file(b->file, p, (size_t) size, b->file_pos);

            if (n == NGX_ERROR) {
                return NGX_ERROR;
            }

            if (n != size) {
                ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                              "cio: read only %z of %O bytes from "
                              "the request body file", n, size);
                return NGX_ERROR;
            }

            p += n;

        } else if (b->last != b->pos) {
            /* an empty body arrives as a buffer with pos == NULL */
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    *p = '\0';
    body->len = p - body->data;

    return NGX_OK;
}


/*
 * Names cut and attributes dropped to fit Customer.io's limits change what
 * the user sent, so they are never silent; but one line per request would
 * flood the log, so a worker sums them and writes at most a line a second.
 */

static void
ngx_http_cio_log_changes(ngx_http_request_t *r, ngx_uint_t changes)
{
    static time_t      logged;
    static ngx_uint_t  pending;

    pending += changes;

    if (ngx_time() == logged) {
        return;
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "cio: %ui names or attributes cut or dropped to fit "
                  "Customer.io's limits since the last such line (names "
                  "100 bytes, attribute names 150, values 1000, "
                  "300 attributes)", pending);

    logged = ngx_time();
    pending = 0;
}


/*
 * "Authorization: Basic base64(key:)": the write key is the user name.
 * NGX_DECLINED: no such header, so the key may be in the body.
 */

static ngx_int_t
ngx_http_cio_header_key(ngx_http_request_t *r, ngx_str_t *key)
{
    u_char     *colon;
    ngx_str_t   encoded, decoded;

    if (r->headers_in.authorization == NULL) {
        return NGX_DECLINED;
    }

    encoded = r->headers_in.authorization->value;

    if (encoded.len < sizeof("Basic ") - 1
        || ngx_strncasecmp(encoded.data, (u_char *) "Basic ",
                           sizeof("Basic ") - 1)
           != 0)
    {
        /* Bearer tokens (OAuth) come with the write key in the body */
        return NGX_DECLINED;
    }

    encoded.len -= sizeof("Basic ") - 1;
    encoded.data += sizeof("Basic ") - 1;

    while (encoded.len && *encoded.data == ' ') {
        encoded.len--;
        encoded.data++;
    }

    decoded.len = ngx_base64_decoded_length(encoded.len);
    decoded.data = ngx_pnalloc(r->pool, decoded.len + 1);
    if (decoded.data == NULL) {
        return NGX_ERROR;
    }

    if (ngx_decode_base64(&decoded, &encoded) != NGX_OK) {
        key->len = 0;
        key->data = decoded.data;
        return NGX_OK;
    }

    colon = ngx_strlchr(decoded.data, decoded.data + decoded.len, ':');

    key->data = decoded.data;
    key->len = colon ? (size_t) (colon - decoded.data) : decoded.len;

    return NGX_OK;
}


/* in time that depends on the length offered, never on the keys */

static ngx_uint_t
ngx_http_cio_key_allowed(ngx_array_t *keys, u_char *key, size_t len)
{
    u_char      diff;
    size_t      i;
    ngx_str_t  *k;
    ngx_uint_t  n, ok;

    k = keys->elts;
    ok = 0;

    for (n = 0; n < keys->nelts; n++) {
        diff = (u_char) (k[n].len != len);

        for (i = 0; i < len; i++) {
            diff |= k[n].data[i % k[n].len] ^ key[i];
        }

        ok |= (diff == 0);
    }

    return ok && len > 0;
}


static ngx_int_t
ngx_http_cio_answer(ngx_http_request_t *r, ngx_http_cio_map_result_t *res)
{
    size_t                    len;
    u_char                   *p, *body;
    ngx_uint_t                i, rejected;
    ngx_http_cio_map_call_t  *call;

    static u_char  ok[] = "{\"success\":true}";

    len = sizeof("{\"success\":true,\"rejected\":[]}") - 1;
    rejected = 0;

    for (i = 0; i < res->ncalls; i++) {
        call = &res->calls[i];

        if (call->error[0]) {
            rejected++;
            len += sizeof(",{\"index\":,\"error\":\"\"}") - 1 + NGX_INT_T_LEN
                   + ngx_strlen(call->error)
                   + ngx_escape_json(NULL, (u_char *) call->error,
                                     ngx_strlen(call->error));
        }
    }

    if (rejected == 0) {
        return ngx_http_cio_send(r, NGX_HTTP_OK, ok, sizeof(ok) - 1);
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"success\":true,\"rejected\":[",
                   sizeof("{\"success\":true,\"rejected\":[") - 1);

    rejected = 0;

    for (i = 0; i < res->ncalls; i++) {
        call = &res->calls[i];

        if (call->error[0] == '\0') {
            continue;
        }

        p = ngx_sprintf(p, "%s{\"index\":%ui,\"error\":\"",
                        rejected++ ? "," : "", i);
        p = (u_char *) ngx_escape_json(p, (u_char *) call->error,
                                       ngx_strlen(call->error));
        *p++ = '"';
        *p++ = '}';
    }

    *p++ = ']';
    *p++ = '}';

    return ngx_http_cio_send(r, NGX_HTTP_OK, body, p - body);
}


static ngx_int_t
ngx_http_cio_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *error)
{
    size_t            len;
    u_char           *p, *body;
    ngx_table_elt_t  *h;

    len = ngx_strlen(error);

    body = ngx_pnalloc(r->pool, sizeof("{\"success\":false,\"error\":\"\"}")
                                + len
                                + ngx_escape_json(NULL, (u_char *) error,
                                                  len));
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"success\":false,\"error\":\"",
                   sizeof("{\"success\":false,\"error\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, (u_char *) error, len);
    p = ngx_cpymem(p, "\"}", 2);

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE
        || status == NGX_HTTP_NOT_ALLOWED)
    {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;

        if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
            ngx_str_set(&h->key, "Retry-After");
            ngx_str_set(&h->value, NGX_HTTP_CIO_FULL_RETRY_AFTER);

        } else {
            ngx_str_set(&h->key, "Allow");
            ngx_str_set(&h->value, "POST");
        }
    }

    return ngx_http_cio_send(r, status, body, p - body);
}


static ngx_int_t
ngx_http_cio_send(ngx_http_request_t *r, ngx_uint_t status, u_char *body,
    size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_cio_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_uint_t            i;
    ngx_http_cio_ws_t   **ws;
    ngx_http_cio_zone_t  *zone;

    if (ngx_http_cio_queue_init_zone(shm_zone, data) != NGX_OK) {
        return NGX_ERROR;
    }

    zone = shm_zone->data;
    ws = zone->workspaces->elts;

    for (i = 0; i < zone->workspaces->nelts; i++) {
        if (ngx_http_cio_queue_intern(zone, ws[i], shm_zone->shm.log)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

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
     *     mcf->max_events = 0;
     *     mcf->spool = { 0, NULL };
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

    /* Customer.io's conservative guidance (customerio-api.md, limits) */
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
    ngx_conf_merge_size_value(conf->max_call_size, prev->max_call_size,
                              32 * 1024);
    ngx_conf_merge_size_value(conf->max_batch_size, prev->max_batch_size,
                              500 * 1024);
    ngx_conf_merge_uint_value(conf->max_batch_calls, prev->max_batch_calls,
                              2500);

    if (conf->ingest == NGX_HTTP_CIO_INGEST_OFF) {
        return NGX_CONF_OK;
    }

    if (ngx_http_cio_workspace(cf, conf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
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

    if (mcf->shm_zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"cio_ingest\" needs a \"cio_zone\" "
                           "at the http level");
        return NGX_ERROR;
    }

    if (lcf->site_id.len == 0 || lcf->api_key.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"cio_ingest\" needs \"cio_site_id\" and "
                           "\"cio_api_key\"");
        return NGX_ERROR;
    }

    if (ngx_strlchr(lcf->site_id.data, lcf->site_id.data + lcf->site_id.len,
                    ':'))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"cio_site_id\" cannot contain \":\"");
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
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"cio_endpoint\" must be an http:// or "
                               "https:// URL, not \"%V\"", &base);
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

    for (i = 0; i < mcf->workspaces.nelts; i++) {
        if (wsp[i]->url.len == ws->url.len
            && wsp[i]->userpwd.len == ws->userpwd.len
            && ngx_memcmp(wsp[i]->url.data, ws->url.data, ws->url.len) == 0
            && ngx_memcmp(wsp[i]->userpwd.data, ws->userpwd.data,
                          ws->userpwd.len)
               == 0)
        {
            lcf->ws = wsp[i];
            return NGX_OK;
        }
    }

    wsp = ngx_array_push(&mcf->workspaces);
    if (wsp == NULL) {
        return NGX_ERROR;
    }

    *wsp = ws;
    lcf->ws = ws;

    return NGX_OK;
}


static char *
ngx_http_cio_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cio_main_conf_t *mcf = conf;

    ssize_t               size;
    ngx_str_t            *value, name, s;
    ngx_uint_t            i;
    ngx_shm_zone_t       *shm_zone;
    ngx_http_cio_zone_t  *zone;

    if (mcf->shm_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ngx_str_null(&name);
    size = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "name=", 5) == 0) {
            name.data = value[i].data + 5;
            name.len = value[i].len - 5;
            continue;
        }

        if (ngx_strncmp(value[i].data, "size=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

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
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (name.len == 0 || size == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"name=\" and \"size=\" "
                           "parameters", &cmd->name);
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

    shm_zone->init = ngx_http_cio_init_zone;
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

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\", it must be \"segment\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_cio_handler;

    return NGX_CONF_OK;
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
 * Track event names that, besides the standard "Application Installed"
 * and the like, register the device in context.device.token.  The mapper
 * wants C strings; configuration words are NUL-terminated already.
 */

static char *
ngx_http_cio_device_events(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cio_loc_conf_t *lcf = conf;

    char        **name;
    ngx_str_t    *value;
    ngx_uint_t    i;

    if (lcf->device_events != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lcf->device_events = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                          sizeof(char *));
    if (lcf->device_events == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (value[i].len == 0 || value[i].len > 100) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid event name \"%V\", it must be 1 to "
                               "100 bytes", &value[i]);
            return NGX_CONF_ERROR;
        }

        name = ngx_array_push(lcf->device_events);
        if (name == NULL) {
            return NGX_CONF_ERROR;
        }

        *name = (char *) value[i].data;
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
     * a worker that cannot send still queues; the others deliver, and
     * failing here would keep nginx from ever respawning it
     */

    (void) ngx_http_cio_deliver_init(cycle, mcf);

    return NGX_OK;
}


static void
ngx_http_cio_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_cio_deliver_exit(cycle);
}
