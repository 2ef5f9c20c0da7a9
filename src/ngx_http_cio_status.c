/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * cio_status: what the queue has seen, per workspace and in total, as JSON
 * or in Prometheus' text format.  The counters live in the zone (queue.c
 * keeps them), so every worker reports the same numbers and they outlive
 * reloads; this file only formats a snapshot of them.
 */


#include "ngx_http_cio.h"


static ngx_uint_t ngx_http_cio_status_prometheus(ngx_http_request_t *r);
static u_char *ngx_http_cio_status_json(u_char *p,
    ngx_http_cio_shws_t *ws, ngx_http_cio_stats_t *st);
static u_char *ngx_http_cio_status_prom(u_char *p, ngx_http_cio_shws_t *ws,
    ngx_str_t *labels, ngx_uint_t n);
static u_char *ngx_http_cio_status_seconds(u_char *p, uint64_t ms);
static u_char *ngx_http_cio_status_label(u_char *l, ngx_str_t *v);
static ngx_str_t *ngx_http_cio_status_labels(ngx_pool_t *pool,
    ngx_http_cio_shws_t *ws, ngx_uint_t n);
static void ngx_http_cio_status_add(ngx_http_cio_shws_t *sum,
    ngx_http_cio_shws_t *ws);


static const char  *ngx_http_cio_reject_names[NGX_HTTP_CIO_REJ_N] = {
    "invalid", "unauthorized", "too_large", "full", "other"
};

static const char  *ngx_http_cio_class_names[5] = {
    "2xx", "3xx", "4xx", "5xx", "failed"
};


/*
 * Room for one workspace in either format, short of its names: about 40
 * lines, and the last error escaped (6 bytes a byte at worst).
 */
#define NGX_HTTP_CIO_STATUS_WS_LEN                                            \
    (40 * 128 + NGX_HTTP_CIO_LAST_ERROR_LEN * 6)


