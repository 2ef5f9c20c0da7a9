
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
#include "ngx_http_cio_inflate.h"


#define NGX_HTTP_CIO_INGEST_OFF       0
#define NGX_HTTP_CIO_INGEST_SEGMENT   1
#define NGX_HTTP_CIO_INGEST_AMPLITUDE 2

#define NGX_HTTP_CIO_CORS_ANY         0
#define NGX_HTTP_CIO_CORS_LIST        1
#define NGX_HTTP_CIO_CORS_OFF         2

#define NGX_HTTP_CIO_CORS_MAX_AGE     "86400"

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
    ngx_array_t                 *events_allow;     /* of char * */
    ngx_array_t                 *events_deny;      /* of char * */
    ngx_array_t                 *consent_deny;     /* of char * */
    ngx_uint_t                   cors;
    ngx_array_t                 *cors_origins;     /* of ngx_str_t */
    size_t                       max_call_size;
    size_t                       max_batch_size;
    ngx_uint_t                   max_batch_calls;
    ngx_http_cio_ws_t           *ws;
} ngx_http_cio_loc_conf_t;


typedef struct {
    ngx_str_t                    name;
    ngx_int_t                    type;
} ngx_http_cio_route_t;


/* what happened to a request, for $cio_* variables in access logs */
typedef struct {
    const char                  *status;       /* queued, rejected, ... */
    const char                  *event_type;   /* track, batch, ... */
    const char                  *reason;       /* the error sent back */
    ngx_uint_t                   events;       /* calls in the request */
} ngx_http_cio_ctx_t;


static ngx_int_t ngx_http_cio_handler(ngx_http_request_t *r);
static void ngx_http_cio_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_cio_process(ngx_http_request_t *r,
    ngx_int_t route);
static ngx_int_t ngx_http_cio_route(ngx_http_request_t *r);
static ngx_http_cio_ctx_t *ngx_http_cio_ctx(ngx_http_request_t *r);
static ngx_uint_t ngx_http_cio_refused_calls(ngx_http_cio_map_result_t *res);
static void ngx_http_cio_count_reject(ngx_http_request_t *r,
    ngx_http_cio_loc_conf_t *lcf, ngx_uint_t status, ngx_uint_t n);
static ngx_int_t ngx_http_cio_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_cio_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_cio_log_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_cio_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_cio_cors(ngx_http_request_t *r,
    ngx_http_cio_loc_conf_t *lcf);
static ngx_int_t ngx_http_cio_preflight(ngx_http_request_t *r);
static ngx_int_t ngx_http_cio_header_out(ngx_http_request_t *r,
    const char *key, u_char *value, size_t len);
static ngx_int_t ngx_http_cio_decode_body(ngx_http_request_t *r,
    ngx_str_t *body, size_t max, ngx_int_t *answer);
static void ngx_http_cio_free(void *data);
static ngx_int_t ngx_http_cio_amplitude_answer(ngx_http_request_t *r,
    ngx_http_cio_map_result_t *res, size_t received);
static ngx_int_t ngx_http_cio_amplitude_invalid(ngx_http_request_t *r,
    ngx_http_cio_map_result_t *res);
static ngx_uint_t ngx_http_cio_amplitude_field(const char *error);
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


