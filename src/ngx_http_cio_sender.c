/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


#define _GNU_SOURCE

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "ngx_http_cio_sender.h"


/* the default for resp_max; the buffer grows by doubling up to it */
#define NGX_HTTP_CIO_SENDER_MAX_RESP  65536
#define NGX_HTTP_CIO_SENDER_MIN_BUF   4096
#define NGX_HTTP_CIO_SENDER_POLL_MS   1000

/* the stop's wait on the monotonic clock, where glibc can (2.31) */
#if (defined __GLIBC__ && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 31))
#define NGX_HTTP_CIO_CLOCKJOIN        1
#else
#define NGX_HTTP_CIO_CLOCKJOIN        0
#endif


struct ngx_http_cio_sender_s {
    pthread_t              tid;
    pthread_mutex_t        mutex;

    /* under mutex */
    ngx_http_cio_sreq_t   *incoming;
    ngx_http_cio_sreq_t  **incoming_tail;
    ngx_http_cio_sreq_t   *done;
    ngx_http_cio_sreq_t  **done_tail;
    int                    stop;
    int                    finished;

    /* the thread's own */
    CURLM                 *multi;
    ngx_http_cio_sreq_t   *active;
    struct curl_slist     *headers;
    int                    notify_fd;
};


static void *ngx_http_cio_sender_thread(void *data);
static int ngx_http_cio_sender_add(ngx_http_cio_sender_t *s,
    ngx_http_cio_sreq_t *req);
static void ngx_http_cio_sender_finish(ngx_http_cio_sender_t *s,
    CURL *easy, CURLcode code, ngx_http_cio_sreq_t **list);
static void ngx_http_cio_sender_deliver(ngx_http_cio_sender_t *s,
    ngx_http_cio_sreq_t *list);
static void ngx_http_cio_sender_unlink(ngx_http_cio_sender_t *s,
    ngx_http_cio_sreq_t *req);
static size_t ngx_http_cio_sender_write(char *ptr, size_t size,
    size_t nmemb, void *data);
static size_t ngx_http_cio_sender_header(char *ptr, size_t size,
    size_t nmemb, void *data);


ngx_http_cio_sreq_t *
ngx_http_cio_sreq_alloc(void)
{
    ngx_http_cio_sreq_t  *req;

    req = calloc(1, sizeof(ngx_http_cio_sreq_t));
    if (req == NULL) {
        return NULL;
    }

    req->retry_after = -1;
    req->resp_max = NGX_HTTP_CIO_SENDER_MAX_RESP;
    req->timeout_ms = 10000;
    req->connect_timeout_ms = 5000;

    return req;
}


void
ngx_http_cio_sreq_free(ngx_http_cio_sreq_t *req)
{
    if (req == NULL) {
        return;
    }

    free(req->url);
    free(req->userpwd);
    free(req->body);
    free(req->resp);
    free(req);
}


ngx_http_cio_sender_t *
ngx_http_cio_sender_start(int notify_fd, long max_host_connections,
    char *err, size_t errlen)
{
    int                     rc;
    sigset_t                all, old;
    CURLcode                code;
    ngx_http_cio_sender_t  *s;

    code = curl_global_init(CURL_GLOBAL_ALL);
    if (code != CURLE_OK) {
        snprintf(err, errlen, "curl_global_init() failed: %s",
                 curl_easy_strerror(code));
        return NULL;
    }

    s = calloc(1, sizeof(ngx_http_cio_sender_t));
    if (s == NULL) {
        snprintf(err, errlen, "calloc() failed");
        goto failed;
    }

    s->notify_fd = notify_fd;
    s->incoming_tail = &s->incoming;
    s->done_tail = &s->done;

    s->multi = curl_multi_init();
    if (s->multi == NULL) {
        snprintf(err, errlen, "curl_multi_init() failed");
        goto failed;
    }

    curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                      max_host_connections);
    curl_multi_setopt(s->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                      max_host_connections);

    /* curl would add "Expect: 100-continue" and wait a round trip */
    s->headers = curl_slist_append(NULL, "Content-Type: application/json");
    s->headers = curl_slist_append(s->headers, "Accept: application/json");
    s->headers = curl_slist_append(s->headers, "Expect:");

    if (s->headers == NULL) {
        snprintf(err, errlen, "curl_slist_append() failed");
        goto failed;
    }

    rc = pthread_mutex_init(&s->mutex, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "pthread_mutex_init() failed: %s",
                 strerror(rc));
        goto failed;
    }

    /*
     * nginx's signal handlers must run on the event loop thread: the new
     * thread inherits a fully blocked mask, with no window in between
     */

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&s->tid, NULL, ngx_http_cio_sender_thread, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (rc != 0) {
        snprintf(err, errlen, "pthread_create() failed: %s", strerror(rc));
        pthread_mutex_destroy(&s->mutex);
        goto failed;
    }

    return s;

failed:

    if (s) {
        if (s->multi) {
            curl_multi_cleanup(s->multi);
        }
        curl_slist_free_all(s->headers);
        free(s);
    }

    curl_global_cleanup();

    return NULL;
}


