/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * The ingest location: the route a URI names, CORS, the write key, the
 * body (read whole, inflated, within the limits), the mapper, and the
 * items into the zone; and the $cio_* variables that tell the access log
 * what became of a request.  The answers are written by
 * ngx_http_cio_reply.c; the zone is queue.c's.
 */


#include "ngx_http_cio.h"
#include "ngx_http_cio_inflate.h"


#define NGX_HTTP_CIO_ROUTE_NONE       -1
#define NGX_HTTP_CIO_ROUTE_METRICS    -2

#define NGX_HTTP_CIO_CORS_MAX_AGE     "86400"

/*
 * What the SDKs send: analytics.js Authorization (and X-Retry-Count on
 * retries), RudderStack's JS SDK AnonymousId, SentAt and its Rsa-* retry
 * headers, Amplitude's Content-Type, gzip senders Content-Encoding.
 */
#define NGX_HTTP_CIO_CORS_HEADERS                                           \
    "authorization, content-type, content-encoding, anonymousid, sentat, "  \
    "x-retry-count, rsa-retry-attempt, rsa-since-last-attempt, "            \
    "rsa-since-first-attempt, rsa-retry-reason, rsa-recovered"

/* where a write key was found: an index into ngx_http_cio_key_errors */
#define NGX_HTTP_CIO_KEY_HEADER       0    /* Authorization or ?writeKey= */
#define NGX_HTTP_CIO_KEY_BODY         1    /* "writeKey" */
#define NGX_HTTP_CIO_KEY_AMPLITUDE    2    /* "api_key" */


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
    ngx_int_t                    route;        /* for the body handler */
    unsigned                     authed:1;     /* no body key needed */
    unsigned                     logged:1;     /* the variables are set */
} ngx_http_cio_ctx_t;


/* a request from its mapping to its answer, which it may wait for */
typedef struct {
    ngx_http_cio_jappend_t       append;     /* into cio_journal */
    ngx_http_cio_jwait_t         wait;       /* for its sync=always */
    ngx_http_request_t          *r;
    ngx_http_cio_loc_conf_t     *lcf;
    ngx_http_cio_map_result_t    res;
    ngx_str_t                   *items;
    ngx_uint_t                   n;
    ngx_uint_t                   refused;
    size_t                       received;
    ngx_uint_t                   amplitude;
} ngx_http_cio_accept_t;


static void ngx_http_cio_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_cio_process(ngx_http_request_t *r,
    ngx_int_t route, ngx_uint_t authed);
static ngx_int_t ngx_http_cio_too_large(ngx_http_request_t *r,
    ngx_http_cio_loc_conf_t *lcf, ngx_int_t route, off_t len,
    ngx_int_t *answer);
static ngx_int_t ngx_http_cio_auth_header(ngx_http_request_t *r,
    ngx_http_cio_loc_conf_t *lcf, ngx_uint_t amplitude, ngx_uint_t *authed,
    ngx_int_t *answer);
static ngx_int_t ngx_http_cio_check_key(ngx_http_request_t *r,
    ngx_http_cio_loc_conf_t *lcf, u_char *key, size_t len, ngx_uint_t where,
    ngx_int_t *answer);
static ngx_int_t ngx_http_cio_body(ngx_http_request_t *r,
    ngx_http_cio_loc_conf_t *lcf, ngx_int_t route, ngx_str_t *body,
    size_t *received, ngx_int_t *answer);
static ngx_int_t ngx_http_cio_screen(ngx_http_request_t *r,
    ngx_http_cio_loc_conf_t *lcf, ngx_int_t route,
    ngx_http_cio_map_result_t *res, ngx_uint_t refused, ngx_int_t *answer);
static ngx_int_t ngx_http_cio_enqueue(ngx_http_cio_accept_t *a);
static void ngx_http_cio_park(ngx_http_request_t *r);
static ngx_uint_t ngx_http_cio_unpark(ngx_http_cio_accept_t *a,
    uint64_t *jrefs, ngx_uint_t written);
static void ngx_http_cio_finalize(ngx_http_cio_accept_t *a, ngx_int_t rc);
static void ngx_http_cio_journal_written(ngx_http_cio_jappend_t *ap);
static ngx_int_t ngx_http_cio_journal_refused(ngx_http_cio_accept_t *a);
static ngx_int_t ngx_http_cio_push(ngx_http_cio_accept_t *a,
    uint64_t *jrefs);
static ngx_int_t ngx_http_cio_queued(ngx_http_cio_accept_t *a,
    ngx_int_t rc);
static ngx_int_t ngx_http_cio_accepted(ngx_http_cio_accept_t *a);
static ngx_int_t ngx_http_cio_answer(ngx_http_cio_accept_t *a);
static ngx_int_t ngx_http_cio_route(ngx_http_request_t *r);
static ngx_http_cio_ctx_t *ngx_http_cio_ctx(ngx_http_request_t *r);
static ngx_uint_t ngx_http_cio_refused_calls(ngx_http_cio_map_result_t *res);
static ngx_uint_t ngx_http_cio_never_fits(ngx_http_request_t *r,
    ngx_http_cio_zone_t *zone, ngx_str_t *items, ngx_uint_t n);