static ngx_http_variable_t  ngx_http_cio_vars[] = {

    { ngx_string("cio_status"), NULL, ngx_http_cio_variable,
      offsetof(ngx_http_cio_ctx_t, status), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("cio_event_type"), NULL, ngx_http_cio_variable,
      offsetof(ngx_http_cio_ctx_t, event_type), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("cio_reject_reason"), NULL, ngx_http_cio_variable,
      offsetof(ngx_http_cio_ctx_t, reason), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("cio_events"), NULL, ngx_http_cio_variable,
      offsetof(ngx_http_cio_ctx_t, events), NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
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
    ngx_int_t                 rc, route;
    ngx_http_cio_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cio_module);

    rc = ngx_http_cio_cors(r, lcf);

    if (rc != NGX_OK) {
        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (ngx_http_discard_request_body(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_cio_error(r, NGX_HTTP_FORBIDDEN,
                                  "origin not allowed");
    }

    route = ngx_http_cio_route(r);

    if (route == NGX_HTTP_CIO_ROUTE_NONE) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_cio_error(r, NGX_HTTP_NOT_FOUND, "unknown route");
    }

    if (r->method == NGX_HTTP_OPTIONS) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_cio_preflight(r);
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
    size_t                      max, received;
    ngx_int_t                   rc;
    ngx_str_t                   body, key, *items;
    ngx_uint_t                  i, j, n, authed, amplitude, refused;
    ngx_http_cio_zone_t        *zone;
    ngx_http_cio_loc_conf_t    *lcf;
    ngx_http_cio_main_conf_t   *mcf;
    ngx_http_cio_ctx_t         *ctx;
    ngx_http_cio_map_opts_t     opts;
    ngx_http_cio_map_call_t    *call;
    ngx_http_cio_map_result_t   res;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cio_module);
    mcf = ngx_http_get_module_main_conf(r, ngx_http_cio_module);

    amplitude = (route == NGX_HTTP_CIO_CALL_AMPLITUDE);
    authed = (lcf->write_keys == NULL);

    /* Amplitude has no header credential: its api_key is in the body */
    if (!authed && !amplitude) {
        rc = ngx_http_cio_header_key(r, &key);

        if (rc == NGX_DECLINED
            && ngx_http_arg(r, (u_char *) "writeKey", 8, &key) == NGX_OK)
        {
            /* RudderStack's beacon route: /beacon/v1/batch?writeKey=... */
            rc = NGX_OK;
        }

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_OK) {
            if (!ngx_http_cio_key_allowed(lcf->write_keys, key.data,
                                          key.len))
            {
                ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                              "cio: invalid write key in the "
                              "Authorization header or the query");
                return ngx_http_cio_error(r, NGX_HTTP_UNAUTHORIZED,
                                          "invalid write key");
            }

            authed = 1;
        }
    }

    if (ngx_http_cio_read_body(r, &body) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    received = body.len;

    max = (route == NGX_HTTP_CIO_CALL_BATCH || amplitude)
          ? lcf->max_batch_size : lcf->max_call_size;

    /* limits apply to what the body inflates to, as rudder-server does */
    if (ngx_http_cio_decode_body(r, &body, max, &rc) != NGX_OK) {
        return rc;
    }

    if (body.len == 0) {
        return ngx_http_cio_error(r, NGX_HTTP_BAD_REQUEST,
                                  "request body is empty");
    }

    if (body.len > max) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "cio: request body of %uz bytes is over the %uz "
                      "bytes limit", body.len, max);
        return ngx_http_cio_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                  route == NGX_HTTP_CIO_CALL_BATCH
                                  || amplitude
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

    if (lcf->events_allow) {
        opts.events_allow = lcf->events_allow->elts;
        opts.nevents_allow = lcf->events_allow->nelts;
    }

    if (lcf->events_deny) {
        opts.events_deny = lcf->events_deny->elts;
        opts.nevents_deny = lcf->events_deny->nelts;
    }

    if (lcf->consent_deny) {
        opts.consent_deny = lcf->consent_deny->elts;
        opts.nconsent_deny = lcf->consent_deny->nelts;
    }

    ngx_memzero(&res, sizeof(ngx_http_cio_map_result_t));

    if (ngx_http_cio_map_request((char *) body.data, body.len, &opts, &res)
        != 0)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "cio: rejected request: %s", res.error);

        /*
         * A body that cannot be read cannot show a key: 401 unless a
         * key was checked in the header already.  Amplitude's SDKs
         * expect a 400 here, and its key is only ever in the body.
         */
        if (!authed && !amplitude) {
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
                          "cio: %s is missing or invalid",
                          amplitude ? "api_key" : "write key");
            rc = ngx_http_cio_error(r, NGX_HTTP_UNAUTHORIZED,
                                    amplitude
                                    ? "invalid or missing api_key"
                                    : "write key is missing or invalid");
            goto done;
        }
    }

    ctx = ngx_http_cio_ctx(r);
    if (ctx == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    ctx->events = res.ncalls;
    ctx->event_type = (route == NGX_HTTP_CIO_CALL_BATCH || amplitude)
                      ? ngx_http_cio_call_name((int) route)
                      : ngx_http_cio_call_name(res.calls[0].type);

    refused = ngx_http_cio_refused_calls(&res);

    if (amplitude && refused) {
        /*
         * Amplitude refuses a request with an invalid event as a whole and
         * names the events; its SDKs drop those and send the rest again.
         */
        ngx_http_cio_count_reject(r, lcf, NGX_HTTP_BAD_REQUEST, refused);
        rc = ngx_http_cio_amplitude_invalid(r, &res);
        goto done;

    } else if (!amplitude && route != NGX_HTTP_CIO_CALL_BATCH
               && res.calls[0].error[0])
    {
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

    if (n) {
        zone = mcf->shm_zone->data;

        rc = ngx_http_cio_queue_push(zone, lcf->ws->sh, items, n);

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

        /* a full batch need not wait for the flush timer */
        if (lcf->ws->sh->pending_bytes >= mcf->batch_size) {
            ngx_http_cio_deliver_kick();
        }
    }

    if (res.nfiltered) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "cio: %uz calls filtered out", res.nfiltered);
        ngx_http_cio_stats_filtered(mcf->shm_zone->data, lcf->ws->sh,
                                    res.nfiltered);
    }

    /* the calls of a batch refused one by one, in a 200 answer */
    if (refused) {
        ngx_http_cio_count_reject(r, lcf, NGX_HTTP_BAD_REQUEST, refused);
    }

    if (res.changes) {
        ngx_http_cio_log_changes(r, res.changes);
    }

    ctx->status = (n == 0 && res.nfiltered) ? "filtered" : "queued";

    rc = amplitude ? ngx_http_cio_amplitude_answer(r, &res, received)
                   : ngx_http_cio_answer(r, &res);