int
ngx_http_cio_sender_submit(ngx_http_cio_sender_t *s,
    ngx_http_cio_sreq_t *req)
{
    int  stopped;

    req->next = NULL;

    pthread_mutex_lock(&s->mutex);

    stopped = s->stop;

    if (!stopped) {
        *s->incoming_tail = req;
        s->incoming_tail = &req->next;
    }

    pthread_mutex_unlock(&s->mutex);

    if (stopped) {
        return -1;
    }

    curl_multi_wakeup(s->multi);

    return 0;
}


ngx_http_cio_sreq_t *
ngx_http_cio_sender_results(ngx_http_cio_sender_t *s)
{
    ngx_http_cio_sreq_t  *list;

    pthread_mutex_lock(&s->mutex);

    list = s->done;
    s->done = NULL;
    s->done_tail = &s->done;

    pthread_mutex_unlock(&s->mutex);

    return list;
}


int
ngx_http_cio_sender_stop(ngx_http_cio_sender_t *s, long timeout_ms)
{
    int              rc;
    struct timespec  ts;

    pthread_mutex_lock(&s->mutex);
    s->stop = 1;
    pthread_mutex_unlock(&s->mutex);

    curl_multi_wakeup(s->multi);

    clock_gettime(NGX_HTTP_CIO_CLOCKJOIN ? CLOCK_MONOTONIC : CLOCK_REALTIME,
                  &ts);

    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (timeout_ms % 1000) * 1000000;

    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }

#if (NGX_HTTP_CIO_CLOCKJOIN)
    rc = pthread_clockjoin_np(s->tid, NULL, CLOCK_MONOTONIC, &ts);
#else
    rc = pthread_timedjoin_np(s->tid, NULL, &ts);
#endif
    if (rc != 0) {
        return -1;
    }

    s->finished = 1;

    return 0;
}


void
ngx_http_cio_sender_destroy(ngx_http_cio_sender_t *s)
{
    ngx_http_cio_sreq_t  *req, *next;

    if (!s->finished) {
        /* the thread may still use all of it */
        return;
    }

    for (req = s->done; req; req = next) {
        next = req->next;
        ngx_http_cio_sreq_free(req);
    }

    curl_multi_cleanup(s->multi);
    curl_slist_free_all(s->headers);
    pthread_mutex_destroy(&s->mutex);
    free(s);

    curl_global_cleanup();
}


static void *
ngx_http_cio_sender_thread(void *data)
{
    ngx_http_cio_sender_t  *s = data;

    int                   running, left, stop;
    CURLMsg              *msg;
    ngx_http_cio_sreq_t  *list, *req, *next, *done;
    struct sched_param    param;

    /*
     * The thread shares its worker's core with the event loop.  Batch
     * scheduling gives it the same share of the CPU but no wakeup
     * preemption: a batch handed over waits for the event loop's time
     * slice to end rather than cut into the requests it is serving.
     */
    memset(&param, 0, sizeof(param));
    (void) pthread_setschedparam(pthread_self(), SCHED_BATCH, &param);

    for ( ;; ) {

        pthread_mutex_lock(&s->mutex);

        list = s->incoming;
        s->incoming = NULL;
        s->incoming_tail = &s->incoming;
        stop = s->stop;

        pthread_mutex_unlock(&s->mutex);

        done = NULL;

        for (req = list; req; req = next) {
            next = req->next;

            if (stop || ngx_http_cio_sender_add(s, req) != 0) {
                req->aborted = stop;
                req->next = done;
                done = req;
            }
        }

        if (stop) {
            break;
        }

        curl_multi_perform(s->multi, &running);

        while ((msg = curl_multi_info_read(s->multi, &left)) != NULL) {
            if (msg->msg == CURLMSG_DONE) {
                ngx_http_cio_sender_finish(s, msg->easy_handle,
                                           msg->data.result, &done);
            }
        }

        ngx_http_cio_sender_deliver(s, done);

        curl_multi_poll(s->multi, NULL, 0, NGX_HTTP_CIO_SENDER_POLL_MS,
                        NULL);
    }

    /* whatever is still on the wire goes back unanswered */

    while (s->active) {
        req = s->active;
        ngx_http_cio_sender_unlink(s, req);
        req->aborted = 1;
        req->next = done;
        done = req;
    }

    ngx_http_cio_sender_deliver(s, done);

    return NULL;
}