static void ngx_http_cio_count_reject(ngx_http_request_t *r,
    ngx_http_cio_loc_conf_t *lcf, ngx_uint_t status, ngx_uint_t invalid);
static ngx_int_t ngx_http_cio_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_cio_cors(ngx_http_request_t *r,
    ngx_http_cio_loc_conf_t *lcf);
static ngx_int_t ngx_http_cio_preflight(ngx_http_request_t *r,
    ngx_http_cio_loc_conf_t *lcf);
static ngx_int_t ngx_http_cio_decode_body(ngx_http_request_t *r,
    ngx_str_t *body, size_t max, ngx_int_t *answer);
static ngx_int_t ngx_http_cio_wait_journal(ngx_http_cio_accept_t *a);
static void ngx_http_cio_journal_synced(ngx_event_t *ev);
static void ngx_http_cio_free(void *data);
static void ngx_http_cio_log_changes(ngx_http_request_t *r,
    ngx_uint_t changes);
static off_t ngx_http_cio_body_size(ngx_http_request_t *r);
static ngx_int_t ngx_http_cio_read_body(ngx_http_request_t *r,
    off_t len, ngx_str_t *body);
static ngx_int_t ngx_http_cio_header_key(ngx_http_request_t *r,
    ngx_str_t *key);
static ngx_uint_t ngx_http_cio_key_allowed(ngx_array_t *keys, u_char *key,
    size_t len);
static ngx_int_t ngx_http_cio_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *error);
static ngx_int_t ngx_http_cio_refuse(ngx_http_request_t *r,
    ngx_uint_t status, const char *error);
static ngx_int_t ngx_http_cio_note(ngx_http_request_t *r, ngx_uint_t status,
    const char *error);
static ngx_int_t ngx_http_cio_hide_key(ngx_http_request_t *r, ngx_str_t *s,
    ngx_uint_t uri);


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


/* what a refused write key is logged and answered as, by where it was */
static const char  *ngx_http_cio_key_errors[][2] = {
    { "invalid write key in the Authorization header or the query",
      "invalid write key" },
    { "write key is missing or invalid",
      "write key is missing or invalid" },
    { "api_key is missing or invalid",
      "invalid or missing api_key" }
};