done:

    ngx_http_cio_map_result_free(&res);

    return rc;
}


static void
ngx_http_cio_count_reject(ngx_http_request_t *r, ngx_http_cio_loc_conf_t *lcf,
    ngx_uint_t status, ngx_uint_t n)
{
    ngx_uint_t                 reason;
    ngx_http_cio_main_conf_t  *mcf;

    if (lcf->ws == NULL || lcf->ws->sh == NULL) {
        return;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cio_module);

    switch (status) {
    case NGX_HTTP_BAD_REQUEST:
        reason = NGX_HTTP_CIO_REJ_INVALID;
        break;
    case NGX_HTTP_UNAUTHORIZED:
        reason = NGX_HTTP_CIO_REJ_UNAUTHORIZED;
        break;
    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        reason = NGX_HTTP_CIO_REJ_TOO_LARGE;
        break;
    case NGX_HTTP_SERVICE_UNAVAILABLE:
        reason = NGX_HTTP_CIO_REJ_FULL;
        break;
    default:
        reason = NGX_HTTP_CIO_REJ_OTHER;
    }

    ngx_http_cio_stats_reject(mcf->shm_zone->data, lcf->ws->sh, reason, n);
}


/* the calls the mapper refused, each with its error */

static ngx_uint_t
ngx_http_cio_refused_calls(ngx_http_cio_map_result_t *res)
{
    ngx_uint_t  i, n;

    n = 0;

    for (i = 0; i < res->ncalls; i++) {
        n += (res->calls[i].error[0] != '\0');
    }

    return n;
}


static ngx_http_cio_ctx_t *
ngx_http_cio_ctx(ngx_http_request_t *r)
{
    ngx_http_cio_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cio_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_cio_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ngx_http_set_ctx(r, ctx, ngx_http_cio_module);
    }

    return ctx;
}


static ngx_int_t
ngx_http_cio_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_cio_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


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

    return NGX_OK;
}


