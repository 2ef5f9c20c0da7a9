/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * The sender: one thread per worker that drives libcurl's multi interface.
 * It makes no nginx calls at all (nginx's functions are not thread-safe),
 * so this file and its .c include no nginx headers.  Requests come in
 * through a mutex-protected list plus curl_multi_wakeup(); answers go back
 * through another list and a write to an eventfd that the worker's event
 * loop watches.
 */


#ifndef _NGX_HTTP_CIO_SENDER_H_INCLUDED_
#define _NGX_HTTP_CIO_SENDER_H_INCLUDED_


#include <stddef.h>


typedef struct ngx_http_cio_sender_s  ngx_http_cio_sender_t;
typedef struct ngx_http_cio_sreq_s    ngx_http_cio_sreq_t;


struct ngx_http_cio_sreq_s {
    ngx_http_cio_sreq_t  *next;

    /* in: owned by the request, freed with ngx_http_cio_sreq_free() */
    char                 *url;
    char                 *userpwd;          /* "site_id:api_key" */
    char                 *body;
    size_t                body_len;
    long                  timeout_ms;
    long                  connect_timeout_ms;
    const char           *cainfo;           /* CA bundle; NULL: system's */
    void                 *data;             /* the caller's, untouched */
    void                 *part;             /* the caller's, untouched */
    /* NULL, or writes body (from data) in the thread before it is sent;
       non-zero: it cannot, and the request fails unsent */
    int                 (*fill)(void *data, char *body);
    size_t                resp_max;         /* keep at most this much */

    /* out */
    long                  status;           /* HTTP status, 0 if none */
    int                   curl_code;        /* CURLcode */
    unsigned              aborted:1;        /* stopped before an answer */
    unsigned              unsent:1;         /* never left: no connection */
    unsigned              resp_cut:1;       /* answer longer than resp_max */
    unsigned              unfilled:1;       /* fill() failed: not sent */
    long                  retry_after;      /* seconds, -1 if absent */
    double                total_time;       /* seconds */
    char                 *resp;             /* answer body, NUL-ended */
    size_t                resp_len;
    size_t                resp_size;        /* the sender's own */
    char                  error[256];

    void                 *handle;           /* the sender's own */
};


/* notify_fd is written (an 8-byte 1) whenever answers are ready */
ngx_http_cio_sender_t *ngx_http_cio_sender_start(int notify_fd,
    long max_host_connections, char *err, size_t errlen);
int ngx_http_cio_sender_submit(ngx_http_cio_sender_t *s,
    ngx_http_cio_sreq_t *req);
ngx_http_cio_sreq_t *ngx_http_cio_sender_results(ngx_http_cio_sender_t *s);

/*
 * Stops the thread and waits at most timeout_ms for it.  Returns 0 when
 * the thread was joined; every request not yet answered is then on the
 * results list marked aborted.  Returns -1 when the thread did not stop in
 * time: its memory is then deliberately left alone.
 */
int ngx_http_cio_sender_stop(ngx_http_cio_sender_t *s, long timeout_ms);
void ngx_http_cio_sender_destroy(ngx_http_cio_sender_t *s);

ngx_http_cio_sreq_t *ngx_http_cio_sreq_alloc(void);
void ngx_http_cio_sreq_free(ngx_http_cio_sreq_t *req);


#endif /* _NGX_HTTP_CIO_SENDER_H_INCLUDED_ */