static int
ngx_http_cio_sender_add(ngx_http_cio_sender_t *s, ngx_http_cio_sreq_t *req)
{
    CURL  *easy;

    if (req->fill && req->fill(req->data, req->body) != 0) {
        snprintf(req->error, sizeof(req->error),
                 "the batch's lease expired before it was sent");
        req->unsent = 1;
        req->unfilled = 1;
        return -1;
    }

    /* nothing left the machine: no attempt counts (a lack of memory) */
    easy = curl_easy_init();
    if (easy == NULL) {
        snprintf(req->error, sizeof(req->error), "curl_easy_init() failed");
        req->unsent = 1;
        return -1;
    }

    curl_easy_setopt(easy, CURLOPT_URL, req->url);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
    curl_easy_setopt(easy, CURLOPT_USERPWD, req->userpwd);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t) req->body_len);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, req->timeout_ms);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     req->connect_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "ngx_http_cio_module/0.1");
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->error);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, ngx_http_cio_sender_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION,
                     ngx_http_cio_sender_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, req);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");

    /* a redirect would turn the POST into a GET and drop the batch */
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);

    /*
     * Peer and host name verification stay on, libcurl's default: there
     * is deliberately no way to turn them off, only to name the CAs.
     */
    if (req->cainfo) {
        curl_easy_setopt(easy, CURLOPT_CAINFO, req->cainfo);
    }

    if (curl_multi_add_handle(s->multi, easy) != CURLM_OK) {
        snprintf(req->error, sizeof(req->error),
                 "curl_multi_add_handle() failed");
        curl_easy_cleanup(easy);
        req->unsent = 1;
        return -1;
    }

    req->handle = easy;
    req->next = s->active;
    s->active = req;

    return 0;
}


static void
ngx_http_cio_sender_finish(ngx_http_cio_sender_t *s, CURL *easy,
    CURLcode code, ngx_http_cio_sreq_t **list)
{
    char                 *p;
    long                  sent;
    ngx_http_cio_sreq_t  *req;

    p = NULL;
    sent = 0;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, &p);
    req = (ngx_http_cio_sreq_t *) p;

    req->curl_code = code;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &req->status);
    curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME, &req->total_time);
    curl_easy_getinfo(easy, CURLINFO_REQUEST_SIZE, &sent);

    /* no name, no connection: Customer.io never saw these items */
    req->unsent = (code != CURLE_OK && sent == 0);

    if (code != CURLE_OK && req->error[0] == '\0') {
        snprintf(req->error, sizeof(req->error), "%s",
                 curl_easy_strerror(code));
    }

    ngx_http_cio_sender_unlink(s, req);

    req->next = *list;
    *list = req;
}


static void
ngx_http_cio_sender_unlink(ngx_http_cio_sender_t *s,
    ngx_http_cio_sreq_t *req)
{
    CURL                  *easy;
    ngx_http_cio_sreq_t  **pp;

    for (pp = &s->active; *pp; pp = &(*pp)->next) {
        if (*pp == req) {
            *pp = req->next;
            break;
        }
    }

    req->next = NULL;

    easy = req->handle;
    req->handle = NULL;

    if (easy) {
        curl_multi_remove_handle(s->multi, easy);
        curl_easy_cleanup(easy);
    }
}


static void
ngx_http_cio_sender_deliver(ngx_http_cio_sender_t *s,
    ngx_http_cio_sreq_t *list)
{
    uint64_t              one;
    ngx_http_cio_sreq_t  *req, *next;

    if (list == NULL) {
        return;
    }

    pthread_mutex_lock(&s->mutex);

    for (req = list; req; req = next) {
        next = req->next;
        req->next = NULL;
        *s->done_tail = req;
        s->done_tail = &req->next;
    }

    pthread_mutex_unlock(&s->mutex);

    one = 1;

    /* EAGAIN means the counter is already non-zero: a wakeup is pending */
    (void) !write(s->notify_fd, &one, sizeof(one));
}


static size_t
ngx_http_cio_sender_write(char *ptr, size_t size, size_t nmemb, void *data)
{
    ngx_http_cio_sreq_t  *req = data;

    char    *p;
    size_t   n, keep, want;

    n = size * nmemb;
    keep = n;

    if (req->resp_len + keep > req->resp_max) {
        /* the caller must not take a cut answer for a whole one */
        req->resp_cut = 1;
        keep = req->resp_max - req->resp_len;
    }

    if (keep == 0) {
        return n;
    }

    if (req->resp_len + keep + 1 > req->resp_size) {
        want = req->resp_size ? req->resp_size : NGX_HTTP_CIO_SENDER_MIN_BUF;

        while (want < req->resp_len + keep + 1) {
            want *= 2;
        }

        if (want > req->resp_max + 1) {
            want = req->resp_max + 1;
        }

        p = realloc(req->resp, want);
        if (p == NULL) {
            return 0;
        }

        req->resp = p;
        req->resp_size = want;
    }

    memcpy(req->resp + req->resp_len, ptr, keep);
    req->resp_len += keep;
    req->resp[req->resp_len] = '\0';

    return n;
}


static size_t
ngx_http_cio_sender_header(char *ptr, size_t size, size_t nmemb,
    void *data)
{
    ngx_http_cio_sreq_t  *req = data;

    char    *p, *end;
    long     v;
    size_t   n;

    n = size * nmemb;

    if (n > sizeof("Retry-After:") - 1
        && strncasecmp(ptr, "Retry-After:", sizeof("Retry-After:") - 1) == 0)
    {
        p = ptr + sizeof("Retry-After:") - 1;
        end = ptr + n;

        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }

        v = 0;

        while (p < end && *p >= '0' && *p <= '9' && v < 86400) {
            v = v * 10 + (*p++ - '0');
        }

        /* an HTTP-date is not worth parsing here: the backoff applies */
        if (p < end && (*p == '\r' || *p == '\n')) {
            req->retry_after = v;
        }
    }

    return n;
}