/*
 * The write key is the Basic user name, which $remote_user (in nginx's
 * default "combined" format) would write to every access log line, also
 * for answers nginx gives itself (413 over client_max_body_size, 408).
 * It is a credential: in cio locations the variable is always empty.
 */

static ngx_int_t
ngx_http_cio_log_handler(ngx_http_request_t *r)
{
    ngx_http_cio_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cio_module);

    if (lcf != NULL && lcf->ingest != NGX_HTTP_CIO_INGEST_OFF) {
        ngx_str_set(&r->headers_in.user, "");
        r->headers_in.user.len = 0;
    }

    return NGX_OK;
}


/* empty ("not found") outside cio locations, so logs show "-" */

static ngx_int_t
ngx_http_cio_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char              *p;
    const char          *s;
    ngx_http_cio_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cio_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (data == offsetof(ngx_http_cio_ctx_t, events)) {
        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->len = ngx_sprintf(p, "%ui", ctx->events) - p;
        v->data = p;

    } else {
        s = *(const char **) ((char *) ctx + data);

        if (s == NULL) {
            v->not_found = 1;
            return NGX_OK;
        }

        v->len = ngx_strlen(s);
        v->data = (u_char *) s;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* the route is the tail of the URI: ".../v1/track", ".../v1/t", ... */

static ngx_int_t
ngx_http_cio_route(ngx_http_request_t *r)
{
    u_char                   *p, *end;
    ngx_str_t                 name;
    ngx_http_cio_route_t     *rt;
    ngx_http_cio_loc_conf_t  *lcf;

    end = r->uri.data + r->uri.len;

    if (end > r->uri.data && end[-1] == '/') {
        end--;
    }

    for (p = end; p > r->uri.data && p[-1] != '/'; p--) {
        /* void */
    }

    name.data = p;
    name.len = end - p;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cio_module);

    if (lcf->ingest == NGX_HTTP_CIO_INGEST_AMPLITUDE) {
        /* HTTP V2 ".../2/httpapi" and Batch Event Upload ".../batch" */
        if ((name.len == 7 && ngx_strncmp(name.data, "httpapi", 7) == 0
             && p - r->uri.data >= 3 && ngx_strncmp(p - 3, "/2/", 3) == 0)
            || (name.len == 5 && ngx_strncmp(name.data, "batch", 5) == 0))
        {
            return NGX_HTTP_CIO_CALL_AMPLITUDE;
        }

        return NGX_HTTP_CIO_ROUTE_NONE;
    }

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


/*
 * CORS for the browser SDKs.  An allowed Origin is echoed with credentials
 * allowed (analytics-next sends an Authorization header, so "*" would not
 * do); NGX_DECLINED: the origin is not on the cio_cors_origins list.
 */

static ngx_int_t
ngx_http_cio_cors(ngx_http_request_t *r, ngx_http_cio_loc_conf_t *lcf)
{
    ngx_str_t        *o;
    ngx_uint_t        i;
    ngx_table_elt_t  *origin;

    if (lcf->cors == NGX_HTTP_CIO_CORS_OFF) {
        return NGX_OK;
    }

    origin = ngx_http_cio_header_in(r, "origin", 6);

    if (origin == NULL || origin->value.len == 0) {
        return NGX_OK;
    }

    if (lcf->cors == NGX_HTTP_CIO_CORS_LIST) {
        o = lcf->cors_origins->elts;

        for (i = 0; i < lcf->cors_origins->nelts; i++) {
            if (o[i].len == origin->value.len
                && ngx_strncasecmp(o[i].data, origin->value.data, o[i].len)
                   == 0)
            {
                break;
            }
        }

        if (i == lcf->cors_origins->nelts) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "cio: origin \"%V\" is not in cio_cors_origins",
                          &origin->value);
            return NGX_DECLINED;
        }
    }

    if (ngx_http_cio_header_out(r, "Access-Control-Allow-Origin",
                                origin->value.data, origin->value.len)
        != NGX_OK
        || ngx_http_cio_header_out(r, "Access-Control-Allow-Credentials",
                                   (u_char *) "true", 4)
           != NGX_OK
        || ngx_http_cio_header_out(r, "Vary", (u_char *) "Origin", 6)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_cio_preflight(ngx_http_request_t *r)
{
    ngx_table_elt_t  *h;

    h = ngx_http_cio_header_in(r, "access-control-request-headers", 30);

    /*
     * Echoing the requested headers covers what each SDK adds:
     * authorization, content-type, anonymousid, sentat, rsa-*.
     */
    if ((h && h->value.len
         && ngx_http_cio_header_out(r, "Access-Control-Allow-Headers",
                                    h->value.data, h->value.len)
            != NGX_OK)
        || ngx_http_cio_header_out(r, "Access-Control-Allow-Methods",
                                   (u_char *) "POST, OPTIONS", 13)
           != NGX_OK
        || ngx_http_cio_header_out(r, "Access-Control-Max-Age",
                                   (u_char *) NGX_HTTP_CIO_CORS_MAX_AGE,
                                   sizeof(NGX_HTTP_CIO_CORS_MAX_AGE) - 1)
           != NGX_OK
        || ngx_http_cio_header_out(r, "Allow", (u_char *) "POST, OPTIONS",
                                   13)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_NO_CONTENT;
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    return ngx_http_send_header(r);
}


/* nginx 1.22 has no headers_in field for these: a case-insensitive scan */

ngx_table_elt_t *
ngx_http_cio_header_in(ngx_http_request_t *r, const char *name, size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


static ngx_int_t
ngx_http_cio_header_out(ngx_http_request_t *r, const char *key,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = value;
    h->value.len = len;

    return NGX_OK;
}


/*
 * Content-Encoding: gzip (analytics-kotlin, analytics-python, the Rudder
 * node SDK by default) or deflate.  nginx's gunzip module only handles
 * responses, so request bodies are inflated here, bounded by the limit.
 * NGX_DONE: the request has been answered with *answer.
 */

static ngx_int_t
ngx_http_cio_decode_body(ngx_http_request_t *r, ngx_str_t *body, size_t max,
    ngx_int_t *answer)
{
    int                  rc;
    size_t               len;
    u_char              *out;
    ngx_str_t           *enc;
    const char          *err;
    ngx_table_elt_t     *h;
    ngx_pool_cleanup_t  *cln;

    h = ngx_http_cio_header_in(r, "content-encoding", 16);

    if (h == NULL || h->value.len == 0) {
        return NGX_OK;
    }

    enc = &h->value;

    if (enc->len == 8 && ngx_strncasecmp(enc->data, (u_char *) "identity", 8)
                         == 0)
    {
        return NGX_OK;
    }

    if (!((enc->len == 4
           && ngx_strncasecmp(enc->data, (u_char *) "gzip", 4) == 0)
          || (enc->len == 6
              && ngx_strncasecmp(enc->data, (u_char *) "x-gzip", 6) == 0)
          || (enc->len == 7
              && ngx_strncasecmp(enc->data, (u_char *) "deflate", 7) == 0)))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "cio: unsupported Content-Encoding \"%V\"", enc);
        *answer = ngx_http_cio_error(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                     "unsupported Content-Encoding, "
                                     "use gzip or deflate");
        return NGX_DONE;
    }

    if (body->len == 0) {
        return NGX_OK;
    }

    rc = ngx_http_cio_inflate(body->data, body->len, max, &out, &len, &err);

    if (rc == -2) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "cio: %V request body inflates past the %uz bytes "
                      "limit", enc, max);
        *answer = ngx_http_cio_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                     "body is larger than the limit after "
                                     "decompression");
        return NGX_DONE;
    }

    if (rc != 0 && err == ngx_http_cio_inflate_nomem) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "cio: no memory to inflate a %uz bytes %V body",
                      body->len, enc);
        *answer = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_DONE;
    }

    if (rc != 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "cio: %V request body: %s", enc, err);

        /* name what the sender declared, whatever the bytes looked like */
        *answer = ngx_http_cio_error(r, NGX_HTTP_BAD_REQUEST,
                                     enc->data[0] == 'd' || enc->data[0] == 'D'
                                     ? "body is not valid deflate data"
                                     : "body is not valid gzip data");
        return NGX_DONE;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        free(out);
        *answer = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_DONE;
    }

    /* the inflated body is freed with the request, whatever the path */
    cln->handler = ngx_http_cio_free;
    cln->data = out;

    body->data = out;
    body->len = len;

    return NGX_OK;
}


