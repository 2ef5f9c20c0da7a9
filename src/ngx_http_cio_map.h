/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * The event mapper: Segment / RudderStack calls in, Customer.io Track API
 * v2 items out.  Pure C on top of cJSON, with no nginx headers, so that the
 * unit tests and the fuzzer link it alone.  The contract it implements is
 * docs/mapping.md.
 */


#ifndef _NGX_HTTP_CIO_MAP_H_INCLUDED_
#define _NGX_HTTP_CIO_MAP_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define NGX_HTTP_CIO_MAP_MAX_ITEMS   2
#define NGX_HTTP_CIO_MAP_ERRLEN      160
#define NGX_HTTP_CIO_MAP_NOMEM       "out of memory"


/*
 * Customer.io's limits, enforced before anything is queued (docs/mapping.md
 * §7), and the defaults the glue, the tests, the fuzzer and the bench use.
 */
#define NGX_HTTP_CIO_MAP_MAX_ITEM_SIZE     32768   /* serialized item */
#define NGX_HTTP_CIO_MAP_MAX_BATCH_CALLS   2500    /* cio_max_batch_calls */
#define NGX_HTTP_CIO_MAP_MAX_SHARED        32768   /* a batch's context,
                                                      its integrations */
#define NGX_HTTP_CIO_MAP_MAX_NAME          100     /* event/page/screen */
#define NGX_HTTP_CIO_MAP_MAX_ID            150     /* any identifier */
#define NGX_HTTP_CIO_MAP_MAX_ATTR_NAME     150
#define NGX_HTTP_CIO_MAP_MAX_ATTR_VALUE    1000    /* string value bytes */
#define NGX_HTTP_CIO_MAP_MAX_ATTRS         300     /* per item */
#define NGX_HTTP_CIO_MAP_MAX_NESTING       32      /* levels in attributes */


/* the call type a route implies; BATCH takes "type" from each call */
typedef enum {
    NGX_HTTP_CIO_CALL_UNKNOWN = 0,
    NGX_HTTP_CIO_CALL_IDENTIFY,
    NGX_HTTP_CIO_CALL_TRACK,
    NGX_HTTP_CIO_CALL_PAGE,
    NGX_HTTP_CIO_CALL_SCREEN,
    NGX_HTTP_CIO_CALL_GROUP,
    NGX_HTTP_CIO_CALL_ALIAS,
    NGX_HTTP_CIO_CALL_BATCH,
    NGX_HTTP_CIO_CALL_AMPLITUDE     /* body {api_key, events[]}: a batch */
} ngx_http_cio_call_e;


typedef struct {
    int                  route;            /* ngx_http_cio_call_e */
    int64_t              received_ms;      /* unix ms, request arrival */
    size_t               max_item_size;    /* ..._MAP_MAX_ITEM_SIZE */
    size_t               max_batch_calls;  /* 0: no cap */
    unsigned             screen_native:1;  /* cio_screen_views native */
    unsigned             convert_timestamps:1;
    const char         **device_events;    /* extra add_device names */
    size_t               ndevice_events;

    /*
     * filters: a call whose event name is not in events_allow (when set)
     * or is in events_deny, or whose context.consentManagement
     * .deniedConsentIds names one of consent_deny, is "filtered": valid,
     * answered as accepted, counted, but mapped to no item.
     */
    const char         **events_allow;
    size_t               nevents_allow;
    const char         **events_deny;
    size_t               nevents_deny;
    const char         **consent_deny;
    size_t               nconsent_deny;
} ngx_http_cio_map_opts_t;


typedef struct {
    int                  type;             /* ngx_http_cio_call_e */
    int                  nitems;
    unsigned             filtered:1;       /* valid, dropped by a filter */
    char                *item[NGX_HTTP_CIO_MAP_MAX_ITEMS];     /* malloc */
    size_t               item_len[NGX_HTTP_CIO_MAP_MAX_ITEMS];
    char                 error[NGX_HTTP_CIO_MAP_ERRLEN];       /* "" = ok */
} ngx_http_cio_map_call_t;


typedef struct {
    char                    *write_key;    /* body "writeKey", malloc */
    size_t                   ncalls;
    ngx_http_cio_map_call_t *calls;        /* malloc */
    unsigned                 changes;      /* limit adjustments made */
    size_t                   nfiltered;    /* calls with filtered set */
    char                     error[NGX_HTTP_CIO_MAP_ERRLEN];

    /*
     * Amplitude: the body field whose absence made the request unusable
     * ("api_key"), for the answer's "missing_field"; NULL otherwise.
     */
    const char              *missing_field;

    /* more calls than max_batch_calls: Amplitude's SDKs split on 413 */
    unsigned                 too_many:1;
} ngx_http_cio_map_result_t;


/*
 * Maps a whole request body.  Returns 0 with res->calls filled (each call
 * either has items or an error), or -1 with res->error set when the body
 * as a whole is unusable (bad JSON, not an object, no batch array, ...).
 * The result must be released with ngx_http_cio_map_result_free() in both
 * cases.
 */
int ngx_http_cio_map_request(const char *body, size_t len,
    const ngx_http_cio_map_opts_t *opts, ngx_http_cio_map_result_t *res);
void ngx_http_cio_map_result_free(ngx_http_cio_map_result_t *res);

/* frees the memory the mapper keeps from one call to the next */
void ngx_http_cio_map_release(void);

/*
 * Whether the mapper ran out of memory for the request or any of its
 * calls: that says nothing of the input, and is no 400 (a sender would
 * drop the calls) but a 500 (it sends them again).
 */
int ngx_http_cio_map_out_of_memory(const ngx_http_cio_map_result_t *res);

const char *ngx_http_cio_call_name(int type);


#endif /* _NGX_HTTP_CIO_MAP_H_INCLUDED_ */