ngx_int_t
ngx_http_cio_handler(ngx_http_request_t *r)
{
    ngx_int_t                 rc, route;
    ngx_uint_t                authed;
    ngx_http_cio_ctx_t       *ctx;
    ngx_http_cio_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cio_module);

    rc = ngx_http_cio_cors(r, lcf);

    if (rc != NGX_OK) {
        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_cio_error(r, NGX_HTTP_FORBIDDEN,
                                  "origin not allowed");
    }

    route = ngx_http_cio_route(r);

    if (route == NGX_HTTP_CIO_ROUTE_NONE) {
        return ngx_http_cio_error(r, NGX_HTTP_NOT_FOUND, "unknown route");
    }

    if (r->method == NGX_HTTP_OPTIONS) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_cio_preflight(r, lcf);
    }

    if (r->method != NGX_HTTP_POST) {
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

    /*
     * A key in the header or the query, and the size the sender declares,
     * are checked before the body is read: a wrong key or too large a body
     * is answered without "100 Continue" and never read into memory or a
     * temporary file.
     */
    if (ngx_http_cio_auth_header(r, lcf, route == NGX_HTTP_CIO_CALL_AMPLITUDE,
                                 &authed, &rc)
        != NGX_OK
        || ngx_http_cio_too_large(r, lcf, route,
                                  r->headers_in.content_length_n, &rc)
           != NGX_OK)
    {
        return rc;
    }

    /* the route, once: the body handler finds it here */
    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_cio_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->route = route;
    ctx->authed = authed;
    ngx_http_set_ctx(r, ctx, ngx_http_cio_module);

    rc = ngx_http_read_client_request_body(r, ngx_http_cio_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_cio_body_handler(ngx_http_request_t *r)
{
    ngx_http_cio_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cio_module);

    ngx_http_finalize_request(r, ngx_http_cio_process(r, ctx->route,
                                                      ctx->authed));
}


static ngx_int_t
ngx_http_cio_process(ngx_http_request_t *r, ngx_int_t route,
    ngx_uint_t authed)
{
    size_t                      received;
    ngx_int_t                   rc;
    ngx_str_t                   body;
    ngx_uint_t                  amplitude, refused;
    ngx_http_cio_ctx_t         *ctx;
    ngx_http_cio_accept_t      *a;
    ngx_http_cio_loc_conf_t    *lcf;
    ngx_http_cio_map_opts_t     opts;
    ngx_http_cio_map_result_t   res;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cio_module);

    amplitude = (route == NGX_HTTP_CIO_CALL_AMPLITUDE);

    if (ngx_http_cio_body(r, lcf, route, &body, &received, &rc) != NGX_OK) {
        return rc;
    }

    /* the location's options are set up once, in merge_loc_conf */
    opts = lcf->map_opts;
    opts.route = (int) route;
    opts.received_ms = (int64_t) r->start_sec * 1000 + r->start_msec;

    ngx_memzero(&res, sizeof(ngx_http_cio_map_result_t));

    rc = ngx_http_cio_map_request((char *) body.data, body.len, &opts, &res);

    if (ngx_http_cio_map_out_of_memory(&res)) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "cio: the mapper ran out of memory, answered 500 so "
                      "that the sender sends the request again");
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    if (rc != 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "cio: rejected request: %s", res.error);

        /*
         * A body that cannot be read cannot show a key: 401 unless a
         * key was checked in the header already, or the body, read but
         * refused as a whole (an empty batch, too many calls), has a
         * good one, as analytics.js and the browser SDKs send it.
         * Amplitude's SDKs expect a 400 here, and its key is only ever
         * in the body.
         */
        if (!authed && !amplitude
            && ngx_http_cio_check_key(r, lcf, (u_char *) res.write_key,
                                      res.write_key
                                      ? ngx_strlen(res.write_key) : 0,
                                      NGX_HTTP_CIO_KEY_BODY, &rc)
               != NGX_OK)
        {
            /* answered 401 */

        } else if (amplitude && res.missing_field) {
            /* as Amplitude answers a request without its api_key */
            ngx_http_cio_count_reject(r, lcf, NGX_HTTP_BAD_REQUEST, 0);
            rc = ngx_http_cio_note(r, NGX_HTTP_BAD_REQUEST, res.error);

            if (rc == NGX_OK) {
                rc = ngx_http_cio_reply_amplitude_missing(r, res.error,
                                                          res.missing_field);
            }

        } else if (amplitude && res.too_many) {
            /* Amplitude's own answer: its SDKs send half as many again */
            rc = ngx_http_cio_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                    res.error);

        } else {
            rc = ngx_http_cio_error(r, NGX_HTTP_BAD_REQUEST, res.error);
        }

        goto done;
    }

    if (!authed
        && ngx_http_cio_check_key(r, lcf, (u_char *) res.write_key,
                                  res.write_key ? ngx_strlen(res.write_key)
                                                : 0,
                                  amplitude ? NGX_HTTP_CIO_KEY_AMPLITUDE
                                            : NGX_HTTP_CIO_KEY_BODY,
                                  &rc)
           != NGX_OK)
    {
        goto done;
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

    if (ngx_http_cio_screen(r, lcf, route, &res, refused, &rc) != NGX_OK) {
        goto done;
    }

    a = ngx_pcalloc(r->pool, sizeof(ngx_http_cio_accept_t));
    if (a == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    a->r = r;
    a->lcf = lcf;
    a->res = res;
    a->refused = refused;
    a->received = received;
    a->amplitude = amplitude;

    rc = ngx_http_cio_enqueue(a);

    if (rc != NGX_DONE) {
        ngx_http_cio_map_result_free(&a->res);
    }

    /* NGX_DONE: a->res is the waiting request's */
    return rc;

done:

    ngx_http_cio_map_result_free(&res);

    return rc;
}


/*
 * A key in the Authorization header, or in the query (RudderStack's
 * beacon route, /beacon/v1/batch?writeKey=...), is checked before the body
 * is read; Amplitude has no header credential, its api_key is in the
 * body.  *authed: no key is needed any more.  NGX_DONE: answered, *answer
 * is what to finalize the request with.
 */

static ngx_int_t
ngx_http_cio_auth_header(ngx_http_request_t *r, ngx_http_cio_loc_conf_t *lcf,
    ngx_uint_t amplitude, ngx_uint_t *authed, ngx_int_t *answer)
{
    u_char     *src, *dst;
    ngx_int_t   rc;
    ngx_str_t   key;

    *authed = (lcf->write_keys == NULL);

    if (*authed || amplitude) {
        return NGX_OK;
    }

    rc = ngx_http_cio_header_key(r, &key);

    /* an empty ?writeKey= is none: the body may have the key */
    if (rc == NGX_DECLINED
        && ngx_http_arg(r, (u_char *) "writeKey", 8, &key) == NGX_OK
        && key.len > 0)
    {
        /* a key with "%5F" for "_" is the same key */
        src = key.data;
        dst = ngx_pnalloc(r->pool, key.len + 1);
        if (dst == NULL) {
            *answer = NGX_HTTP_INTERNAL_SERVER_ERROR;
            return NGX_DONE;
        }

        key.data = dst;
        ngx_unescape_uri(&dst, &src, key.len, 0);
        key.len = dst - key.data;

        rc = NGX_OK;
    }

    if (rc == NGX_ERROR) {
        *answer = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_DONE;
    }

    if (rc == NGX_DECLINED) {
        /* the key may be in the body */
        return NGX_OK;
    }

    if (ngx_http_cio_check_key(r, lcf, key.data, key.len,
                               NGX_HTTP_CIO_KEY_HEADER, answer)
        != NGX_OK)
    {
        return NGX_DONE;
    }

    *authed = 1;

    return NGX_OK;
}


/* the one place a write key is checked: NGX_DONE, answered with 401 */

static ngx_int_t
ngx_http_cio_check_key(ngx_http_request_t *r, ngx_http_cio_loc_conf_t *lcf,
    u_char *key, size_t len, ngx_uint_t where, ngx_int_t *answer)
{
    if (key != NULL && ngx_http_cio_key_allowed(lcf->write_keys, key, len)) {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0, "cio: %s",
                  ngx_http_cio_key_errors[where][0]);

    *answer = ngx_http_cio_error(r, NGX_HTTP_UNAUTHORIZED,
                                 ngx_http_cio_key_errors[where][1]);

    return NGX_DONE;
}


/*
 * The body in one piece and inflated, within the route's limit, which
 * applies to what the body inflates to, as rudder-server does, and to the
 * bytes sent.  *received: its size as sent.  NGX_DONE: answered with
 * *answer.
 */

static ngx_int_t
ngx_http_cio_body(ngx_http_request_t *r, ngx_http_cio_loc_conf_t *lcf,
    ngx_int_t route, ngx_str_t *body, size_t *received, ngx_int_t *answer)
{
    off_t   size;
    size_t  max;

    /*
     * a chunked body had no Content-Length to check before: it is checked
     * before it is copied into memory, where client_max_body_size 0 would
     * let one request take hundreds of megabytes of the worker's
     */
    size = ngx_http_cio_body_size(r);

    if (ngx_http_cio_too_large(r, lcf, route, size, answer) != NGX_OK) {
        return NGX_DONE;
    }

    if (ngx_http_cio_read_body(r, size, body) != NGX_OK) {
        *answer = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_DONE;
    }

    *received = body->len;

    max = (route == NGX_HTTP_CIO_CALL_BATCH
           || route == NGX_HTTP_CIO_CALL_AMPLITUDE)
          ? lcf->max_batch_size : lcf->max_call_size;

    if (ngx_http_cio_decode_body(r, body, max, answer) != NGX_OK) {
        return NGX_DONE;
    }

    /* inflating stopped at the limit: the body is within it now */

    if (body->len == 0) {
        *answer = ngx_http_cio_error(r, NGX_HTTP_BAD_REQUEST,
                                     "request body is empty");
        return NGX_DONE;
    }

    return NGX_OK;
}


/*
 * The route's limit applies to the bytes on the wire as well as to what
 * they inflate to: a body declared larger is refused before it is read.
 * len < 0: not known (chunked).  NGX_DONE: answered with *answer (413).
 */

static ngx_int_t
ngx_http_cio_too_large(ngx_http_request_t *r, ngx_http_cio_loc_conf_t *lcf,
    ngx_int_t route, off_t len, ngx_int_t *answer)
{
    size_t      max;
    ngx_uint_t  batch;

    batch = (route == NGX_HTTP_CIO_CALL_BATCH
             || route == NGX_HTTP_CIO_CALL_AMPLITUDE);
    max = batch ? lcf->max_batch_size : lcf->max_call_size;

    if (len <= (off_t) max) {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "cio: request body of %O bytes is over the %uz bytes "
                  "limit", len, max);

    *answer = ngx_http_cio_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                 batch ? "batch is larger than the limit"
                                       : "call is larger than the limit");

    return NGX_DONE;
}