static void
ngx_http_cio_free(void *data)
{
    free(data);
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


/*
 * {"success":false,"error":"..."} for the Segment routes; Amplitude's SDKs
 * read "code" from the body rather than the status, so their routes get
 * {"code":N,"error":"..."}.
 */

static ngx_int_t
ngx_http_cio_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *error)
{
    size_t                    len;
    u_char                   *p, *body;
    ngx_http_cio_ctx_t       *ctx;
    ngx_http_cio_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cio_module);

    ctx = ngx_http_cio_ctx(r);
    len = ngx_strlen(error);

    ngx_http_cio_count_reject(r, lcf, status, 1);

    if (ctx) {
        /* the mapper's messages are freed before the log phase */
        p = ngx_pnalloc(r->pool, len + 1);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_cpystrn(p, (u_char *) error, len + 1);
        ctx->reason = (char *) p;
        ctx->status = (status == NGX_HTTP_UNAUTHORIZED) ? "unauthorized"
                      : (status == NGX_HTTP_SERVICE_UNAVAILABLE) ? "full"
                      : (status >= NGX_HTTP_INTERNAL_SERVER_ERROR) ? "error"
                      : "rejected";
    }

    body = ngx_pnalloc(r->pool, sizeof("{\"success\":false,\"error\":\"\"}")
                                + NGX_INT_T_LEN + len
                                + ngx_escape_json(NULL, (u_char *) error,
                                                  len));
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (lcf->ingest == NGX_HTTP_CIO_INGEST_AMPLITUDE) {
        p = ngx_sprintf(body, "{\"code\":%ui,\"error\":\"", status);

    } else {
        p = ngx_cpymem(body, "{\"success\":false,\"error\":\"",
                       sizeof("{\"success\":false,\"error\":\"") - 1);
    }

    p = (u_char *) ngx_escape_json(p, (u_char *) error, len);
    p = ngx_cpymem(p, "\"}", 2);

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        if (ngx_http_cio_header_out(r, "Retry-After",
                                    (u_char *) NGX_HTTP_CIO_FULL_RETRY_AFTER,
                                    sizeof(NGX_HTTP_CIO_FULL_RETRY_AFTER) - 1)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else if (status == NGX_HTTP_NOT_ALLOWED) {
        if (ngx_http_cio_header_out(r, "Allow", (u_char *) "POST, OPTIONS",
                                    13)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_cio_send(r, status, body, p - body);
}


/* Amplitude's HTTP V2 success answer; "code" is what its SDKs check */

static ngx_int_t
ngx_http_cio_amplitude_answer(ngx_http_request_t *r,
    ngx_http_cio_map_result_t *res, size_t received)
{
    u_char      *body, *p;
    ngx_time_t  *tp;

    body = ngx_pnalloc(r->pool, sizeof("{\"code\":200,\"events_ingested\":,"
                                       "\"payload_size_bytes\":,"
                                       "\"server_upload_time\":}")
                                + 3 * NGX_INT64_LEN);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    tp = ngx_timeofday();

    p = ngx_sprintf(body, "{\"code\":200,\"events_ingested\":%uz,"
                    "\"payload_size_bytes\":%uz,\"server_upload_time\":%M}",
                    res->ncalls, received,
                    (ngx_msec_t) tp->sec * 1000 + tp->msec);

    return ngx_http_cio_send(r, NGX_HTTP_OK, body, p - body);
}


/*
 * A 400 in Amplitude's shape: the indexes of the invalid events under
 * "events_with_missing_fields" / "events_with_invalid_fields", so that the
 * SDK drops exactly those and sends the others again.
 */

static ngx_int_t
ngx_http_cio_amplitude_invalid(ngx_http_request_t *r,
    ngx_http_cio_map_result_t *res)
{
    size_t               len;
    u_char              *body, *p;
    ngx_uint_t           i, f, k, n, first;
    const char          *e;
    ngx_http_cio_ctx_t  *ctx;

    static const char  *fields[] = { "event_type", "user_id", "event" };

    len = sizeof("{\"code\":400,\"error\":\"Request has invalid events\","
                 "\"events_with_missing_fields\":{},"
                 "\"events_with_invalid_fields\":{}}")
          + res->ncalls * (NGX_INT_T_LEN + 1)
          + 6 * sizeof("\"event_type\":[],");

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "{\"code\":400,\"error\":\"Request has invalid "
                    "events\"");

    /* kind 0: a required field is missing; kind 1: a field is invalid */

    for (k = 0; k < 2; k++) {
        p = ngx_sprintf(p, k == 0 ? ",\"events_with_missing_fields\":{"
                                  : ",\"events_with_invalid_fields\":{");
        first = 1;

        for (f = 0; f < 3; f++) {
            n = 0;

            for (i = 0; i < res->ncalls; i++) {
                e = res->calls[i].error;

                if (e[0] == '\0'
                    || (ngx_strstr(e, "required") != NULL) != (k == 0)
                    || ngx_http_cio_amplitude_field(e) != f)
                {
                    continue;
                }

                if (n++ == 0) {
                    p = ngx_sprintf(p, "%s\"%s\":[", first ? "" : ",",
                                    fields[f]);
                    first = 0;

                } else {
                    *p++ = ',';
                }

                p = ngx_sprintf(p, "%ui", i);
            }

            if (n) {
                *p++ = ']';
            }
        }

        *p++ = '}';
    }

    *p++ = '}';

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "cio: rejected Amplitude request with invalid events");

    ctx = ngx_http_cio_ctx(r);

    if (ctx) {
        ctx->status = "rejected";
        ctx->reason = "Request has invalid events";
    }

    return ngx_http_cio_send(r, NGX_HTTP_BAD_REQUEST, body, p - body);
}


