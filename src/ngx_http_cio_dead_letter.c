/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * The dead-letter file: items Customer.io refused, or that failed more
 * than cio_retry_max times, one JSON line each with the item, the answer
 * and the time, so that an operator can fix them and replay them
 * (scripts/cio-replay.pl).  Written on a worker's event loop thread only,
 * with one write() per line to a file opened with O_APPEND by the master:
 * the lines of several workers never interleave.  With cio_journal, its
 * sync= policy syncs this file too (ngx_http_cio_journal_settled).
 */


#include "ngx_http_cio.h"


#define NGX_HTTP_CIO_LOG_ITEM  1024


static ngx_int_t ngx_http_cio_dead_letter_write(ngx_open_file_t *file,
    u_char *line, size_t len, ngx_log_t *log);
static ngx_int_t ngx_http_cio_dead_letter_lost(ngx_http_cio_main_conf_t *mcf,
    ngx_log_t *log, ngx_err_t err, ngx_http_cio_shws_t *ws,
    ngx_http_cio_batch_t *batch, ngx_uint_t i, u_char *item, long status,
    const char *reason);
static u_char *ngx_http_cio_dead_letter_str(u_char *p, const char *key,
    u_char *s, size_t len);


/*
 * One line: {"time":...,"site_id":...,"url":...,"status":...,
 * "attempts":...,"reason":...,"answer":...,"item":...}.  The item comes
 * last and verbatim, as the spool writes it, so that tools can cut it out
 * without re-encoding its numbers.  "answer" is JSON text prepared by the
 * caller (an object, a string or null).  NGX_OK: the line was written (or,
 * without a dead-letter file, the item logged); NGX_ERROR: the item is
 * lost, so that the caller does not count it as kept.
 */