/*
 * Calls the mapper refused that refuse the whole request: any in an
 * Amplitude request (Amplitude refuses such a request as a whole and names
 * the events; its SDKs drop those and send the rest again), and the one
 * call of a single-call route.  A batch's are named in its 200 answer.
 * NGX_DONE: answered with *answer.
 */

static ngx_int_t
ngx_http_cio_screen(ngx_http_request_t *r, ngx_http_cio_loc_conf_t *lcf,
    ngx_int_t route, ngx_http_cio_map_result_t *res, ngx_uint_t refused,
    ngx_int_t *answer)
{
    ngx_http_cio_ctx_t  *ctx;

    if (route == NGX_HTTP_CIO_CALL_AMPLITUDE) {
        if (refused == 0) {
            return NGX_OK;
        }

        ngx_http_cio_count_reject(r, lcf, NGX_HTTP_BAD_REQUEST, refused);

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "cio: rejected Amplitude request with invalid events");

        ctx = ngx_http_cio_ctx(r);

        if (ctx) {
            ctx->status = "rejected";
            ctx->reason = "Request has invalid events";
        }

        *answer = ngx_http_cio_reply_amplitude_invalid(r, res);
        return NGX_DONE;
    }

    if (route == NGX_HTTP_CIO_CALL_BATCH || res->calls[0].error[0] == '\0') {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "cio: rejected %s call: %s",
                  ngx_http_cio_call_name(res->calls[0].type),
                  res->calls[0].error);

    ngx_http_cio_count_reject(r, lcf, NGX_HTTP_BAD_REQUEST, 1);

    *answer = ngx_http_cio_refuse(r, NGX_HTTP_BAD_REQUEST,
                                  res->calls[0].error);

    return NGX_DONE;
}


/*
 * Every call's items, in order, into the zone, with the request's
 * filtered and refused calls counted under the same lock, and answered;
 * with cio_journal, into the journal first: a 200 is never for less
 * (journal.c).  NGX_DONE: the request waits for the journal's write
 * (ngx_http_cio_journal_written) or sync (ngx_http_cio_journal_synced).
 */