/* which Amplitude field a mapper error is about: an index into fields[] */

static ngx_uint_t
ngx_http_cio_amplitude_field(const char *error)
{
    if (ngx_strncmp(error, "event_type", 10) == 0) {
        return 0;
    }

    if (ngx_strncmp(error, "user_id", 7) == 0) {
        return 1;
    }

    return 2;
}


static ngx_int_t
ngx_http_cio_send(ngx_http_request_t *r, ngx_uint_t status, u_char *body,
    size_t len)
{
    static ngx_str_t  json = ngx_string("application/json");

    return ngx_http_cio_send_type(r, status, &json, body, len);
}


/* the whole answer from one buffer: the ingest routes' and cio_status' */

ngx_int_t
ngx_http_cio_send_type(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *body, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    r->headers_out.content_type = *type;
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
    lcf->events_allow = NGX_CONF_UNSET_PTR;
    lcf->events_deny = NGX_CONF_UNSET_PTR;
    lcf->consent_deny = NGX_CONF_UNSET_PTR;
    lcf->cors = NGX_CONF_UNSET_UINT;
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
    ngx_conf_merge_ptr_value(conf->events_allow, prev->events_allow, NULL);
    ngx_conf_merge_ptr_value(conf->events_deny, prev->events_deny, NULL);
    ngx_conf_merge_ptr_value(conf->consent_deny, prev->consent_deny, NULL);

    if (conf->cors == NGX_CONF_UNSET_UINT) {
        conf->cors = (prev->cors == NGX_CONF_UNSET_UINT)
                     ? NGX_HTTP_CIO_CORS_ANY : prev->cors;
        conf->cors_origins = prev->cors_origins;
    }
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

    } else if (ngx_strcmp(value[1].data, "amplitude") == 0) {
        lcf->ingest = NGX_HTTP_CIO_INGEST_AMPLITUDE;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\", it must be \"segment\" "
                           "or \"amplitude\"", &value[1]);
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
