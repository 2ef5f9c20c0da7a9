
/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * The dead-letter file: items Customer.io refused, or that failed more
 * than cio_retry_max times, one JSON line each with the item, the answer
 * and the time, so that an operator can fix them and replay them
 * (scripts/cio-replay.pl).  Written on a worker's event loop thread only,
 * with one write() per line to a file opened with O_APPEND by the master:
 * the lines of several workers never interleave.
 */


#include "ngx_http_cio.h"


#define NGX_HTTP_CIO_LOG_ITEM  1024


static u_char *ngx_http_cio_dead_letter_str(u_char *p, const char *key,
    u_char *s, size_t len);


/*
 * One line: {"time":...,"site_id":...,"url":...,"status":...,
 * "attempts":...,"reason":...,"answer":...,"item":...}.  The item comes
 * last and verbatim, as the spool writes it, so that tools can cut it out
 * without re-encoding its numbers.  "answer" is JSON text prepared by the
 * caller (an object, a string or null).
 */

void
ngx_http_cio_dead_letter(ngx_http_cio_main_conf_t *mcf, ngx_log_t *log,
    ngx_http_cio_shws_t *ws, ngx_http_cio_batch_t *batch, ngx_uint_t i,
    u_char *body, long status, const char *reason, u_char *answer,
    size_t answer_len)
{
    size_t      len, rlen, ilen;
    u_char     *line, *p, *item;
    ssize_t     n;
    ngx_str_t   tm;

    item = body + batch->offs[i];
    ilen = batch->lens[i];
    rlen = ngx_strlen(reason);

    if (answer == NULL || answer_len == 0) {
        answer = (u_char *) "null";
        answer_len = sizeof("null") - 1;
    }

    if (mcf->dead_letter == NULL) {
        len = ngx_min(ilen, NGX_HTTP_CIO_LOG_ITEM);

        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "cio: site \"%V\" gave up on an event (%s, status "
                      "%l, %uD attempts), no cio_dead_letter file to keep "
                      "it: %*s%s",
                      &ws->site_id, reason, status, batch->attempts[i],
                      len, item, len < ilen ? "..." : "");
        return;
    }

    tm = ngx_cached_http_log_iso8601;

    len = sizeof("{\"time\":\"\",\"site_id\":\"\",\"url\":\"\",\"status\":"
                 ",\"attempts\":,\"reason\":\"\",\"answer\":,\"item\":}\n")
          + tm.len
          + 2 * ws->site_id.len
          + 2 * ws->url.len
          + NGX_INT_T_LEN + NGX_INT32_LEN
          + 2 * rlen
          + answer_len
          + ilen;

    line = ngx_alloc(len, log);
    if (line == NULL) {
        return;
    }

    p = ngx_sprintf(line, "{\"time\":\"%V\"", &tm);
    p = ngx_http_cio_dead_letter_str(p, "site_id", ws->site_id.data,
                                     ws->site_id.len);
    p = ngx_http_cio_dead_letter_str(p, "url", ws->url.data, ws->url.len);
    p = ngx_sprintf(p, ",\"status\":%l,\"attempts\":%uD", status,
                    batch->attempts[i]);
    p = ngx_http_cio_dead_letter_str(p, "reason", (u_char *) reason, rlen);
    p = ngx_cpymem(p, ",\"answer\":", sizeof(",\"answer\":") - 1);
    p = ngx_cpymem(p, answer, answer_len);
    p = ngx_cpymem(p, ",\"item\":", sizeof(",\"item\":") - 1);
    p = ngx_cpymem(p, item, ilen);
    *p++ = '}';
    *p++ = '\n';

    n = ngx_write_fd(mcf->dead_letter->fd, line, p - line);

    if (n != p - line) {
        len = ngx_min(ilen, NGX_HTTP_CIO_LOG_ITEM);

        ngx_log_error(NGX_LOG_CRIT, log, ngx_errno,
                      "cio: writing to the dead-letter file \"%V\" failed, "
                      "site \"%V\" loses an event (%s): %*s%s",
                      &mcf->dead_letter->name, &ws->site_id, reason,
                      len, item, len < ilen ? "..." : "");
    }

    ngx_free(line);
}


static u_char *
ngx_http_cio_dead_letter_str(u_char *p, const char *key, u_char *s,
    size_t len)
{
    p = ngx_sprintf(p, ",\"%s\":\"", key);
    p = (u_char *) ngx_escape_json(p, s, len);
    *p++ = '"';

    return p;
}