static ngx_int_t
ngx_http_cio_enqueue(ngx_http_cio_accept_t *a)
{
    ngx_uint_t                  i, j, n;
    ngx_http_request_t         *r;
    ngx_http_cio_map_call_t    *call;
    ngx_http_cio_map_result_t  *res;
    ngx_http_cio_main_conf_t   *mcf;

    r = a->r;
    res = &a->res;
    mcf = ngx_http_get_module_main_conf(r, ngx_http_cio_module);

    n = 0;

    for (i = 0; i < res->ncalls; i++) {
        n += res->calls[i].nitems;
    }

    a->items = ngx_palloc(r->pool, (n ? n : 1) * sizeof(ngx_str_t));
    if (a->items == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = 0;

    for (i = 0; i < res->ncalls; i++) {
        call = &res->calls[i];

        for (j = 0; j < (ngx_uint_t) call->nitems; j++) {
            a->items[n].data = (u_char *) call->item[j];
            a->items[n].len = call->item_len[j];
            n++;
        }
    }

    a->n = n;

    if (a->lcf->ws->sh != NULL
        && ngx_http_cio_never_fits(r, mcf->shm_zone->data, a->items, n))
    {
        return ngx_http_cio_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                  "request is larger than the queue can "
                                  "ever hold");
    }

    if (mcf->journal == NULL || n == 0 || a->lcf->ws->sh == NULL) {
        return ngx_http_cio_queued(a, ngx_http_cio_push(a, NULL));
    }

    a->append.handler = ngx_http_cio_journal_written;
    a->append.data = a;
    a->append.log = r->connection->log;

    if (ngx_http_cio_journal_append(mcf->journal, a->lcf->ws, a->items, n,
                                    r->pool, &a->append)
        != NGX_OK)
    {
        return ngx_http_cio_journal_refused(a);
    }

    ngx_http_cio_park(r);

    return NGX_DONE;
}


static void
ngx_http_cio_park(ngx_http_request_t *r)
{
    /* blocked: a request terminated meanwhile is not freed under us */
    r->main->count++;
    r->main->blocked++;
}


/*
 * A parked request's turn.  1: it was terminated meanwhile (the block
 * kept it) or its client is gone, and it is finished here: nobody to
 * answer, and with jrefs what was written is queued all the same.  The
 * client retries what it was not answered: said at info, as nginx says
 * a client's own errors, so that the duplicates can be told apart.
 */

static ngx_uint_t
ngx_http_cio_unpark(ngx_http_cio_accept_t *a, uint64_t *jrefs,
    ngx_uint_t written)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = a->r;
    c = r->connection;

    r->main->blocked--;

    if (!c->error) {
        return 0;
    }

    rc = jrefs ? ngx_http_cio_push(a, jrefs) : NGX_OK;

    ngx_log_error(NGX_LOG_INFO, c->log, 0,
                  "cio: the request ended before its answer: its %ui events "
                  "%s", a->n,
                  !written ? "were not written"
                  : (rc == NGX_OK) ? "are in the journal"
                  : "were written, then refused by the queue");

    ngx_http_cio_finalize(a, NGX_ERROR);

    return 1;
}


/*
 * A parked request's end, rc its answer; NGX_DONE: it waits on (for the
 * sync), and its map result goes with it
 */

static void
ngx_http_cio_finalize(ngx_http_cio_accept_t *a, ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = a->r->connection;

    if (rc != NGX_DONE) {
        ngx_http_cio_map_result_free(&a->res);
    }

    ngx_http_finalize_request(a->r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_cio_journal_written(ngx_http_cio_jappend_t *ap)
{
    ngx_int_t               rc;
    ngx_http_cio_accept_t  *a;

    a = ap->data;

    if (ngx_http_cio_unpark(a, (ap->rc == NGX_OK) ? ap->jrefs : NULL,
                            ap->rc == NGX_OK))
    {
        return;
    }

    rc = (ap->rc == NGX_OK)
         ? ngx_http_cio_queued(a, ngx_http_cio_push(a, ap->jrefs))
         : ngx_http_cio_journal_refused(a);

    /* NGX_DONE: waits for the sync, which holds the request on its own */
    ngx_http_cio_finalize(a, rc);
}


static ngx_int_t
ngx_http_cio_journal_refused(ngx_http_cio_accept_t *a)
{
    ngx_http_cio_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(a->r, ngx_http_cio_module);

    ngx_http_cio_queue_reject(mcf->shm_zone->data, a->lcf->ws->sh,
                              NGX_HTTP_CIO_REJ_FULL, 0);

    return ngx_http_cio_refuse(a->r, NGX_HTTP_SERVICE_UNAVAILABLE,
                               "journal cannot take it, retry later");
}


/*
 * The items into the zone; jrefs: where cio_journal has them, NULL: it
 * has not.  NGX_BUSY: the queue is full; NGX_ERROR: they could not be
 * queued.  Nothing is answered here.
 */

static ngx_int_t
ngx_http_cio_push(ngx_http_cio_accept_t *a, uint64_t *jrefs)
{
    ngx_int_t                  rc;
    ngx_http_request_t        *r;
    ngx_http_cio_ws_t         *ws;
    ngx_http_cio_main_conf_t  *mcf;

    r = a->r;
    ws = a->lcf->ws;
    mcf = ngx_http_get_module_main_conf(r, ngx_http_cio_module);

    if (ws->sh == NULL) {
        /* the zone had no room for the workspace when the worker started */
        rc = NGX_BUSY;

    } else {
        rc = ngx_http_cio_queue_push(mcf->shm_zone->data, ws->sh, a->items,
                                     a->n, a->res.nfiltered, a->refused,
                                     jrefs);
    }

    if (rc != NGX_OK && jrefs) {
        /* refused after all: nothing to replay */
        ngx_http_cio_journal_settled(jrefs, NULL, a->n, 0);
    }

    if (rc == NGX_BUSY) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "cio: queue is full, %ui events refused with 503",
                      a->n);
        return NGX_BUSY;
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * a full batch need not wait for the flush timer (read without the
     * lock: a hint, the timer sends it anyway)
     */
    if (a->n && ws->sh->pending_bytes >= mcf->batch_size) {
        ngx_http_cio_deliver_kick();
    }

    if (a->res.nfiltered) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "cio: %uz calls filtered out", a->res.nfiltered);
    }

    return NGX_OK;
}