ngx_int_t
ngx_http_cio_dead_letter(ngx_http_cio_main_conf_t *mcf, ngx_log_t *log,
    ngx_http_cio_shws_t *ws, ngx_http_cio_batch_t *batch, ngx_uint_t i,
    u_char *body, long status, const char *reason, u_char *answer,
    size_t answer_len)
{
    size_t      len, rlen, ilen;
    u_char     *line, *p, *item;
    ngx_int_t   rc;
    ngx_str_t   tm;

    item = body + batch->offs[i];
    ilen = batch->lens[i];
    rlen = ngx_strlen(reason);

    if (answer == NULL || answer_len == 0) {
        answer = (u_char *) "null";
        answer_len = sizeof("null") - 1;
    }

    if (mcf->dead_letter == NULL) {
        return ngx_http_cio_dead_letter_lost(mcf, log, 0, ws, batch, i, item,
                                             status, reason);
    }

    tm = ngx_cached_http_log_iso8601;

    len = sizeof("{\"time\":\"\",\"site_id\":\"\",\"url\":\"\",\"status\":"
                 ",\"attempts\":,\"reason\":\"\",\"answer\":,\"item\":}\n")
          + tm.len
          /* a control character is escaped to six bytes, not two */
          + ws->site_id.len
          + ngx_escape_json(NULL, ws->site_id.data, ws->site_id.len)
          + ws->url.len + ngx_escape_json(NULL, ws->url.data, ws->url.len)
          + NGX_INT_T_LEN + NGX_INT32_LEN
          + rlen + ngx_escape_json(NULL, (u_char *) reason, rlen)
          + answer_len
          + ilen;

    line = ngx_alloc(len, log);
    if (line == NULL) {
        (void) ngx_http_cio_dead_letter_lost(mcf, log, NGX_ENOMEM, ws, batch,
                                             i, item, status, reason);
        return NGX_ERROR;
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

    rc = ngx_http_cio_dead_letter_write(mcf->dead_letter, line, p - line,
                                        log);

    if (rc != NGX_OK) {
        (void) ngx_http_cio_dead_letter_lost(mcf, log, ngx_errno, ws, batch,
                                             i, item, status, reason);
    }

    ngx_free(line);

    return rc;
}


/*
 * A line is written whole or not at all: a short write (a full disk) is
 * cut off again, or the next line, of this worker or another, would be
 * glued to a broken one.  The workers append to one file (and share its
 * offset while the master's descriptor is theirs, until a reopen), so
 * where the broken tail begins is known only from the size before the
 * write, and only while no other worker appends: a record lock, which is
 * each process's own, keeps them out.  Lines are rare, the lock is cheap.
 * Closing any descriptor of the file drops the process's lock: the
 * journal's sync closes its copy in the event loop, not in its thread.
 */

static ngx_int_t
ngx_http_cio_dead_letter_write(ngx_open_file_t *file, u_char *line,
    size_t len, ngx_log_t *log)
{
    off_t            size;
    ssize_t          n;
    ngx_fd_t         fd;
    ngx_err_t        err;
    ngx_uint_t       locked;
    ngx_file_info_t  fi;

    static time_t    unlocked_alert;

    fd = file->fd;

    /* a signal (timer_resolution's SIGALRM) must not cost a line */
    do {
        err = ngx_lock_fd(fd);
    } while (err == NGX_EINTR);

    /*
     * a file system without record locks (ENOLCK) must not cost the
     * lines either: written without, as before the lock
     */
    locked = (err == 0);

    if (!locked && ngx_time() >= unlocked_alert) {
        /* once a minute: a stream of refusals must not flood the log */
        unlocked_alert = ngx_time() + 60;

        ngx_log_error(NGX_LOG_ALERT, log, err, ngx_lock_fd_n " \"%V\" "
                      "failed, lines are written without the lock",
                      &file->name);
    }

    size = (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) ? -1
                                                    : ngx_file_size(&fi);

    n = ngx_write_fd(fd, line, len);

    if (n == (ssize_t) len) {
        if (locked) {
            (void) ngx_unlock_fd(fd);
        }

        return NGX_OK;
    }

    err = ngx_errno;

    if (n > 0) {
        if (size == -1 || ftruncate(fd, size) == -1) {
            ngx_log_error(NGX_LOG_CRIT, log, ngx_errno,
                          "cio: the dead-letter file \"%V\" keeps the "
                          "first %z of %uz bytes of a line that could not "
                          "be written whole", &file->name, n, len);
        }

        /* a short write sets no errno: a full disk or a file size limit */
        err = NGX_ENOSPC;

    } else if (n == 0) {
        err = NGX_ENOSPC;
    }

    if (locked) {
        (void) ngx_unlock_fd(fd);
    }

    ngx_set_errno(err);

    return NGX_ERROR;
}


/*
 * An item that could not be kept is logged, at most once a second: a
 * full disk under a stream of refusals must not flood the error log too.
 * The next line says how many were not logged.  NGX_OK: logged.
 */

static ngx_int_t
ngx_http_cio_dead_letter_lost(ngx_http_cio_main_conf_t *mcf, ngx_log_t *log,
    ngx_err_t err, ngx_http_cio_shws_t *ws, ngx_http_cio_batch_t *batch,
    ngx_uint_t i, u_char *item, long status, const char *reason)
{
    size_t       len, ilen;
    u_char       more[NGX_INT_T_LEN + 48], cut[2 * NGX_SIZE_T_LEN + 48];
    u_char      *m, *c;

    static time_t      logged;
    static ngx_uint_t  unlogged;

    if (ngx_time() == logged) {
        unlogged++;
        return NGX_ERROR;
    }

    logged = ngx_time();

    m = more;

    if (unlogged) {
        m = ngx_sprintf(more, " (and %ui more since the last such line)",
                        unlogged);
        unlogged = 0;
    }

    ilen = batch->lens[i];
    len = ngx_min(ilen, NGX_HTTP_CIO_LOG_ITEM);

    c = cut;

    if (len < ilen) {
        c = ngx_sprintf(cut, "... (the first %uz of %uz bytes)", len, ilen);
    }

    if (mcf->dead_letter) {
        ngx_log_error(NGX_LOG_CRIT, log, err,
                      "cio: writing to the dead-letter file \"%V\" failed, "
                      "site \"%V\" loses an event%*s (%s, status %l, %uD "
                      "attempts): %*s%*s",
                      &mcf->dead_letter->name, &ws->site_id,
                      (size_t) (m - more), more, reason, status,
                      batch->attempts[i], len, item, (size_t) (c - cut), cut);

    } else {
        ngx_log_error(NGX_LOG_ERR, log, err,
                      "cio: site \"%V\" gave up on an event%*s (%s, status "
                      "%l, %uD attempts), no cio_dead_letter file to keep "
                      "it: %*s%*s",
                      &ws->site_id, (size_t) (m - more), more, reason,
                      status, batch->attempts[i], len, item,
                      (size_t) (c - cut), cut);
    }

    return NGX_OK;
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
