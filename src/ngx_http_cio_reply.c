/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * What the ingest locations and cio_status send back: the Segment and
 * Amplitude answers, the error answers in either shape, and the helpers
 * that put a whole answer out from one buffer.  No state of its own: the
 * handler decides what to answer, this file only says how.
 */


#include "ngx_http_cio.h"


#define NGX_HTTP_CIO_FULL_RETRY_AFTER "5"


static ngx_uint_t ngx_http_cio_amplitude_field(const char *error);


/* Segment's 200; the calls of a batch the mapper refused, by index */

ngx_int_t
ngx_http_cio_reply_ok(ngx_http_request_t *r, ngx_http_cio_map_result_t *res)
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

ngx_int_t
ngx_http_cio_reply_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *error, ngx_uint_t amplitude)
{
    size_t   len;
    u_char  *p, *body;

    len = ngx_strlen(error);

    body = ngx_pnalloc(r->pool, sizeof("{\"success\":false,\"error\":\"\"}")
                                + NGX_INT_T_LEN + len
                                + ngx_escape_json(NULL, (u_char *) error,
                                                  len));
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (amplitude) {
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


/*
 * Amplitude's answer to a request without a required field (its api_key):
 * its SDKs drop the whole request when "missing_field" is set, rather than
 * send it again.
 */

ngx_int_t
ngx_http_cio_reply_amplitude_missing(ngx_http_request_t *r,
    const char *error, const char *field)
{
    size_t   len, flen;
    u_char  *p, *body;

    len = ngx_strlen(error);
    flen = ngx_strlen(field);

    body = ngx_pnalloc(r->pool,
                       sizeof("{\"code\":400,\"error\":\"\","
                              "\"missing_field\":\"\"}")
                       + len + ngx_escape_json(NULL, (u_char *) error, len)
                       + flen + ngx_escape_json(NULL, (u_char *) field, flen));
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"code\":400,\"error\":\"",
                   sizeof("{\"code\":400,\"error\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, (u_char *) error, len);
    p = ngx_cpymem(p, "\",\"missing_field\":\"",
                   sizeof("\",\"missing_field\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, (u_char *) field, flen);
    p = ngx_cpymem(p, "\"}", 2);

    return ngx_http_cio_send(r, NGX_HTTP_BAD_REQUEST, body, p - body);
}


/* Amplitude's HTTP V2 success answer; "code" is what its SDKs check */

ngx_int_t
ngx_http_cio_reply_amplitude(ngx_http_request_t *r,
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
                    "\"payload_size_bytes\":%uz,\"server_upload_time\":%uL}",
                    res->ncalls, received,
                    (uint64_t) tp->sec * 1000 + tp->msec);

    return ngx_http_cio_send(r, NGX_HTTP_OK, body, p - body);
}


/*
 * A 400 in Amplitude's shape: the indexes of the invalid events under
 * "events_with_missing_fields" / "events_with_invalid_fields", so that the
 * SDK drops exactly those and sends the others again.
 */

ngx_int_t
ngx_http_cio_reply_amplitude_invalid(ngx_http_request_t *r,
    ngx_http_cio_map_result_t *res)
{
    size_t               len;
    u_char              *body, *p;
    ngx_uint_t           i, f, k, n, first, nfields;
    const char          *e;

    /* ngx_http_cio_amplitude_field() files each error under one of them */
    static const char  *fields[] = {
        "event_type", "user_id", "device_id", "event"
    };

    nfields = sizeof(fields) / sizeof(fields[0]);

    /* each index once, each field at most once in each of the two */
    len = sizeof("{\"code\":400,\"error\":\"Request has invalid events\","
                 "\"events_with_missing_fields\":{},"
                 "\"events_with_invalid_fields\":{}}")
          + res->ncalls * (NGX_INT_T_LEN + 1)
          + 2 * nfields * sizeof(",\"event_type\":[]");

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

        for (f = 0; f < nfields; f++) {
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

    if (ngx_strncmp(error, "device_id", 9) == 0) {
        return 2;
    }

    return 3;
}


ngx_int_t
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


ngx_int_t
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