/* the answer to what ngx_http_cio_push did */

static ngx_int_t
ngx_http_cio_queued(ngx_http_cio_accept_t *a, ngx_int_t rc)
{
    if (rc == NGX_BUSY) {
        /* counted by the push */
        return ngx_http_cio_refuse(a->r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "queue is full, retry later");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_cio_accepted(a);
}


/* queued: the answer, or with sync=always the wait for it */

static ngx_int_t
ngx_http_cio_accepted(ngx_http_cio_accept_t *a)
{
    ngx_int_t            rc;
    ngx_http_request_t  *r;
    ngx_http_cio_ctx_t  *ctx;

    r = a->r;
    ctx = ngx_http_get_module_ctx(r, ngx_http_cio_module);

    if (a->res.changes) {
        ngx_http_cio_log_changes(r, a->res.changes);
    }

    /* a batch of invalid calls is answered 200 with each named: none queued */
    ctx->status = a->n ? "queued"
                  : (a->res.nfiltered == a->res.ncalls) ? "filtered"
                  : "rejected";

    if (a->n) {
        /* cio_journal sync=always: answered once the items are synced */
        rc = ngx_http_cio_wait_journal(a);

        if (rc != NGX_OK) {
            /* NGX_DONE: a->res is the waiter's now */
            return rc;
        }
    }

    return ngx_http_cio_answer(a);
}


/* the 200, in the shape the client's API expects */

static ngx_int_t
ngx_http_cio_answer(ngx_http_cio_accept_t *a)
{
    return a->amplitude
           ? ngx_http_cio_reply_amplitude(a->r, &a->res, a->received)
           : ngx_http_cio_reply_ok(a->r, &a->res);
}


/*
 * NGX_DONE: the request waits, without blocking the worker, for the sync
 * that covers its records, and is answered by ngx_http_cio_journal_synced;
 * NGX_OK: it is answered now.
 */

static ngx_int_t
ngx_http_cio_wait_journal(ngx_http_cio_accept_t *a)
{
    ngx_http_request_t        *r;
    ngx_http_cio_main_conf_t  *mcf;

    r = a->r;
    mcf = ngx_http_get_module_main_conf(r, ngx_http_cio_module);

    if (mcf->journal == NULL) {
        return NGX_OK;
    }

    a->wait.ev.handler = ngx_http_cio_journal_synced;
    a->wait.ev.data = a;
    a->wait.ev.log = r->connection->log;

    if (ngx_http_cio_journal_wait(mcf->journal, &a->wait) == NGX_OK) {
        return NGX_OK;
    }

    ngx_http_cio_park(r);

    return NGX_DONE;
}


static void
ngx_http_cio_journal_synced(ngx_event_t *ev)
{
    ngx_int_t               rc;
    ngx_http_cio_accept_t  *a;

    a = ev->data;

    /* queued already */
    if (ngx_http_cio_unpark(a, NULL, 1)) {
        return;
    }

    if (a->wait.rc != NGX_OK) {
        /* queued all the same: the client's retry makes a duplicate */
        rc = ngx_http_cio_refuse(a->r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "journal cannot be synced, retry later");

    } else {
        rc = ngx_http_cio_answer(a);
    }

    /* the answers above are never NGX_DONE: the result is freed */
    ngx_http_cio_finalize(a, rc);
}


/*
 * Items that need more than all of the zone's pages, at the least the
 * queue takes for them, can never be queued, empty as the queue may be:
 * a 503 would have the sender retry them for ever.
 */

static ngx_uint_t
ngx_http_cio_never_fits(ngx_http_request_t *r, ngx_http_cio_zone_t *zone,
    ngx_str_t *items, ngx_uint_t n)
{
    size_t      need, total;
    ngx_uint_t  i;

    total = zone->shpool->end - zone->shpool->start;
    need = 0;

    for (i = 0; i < n; i++) {
        need += ngx_http_cio_queue_cost(items[i].len);
    }

    if (need <= total) {
        return 0;
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "cio: %ui events need at least %uz bytes of the queue, "
                  "which has %uz in all: refused with 413 (a larger "
                  "\"cio_zone\" size would hold them)", n, need, total);

    return 1;
}


/* a refused request, and the calls in it the mapper refused */

static void
ngx_http_cio_count_reject(ngx_http_request_t *r, ngx_http_cio_loc_conf_t *lcf,
    ngx_uint_t status, ngx_uint_t invalid)
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

    ngx_http_cio_queue_reject(mcf->shm_zone->data, lcf->ws->sh, reason,
                              invalid);
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

    ctx->logged = 1;

    return ctx;
}