ngx_int_t
ngx_http_cio_status_handler(ngx_http_request_t *r)
{
    size_t                     size, n, used, nfree;
    u_char                    *p, *body;
    ngx_int_t                  rc;
    ngx_uint_t                 prom, nws;
    ngx_str_t                 *labels;
    ngx_http_cio_zone_t       *zone;
    ngx_http_cio_shws_t        sum, *copy;
    ngx_http_cio_main_conf_t  *mcf;

    static ngx_str_t  json_type = ngx_string("application/json");
    static ngx_str_t  prom_type = ngx_string("text/plain; version=0.0.4");

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cio_module);
    zone = mcf->shm_zone->data;

    if (zone == NULL || zone->sh == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    prom = ngx_http_cio_status_prometheus(r);

    copy = ngx_http_cio_queue_snapshot(zone, r->pool, &nws, &nfree);

    if (copy == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    used = mcf->shm_zone->shm.size - nfree;
    size = 0;

    for (n = 0; n < nws; n++) {
        size += NGX_HTTP_CIO_STATUS_WS_LEN
                + 40 * (2 * copy[n].site_id.len + 2 * copy[n].url.len
                        + sizeof("\",url=\"") - 1)
                + 6 * copy[n].url.len;
    }

    ngx_memzero(&sum, sizeof(ngx_http_cio_shws_t));

    for (n = 0; n < nws; n++) {
        ngx_http_cio_status_add(&sum, &copy[n]);
    }

    size += 2 * NGX_HTTP_CIO_STATUS_WS_LEN + mcf->shm_zone->shm.name.len * 6;

    body = ngx_pnalloc(r->pool, size);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (prom) {
        p = ngx_sprintf(body,
                "# HELP cio_zone_size_bytes Size of the cio_zone.\n"
                "# TYPE cio_zone_size_bytes gauge\n"
                "cio_zone_size_bytes{zone=\"%V\"} %uz\n",
                &mcf->shm_zone->shm.name, mcf->shm_zone->shm.size);

        p = ngx_sprintf(p,
                "# HELP cio_zone_used_bytes Bytes of the zone in use.\n"
                "# TYPE cio_zone_used_bytes gauge\n"
                "cio_zone_used_bytes{zone=\"%V\"} %uz\n",
                &mcf->shm_zone->shm.name, used);

        labels = ngx_http_cio_status_labels(r->pool, copy, nws);
        if (labels == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_http_cio_status_prom(p, copy, labels, nws);

    } else {
        p = ngx_sprintf(body,
                "{\"zone\":{\"name\":\"%V\",\"size\":%uz,\"used\":%uz},"
                "\"total\":",
                &mcf->shm_zone->shm.name, mcf->shm_zone->shm.size, used);

        p = ngx_http_cio_status_json(p, &sum, &sum.stats);
        p = ngx_cpymem(p, ",\"workspaces\":[", 15);

        for (n = 0; n < nws; n++) {
            if (n) {
                *p++ = ',';
            }

            p = ngx_sprintf(p, "{\"site_id\":\"");
            p = (u_char *) ngx_escape_json(p, copy[n].site_id.data,
                                           copy[n].site_id.len);
            p = ngx_sprintf(p, "\",\"url\":\"");
            p = (u_char *) ngx_escape_json(p, copy[n].url.data,
                                           copy[n].url.len);
            p = ngx_sprintf(p, "\",\"stats\":");
            p = ngx_http_cio_status_json(p, &copy[n], &copy[n].stats);
            *p++ = '}';
        }

        p = ngx_cpymem(p, "]}\n", 3);
    }

    /* the format follows Accept: a cache must keep the two apart */
    if (ngx_http_cio_header_out(r, "Vary", (u_char *) "Accept", 6)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_cio_send_type(r, NGX_HTTP_OK, prom ? &prom_type
                                                       : &json_type,
                                  body, p - body);
}


/* "?format=prometheus", or a scraper that asks for text/plain */

static ngx_uint_t
ngx_http_cio_status_prometheus(ngx_http_request_t *r)
{
    ngx_str_t         v;
    ngx_table_elt_t  *h;

    if (ngx_http_arg(r, (u_char *) "format", 6, &v) == NGX_OK) {
        return v.len == 10
               && ngx_strncmp(v.data, "prometheus", 10) == 0;
    }

    h = ngx_http_cio_header_in(r, "accept", 6);

    return h != NULL
           && ngx_strlcasestrn(h->value.data, h->value.data + h->value.len,
                               (u_char *) "text/plain", 10 - 1)
              != NULL;
}


static void
ngx_http_cio_status_add(ngx_http_cio_shws_t *sum, ngx_http_cio_shws_t *ws)
{
    ngx_uint_t  i;

    sum->npending += ws->npending;
    sum->pending_bytes += ws->pending_bytes;
    sum->ninflight += ws->ninflight;
    sum->accepted += ws->accepted;
    sum->delivered += ws->delivered;
    sum->refused += ws->refused;
    sum->retried += ws->retried;
    sum->dead += ws->dead;
    sum->lost += ws->lost;
    sum->stats.filtered += ws->stats.filtered;
    sum->stats.invalid += ws->stats.invalid;
    sum->stats.latency_ms += ws->stats.latency_ms;

    for (i = 0; i < NGX_HTTP_CIO_REJ_N; i++) {
        sum->stats.rejected[i] += ws->stats.rejected[i];
    }

    for (i = 0; i < 5; i++) {
        sum->stats.requests[i] += ws->stats.requests[i];
    }

    for (i = 0; i < NGX_HTTP_CIO_LAT_N; i++) {
        sum->stats.latency[i] += ws->stats.latency[i];
    }

    if (ws->stats.last_error_at > sum->stats.last_error_at) {
        sum->stats.last_error_at = ws->stats.last_error_at;
        sum->stats.last_error_len = ws->stats.last_error_len;
        ngx_memcpy(sum->stats.last_error, ws->stats.last_error,
                   ws->stats.last_error_len);
    }
}


static u_char *
ngx_http_cio_status_json(u_char *p, ngx_http_cio_shws_t *ws,
    ngx_http_cio_stats_t *st)
{
    ngx_uint_t  i;

    p = ngx_sprintf(p, "{\"accepted\":%uL,\"filtered\":%uL,"
                    "\"invalid\":%uL,\"rejected\":{",
                    ws->accepted, st->filtered, st->invalid);

    for (i = 0; i < NGX_HTTP_CIO_REJ_N; i++) {
        p = ngx_sprintf(p, "%s\"%s\":%uL", i ? "," : "",
                        ngx_http_cio_reject_names[i], st->rejected[i]);
    }

    p = ngx_sprintf(p, "},\"queued\":%ui,\"queued_bytes\":%uz,"
                    "\"in_flight\":%ui,\"delivered\":%uL,\"retried\":%uL,"
                    "\"refused\":%uL,\"dead_lettered\":%uL,\"lost\":%uL,"
                    "\"requests\":{",
                    ws->npending, ws->pending_bytes, ws->ninflight,
                    ws->delivered, ws->retried, ws->refused, ws->dead,
                    ws->lost);

    for (i = 0; i < 5; i++) {
        p = ngx_sprintf(p, "%s\"%s\":%uL", i ? "," : "",
                        ngx_http_cio_class_names[i], st->requests[i]);
    }

    p = ngx_sprintf(p, "},\"latency_ms\":{\"buckets\":[");

    for (i = 0; i < NGX_HTTP_CIO_LAT_N; i++) {
        if (i < NGX_HTTP_CIO_LAT_N - 1) {
            p = ngx_sprintf(p, "%s{\"le\":%ui,\"count\":%uL}", i ? "," : "",
                            ngx_http_cio_latency_bounds[i], st->latency[i]);

        } else {
            p = ngx_sprintf(p, ",{\"le\":null,\"count\":%uL}",
                            st->latency[i]);
        }
    }

    p = ngx_sprintf(p, "],\"sum\":%uL},\"last_error\":", st->latency_ms);

    if (st->last_error_at == 0) {
        return ngx_cpymem(p, "null}", 5);
    }

    p = ngx_sprintf(p, "{\"time_ms\":%uL,\"message\":\"", st->last_error_at);
    p = (u_char *) ngx_escape_json(p, st->last_error, st->last_error_len);

    return ngx_cpymem(p, "\"}}", 3);
}


/*
 * Prometheus' text format (version 0.0.4): a family at a time, its HELP
 * and TYPE lines first, then a sample per workspace.  Calls and requests
 * are counted by different families; counters end in _total.
 */

typedef struct {
    const char                *name;
    const char                *type;
    const char                *help;
} ngx_http_cio_family_t;


static ngx_http_cio_family_t  ngx_http_cio_families[] = {
    { "cio_events_accepted_total", "counter",
      "Items queued for Customer.io." },
    { "cio_events_filtered_total", "counter",
      "Calls dropped by cio_events_allow, cio_events_deny or "
      "cio_consent_category." },
    { "cio_events_invalid_total", "counter",
      "Calls refused as invalid: named in a batch's answer, or "
      "answered 400." },
    { "cio_events_queued", "gauge",
      "Items waiting to be sent." },
    { "cio_queued_bytes", "gauge",
      "Bytes of the items waiting to be sent." },
    { "cio_events_in_flight", "gauge",
      "Items in a request to Customer.io now." },
    { "cio_events_delivered_total", "counter",
      "Items Customer.io accepted." },
    { "cio_events_retried_total", "counter",
      "Items sent again after a failed request." },
    { "cio_events_refused_total", "counter",
      "Items Customer.io refused." },
    { "cio_events_dead_lettered_total", "counter",
      "Items given up on, to the dead-letter file." },
    { "cio_events_lost_total", "counter",
      "Items given up on that the dead-letter file could not take." },
    { "cio_last_error_timestamp_seconds", "gauge",
      "Time of the last failed or partly refused request to "
      "Customer.io, 0 if none." }
};


static u_char *
ngx_http_cio_status_prom(u_char *p, ngx_http_cio_shws_t *ws,
    ngx_str_t *labels, ngx_uint_t n)
{
    size_t                  i;
    uint64_t                cum, v;
    ngx_uint_t              k, f;
    ngx_http_cio_stats_t   *st;
    ngx_http_cio_family_t  *fam;

    for (f = 0; f < sizeof(ngx_http_cio_families)
                    / sizeof(ngx_http_cio_family_t); f++)
    {
        fam = &ngx_http_cio_families[f];

        p = ngx_sprintf(p, "# HELP %s %s\n# TYPE %s %s\n",
                        fam->name, fam->help, fam->name, fam->type);

        for (k = 0; k < n; k++) {
            switch (f) {
            case 0: v = ws[k].accepted; break;
            case 1: v = ws[k].stats.filtered; break;
            case 2: v = ws[k].stats.invalid; break;
            case 3: v = ws[k].npending; break;
            case 4: v = ws[k].pending_bytes; break;
            case 5: v = ws[k].ninflight; break;
            case 6: v = ws[k].delivered; break;
            case 7: v = ws[k].retried; break;
            case 8: v = ws[k].refused; break;
            case 9: v = ws[k].dead; break;
            case 10: v = ws[k].lost; break;
            default: v = ws[k].stats.last_error_at / 1000; break;
            }

            p = ngx_sprintf(p, "%s{site_id=\"%V\"} %uL\n",
                            fam->name, &labels[k], v);
        }
    }

    p = ngx_sprintf(p,
            "# HELP cio_requests_rejected_total Requests to the ingest "
            "locations answered with an error, by reason.\n"
            "# TYPE cio_requests_rejected_total counter\n");

    for (k = 0; k < n; k++) {
        for (i = 0; i < NGX_HTTP_CIO_REJ_N; i++) {
            p = ngx_sprintf(p, "cio_requests_rejected_total{site_id=\"%V\","
                            "reason=\"%s\"} %uL\n", &labels[k],
                            ngx_http_cio_reject_names[i],
                            ws[k].stats.rejected[i]);
        }
    }

    p = ngx_sprintf(p,
            "# HELP cio_upstream_requests_total Requests to Customer.io, "
            "by class of answer (failed: no answer).\n"
            "# TYPE cio_upstream_requests_total counter\n");

    for (k = 0; k < n; k++) {
        for (i = 0; i < 5; i++) {
            p = ngx_sprintf(p, "cio_upstream_requests_total{site_id=\"%V\","
                            "class=\"%s\"} %uL\n", &labels[k],
                            ngx_http_cio_class_names[i],
                            ws[k].stats.requests[i]);
        }
    }

    p = ngx_sprintf(p,
            "# HELP cio_upstream_latency_seconds Time Customer.io took "
            "to answer a request.\n"
            "# TYPE cio_upstream_latency_seconds histogram\n");

    for (k = 0; k < n; k++) {
        st = &ws[k].stats;
        cum = 0;

        for (i = 0; i < NGX_HTTP_CIO_LAT_N; i++) {
            cum += st->latency[i];

            p = ngx_sprintf(p, "cio_upstream_latency_seconds_bucket"
                            "{site_id=\"%V\",le=\"", &labels[k]);

            if (i < NGX_HTTP_CIO_LAT_N - 1) {
                p = ngx_http_cio_status_seconds(p,
                                            ngx_http_cio_latency_bounds[i]);

            } else {
                p = ngx_cpymem(p, "+Inf", 4);
            }

            p = ngx_sprintf(p, "\"} %uL\n", cum);
        }

        p = ngx_sprintf(p, "cio_upstream_latency_seconds_sum"
                        "{site_id=\"%V\"} ", &labels[k]);
        p = ngx_http_cio_status_seconds(p, st->latency_ms);
        p = ngx_sprintf(p, "\ncio_upstream_latency_seconds_count"
                        "{site_id=\"%V\"} %uL\n", &labels[k], cum);
    }

    return p;
}


/*
 * Milliseconds as seconds the way Prometheus' clients print a float:
 * "0.05", "1", "2.5", never "0.050" or "1.000", since le="0.050" would
 * be a bucket of its own to a query that names le="0.05".
 */

static u_char *
ngx_http_cio_status_seconds(u_char *p, uint64_t ms)
{
    ngx_uint_t  frac;

    p = ngx_sprintf(p, "%uL", ms / 1000);

    frac = ms % 1000;

    if (frac == 0) {
        return p;
    }

    if (frac % 100 == 0) {
        return ngx_sprintf(p, ".%ui", frac / 100);
    }

    if (frac % 10 == 0) {
        return ngx_sprintf(p, ".%02ui", frac / 10);
    }

    return ngx_sprintf(p, ".%03ui", frac);
}


/*
 * The labels of a workspace, the value of site_id="%V" in every series:
 * its site id, then its url (a reload that changes a site's endpoint
 * leaves the old one's counters, with the same site id).
 */

static ngx_str_t *
ngx_http_cio_status_labels(ngx_pool_t *pool, ngx_http_cio_shws_t *ws,
    ngx_uint_t n)
{
    u_char      *l;
    ngx_str_t   *labels;
    ngx_uint_t   k;

    labels = ngx_palloc(pool, (n + 1) * sizeof(ngx_str_t));
    if (labels == NULL) {
        return NULL;
    }

    for (k = 0; k < n; k++) {
        l = ngx_pnalloc(pool, 2 * ws[k].site_id.len + 2 * ws[k].url.len
                              + sizeof("\",url=\"") - 1);
        if (l == NULL) {
            return NULL;
        }

        labels[k].data = l;

        l = ngx_http_cio_status_label(l, &ws[k].site_id);
        l = ngx_cpymem(l, "\",url=\"", sizeof("\",url=\"") - 1);
        l = ngx_http_cio_status_label(l, &ws[k].url);

        labels[k].len = l - labels[k].data;
    }

    return labels;
}


/* a label value, escaped as Prometheus' text format wants */

static u_char *
ngx_http_cio_status_label(u_char *l, ngx_str_t *v)
{
    size_t  i;

    for (i = 0; i < v->len; i++) {
        switch (v->data[i]) {

        case '\\':
        case '"':
            *l++ = '\\';
            *l++ = v->data[i];
            break;

        case '\n':
            *l++ = '\\';
            *l++ = 'n';
            break;

        default:
            *l++ = v->data[i];
        }
    }

    return l;
}