ngx_int_t
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


/*
 * The write key is the Basic user name, which $remote_user (in nginx's
 * default "combined" format) would write to every access log line, and
 * RudderStack's beacon puts it in the query, which $request writes.  It is
 * a credential: in cio locations, and for requests of a server with cio
 * locations that never reached a location (nginx refuses a duplicate
 * Authorization header or TRACE before choosing one), $remote_user is
 * empty and "writeKey=" values in $request, $request_uri and $args read
 * "***"; so do error pages of such a server, which a request refused in
 * a cio location may have been sent to.  Other locations keep theirs: an
 * auth_basic user is no secret.
 */

ngx_int_t
ngx_http_cio_log_handler(ngx_http_request_t *r)
{
    u_char                    *p;
    ngx_http_cio_loc_conf_t   *lcf, *slcf;
    ngx_http_core_srv_conf_t  *cscf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cio_module);

    if (lcf == NULL) {
        return NGX_OK;
    }

    if (lcf->ingest == NGX_HTTP_CIO_INGEST_OFF) {
        cscf = ngx_http_get_module_srv_conf(r, ngx_http_core_module);
        slcf = cscf ? cscf->ctx->loc_conf[ngx_http_cio_module.ctx_index]
                    : NULL;

        /*
         * The server's own configuration: no location was chosen.  Or an
         * error page, where a request nginx refused in a cio location
         * before the handler ran (a body over client_max_body_size) is
         * logged from.
         */
        if (slcf == NULL || !slcf->server_ingest
            || (r->loc_conf != cscf->ctx->loc_conf && !r->error_page))
        {
            return NGX_OK;
        }
    }

    ngx_str_set(&r->headers_in.user, "");
    r->headers_in.user.len = 0;

    if (r->request_line.data == NULL && r->request_start && r->header_in) {
        /* as $request finds it when the line was never parsed whole */
        for (p = r->request_start; p < r->header_in->last; p++) {
            if (*p == CR || *p == LF) {
                break;
            }
        }

        r->request_line.len = p - r->request_start;
        r->request_line.data = r->request_start;
    }

    if (ngx_http_cio_hide_key(r, &r->request_line, 1) != NGX_OK
        || ngx_http_cio_hide_key(r, &r->unparsed_uri, 1) != NGX_OK
        || ngx_http_cio_hide_key(r, &r->args, 0) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * In a server with cio locations the request line loses its write key
 * before nginx or the module write a line with the request line in it
 * (every error line of a request ends with it).  The handler reads the key
 * from r->args, which keeps it until the log phase.
 */

ngx_int_t
ngx_http_cio_post_read_handler(ngx_http_request_t *r)
{
    ngx_http_cio_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cio_module);

    if (lcf != NULL && (lcf->server_ingest
                        || lcf->ingest != NGX_HTTP_CIO_INGEST_OFF))
    {
        if (ngx_http_cio_hide_key(r, &r->request_line, 1) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return NGX_DECLINED;
}


/*
 * "writeKey=" values of a query (in a URI or a request line, after the
 * "?", when "uri" is set) replaced with "***", in a copy: the original
 * bytes are nginx's header buffer.  Names match as ngx_http_arg() matches
 * them, without regard to case.
 */

static ngx_int_t
ngx_http_cio_hide_key(ngx_http_request_t *r, ngx_str_t *s, ngx_uint_t uri)
{
    u_char      *p, *q, *start, *end, *last, *out, *o;
    ngx_uint_t   n;

    static u_char  mask[] = "***";

    if (s->len == 0) {
        return NGX_OK;
    }

    start = s->data;
    last = s->data + s->len;
    end = last;

    if (uri) {
        start = ngx_strlchr(s->data, last, '?');

        if (start == NULL) {
            return NGX_OK;
        }

        start++;

        /* a request line ends in " HTTP/1.1" (" HTTP/2.0" for HTTP/2) */
        if (end - start >= 9 && ngx_strncmp(end - 9, " HTTP/", 6) == 0) {
            end -= 9;
        }
    }

    /* values to hide, other than "***" already */

    n = 0;

    for (p = start; p < end; p = q + 1) {
        q = ngx_strlchr(p, end, '&');
        if (q == NULL) {
            q = end;
        }

        if (q - p >= 9 && ngx_strncasecmp(p, (u_char *) "writeKey=", 9) == 0
            && !((size_t) (q - p - 9) == sizeof(mask) - 1
                 && ngx_strncmp(p + 9, mask, sizeof(mask) - 1) == 0))
        {
            n++;
        }
    }

    if (n == 0) {
        return NGX_OK;
    }

    /* an empty value grows by the mask */
    out = ngx_pnalloc(r->pool, s->len + n * (sizeof(mask) - 1));
    if (out == NULL) {
        return NGX_ERROR;
    }

    o = ngx_cpymem(out, s->data, start - s->data);

    for (p = start; p < end; p = q + 1) {
        q = ngx_strlchr(p, end, '&');
        if (q == NULL) {
            q = end;
        }

        if (q - p >= 9 && ngx_strncasecmp(p, (u_char *) "writeKey=", 9) == 0)
        {
            o = ngx_cpymem(o, p, 9);
            o = ngx_cpymem(o, mask, sizeof(mask) - 1);

        } else {
            o = ngx_cpymem(o, p, q - p);
        }

        if (q < end) {
            *o++ = '&';
        }
    }

    o = ngx_cpymem(o, end, last - end);

    s->data = out;
    s->len = o - out;

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

    if (ctx == NULL || !ctx->logged) {
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
 * CORS for the browser SDKs.  An allowed Origin is echoed; their calls
 * carry no cookies, so credentials are allowed only when asked for, with
 * a list of origins (cio_cors_credentials).  NGX_DECLINED: the origin is
 * not on the cio_cors_origins list.
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
        || (lcf->cors_credentials
            && ngx_http_cio_header_out(r, "Access-Control-Allow-Credentials",
                                       (u_char *) "true", 4)
               != NGX_OK)
        || ngx_http_cio_header_out(r, "Vary", (u_char *) "Origin", 6)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_cio_preflight(ngx_http_request_t *r, ngx_http_cio_loc_conf_t *lcf)
{
    if (ngx_http_cio_header_out(r, "Allow", (u_char *) "POST, OPTIONS", 13)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a list, not the requested headers echoed */
    if (lcf->cors != NGX_HTTP_CIO_CORS_OFF
        && (ngx_http_cio_header_out(r, "Access-Control-Allow-Headers",
                                    (u_char *) NGX_HTTP_CIO_CORS_HEADERS,
                                    sizeof(NGX_HTTP_CIO_CORS_HEADERS) - 1)
            != NGX_OK
            || ngx_http_cio_header_out(r, "Access-Control-Allow-Methods",
                                       (u_char *) "POST, OPTIONS", 13)
               != NGX_OK
            || ngx_http_cio_header_out(r, "Access-Control-Max-Age",
                                       (u_char *) NGX_HTTP_CIO_CORS_MAX_AGE,
                                       sizeof(NGX_HTTP_CIO_CORS_MAX_AGE) - 1)
               != NGX_OK))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_NO_CONTENT;
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    return ngx_http_send_header(r);
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


/* the size of the body nginx read, in memory or in a file */

static off_t
ngx_http_cio_body_size(ngx_http_request_t *r)
{
    off_t         len;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    len = 0;

    if (r->request_body == NULL) {
        return 0;
    }

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        len += b->in_file ? b->file_last - b->file_pos : b->last - b->pos;
    }

    return len;
}


/*
 * The body in one piece, also when nginx buffered it to a file; len is
 * ngx_http_cio_body_size()'s.
 */

static ngx_int_t
ngx_http_cio_read_body(ngx_http_request_t *r, off_t len, ngx_str_t *body)
{
    off_t         size;
    u_char       *p;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    body->len = 0;
    body->data = (u_char *) "";

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, (size_t) len + 1);
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
 * The mapper's changes (docs/mapping.md section 7: names and values cut,
 * attributes dropped, impossible times replaced, empty created_at dropped)
 * alter what the user sent, so they are never silent; but one line per
 * request would flood the log, so a worker sums them and writes at most a
 * line a second.
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
                  "cio: %ui changes to calls to fit Customer.io's limits "
                  "and rules since the last such line: names or values "
                  "cut, attributes dropped, impossible times replaced "
                  "(docs/mapping.md, section 7)", pending);

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

    /* "Basic Og==", no user at all, is no key: the body may have one */
    return (key->len == 0 && colon != NULL) ? NGX_DECLINED : NGX_OK;
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


/* an error answer, counted in cio_status */

static ngx_int_t
ngx_http_cio_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *error)
{
    ngx_http_cio_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cio_module);

    ngx_http_cio_count_reject(r, lcf, status, 0);

    return ngx_http_cio_refuse(r, status, error);
}


/* an error answer counted already */

static ngx_int_t
ngx_http_cio_refuse(ngx_http_request_t *r, ngx_uint_t status,
    const char *error)
{
    ngx_int_t                 rc;
    ngx_http_cio_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cio_module);

    rc = ngx_http_cio_note(r, status, error);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_cio_reply_error(r, status, error,
                                    lcf->ingest
                                    == NGX_HTTP_CIO_INGEST_AMPLITUDE);
}


/*
 * What a refusal leaves for the access log ($cio_status,
 * $cio_reject_reason), and the body of a request refused before it was
 * read thrown away.
 */

static ngx_int_t
ngx_http_cio_note(ngx_http_request_t *r, ngx_uint_t status,
    const char *error)
{
    u_char              *p;
    size_t               len;
    ngx_http_cio_ctx_t  *ctx;

    if (r->request_body == NULL) {
        /*
         * Refused before the body was read: it is thrown away unread, and
         * without "100 Continue", as nginx does for its own error pages.
         */
        r->expect_tested = 1;

        if (ngx_http_discard_request_body(r) != NGX_OK) {
            r->keepalive = 0;
        }
    }

    ctx = ngx_http_cio_ctx(r);

    if (ctx) {
        /* the mapper's messages are freed before the log phase */
        len = ngx_strlen(error);

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

    return NGX_OK;
}
