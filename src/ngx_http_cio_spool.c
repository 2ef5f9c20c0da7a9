/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * The spool file: what the queue still holds when nginx stops goes to a
 * file, and the next start loads it back.  File I/O only: the zone is
 * read and filled through queue.c.  Only the master touches the file:
 *
 *   - it writes it in exit_master, which runs on "nginx -s quit" and
 *     "-s stop" once every worker has exited (after their drain), and
 *     never on a reload, when the zone lives on;
 *   - it loads it in init_module, when the zone was just created, which
 *     happens once at start (and on a reload that resizes the zone), and
 *     not for "nginx -t".
 *
 * So two processes never write it at once.  Lines are appended, so that
 * what an earlier start could not load stays.  Once loaded the file is
 * renamed to PATH.loaded, a backup until the next load.
 *
 * A line: {"site_id":"...","url":"...","attempts":N,"item":{...}}, the item
 * last and verbatim, as in the dead-letter file.
 */


#include "ngx_http_cio.h"

#include <cjson/cJSON.h>


#define NGX_HTTP_CIO_SPOOL_BUF  65536


typedef struct {
    ngx_fd_t                     fd;
    u_char                      *buf;
    u_char                      *pos;
    u_char                      *end;
    ngx_uint_t                   failed;     /* errno of the first error */
} ngx_http_cio_spool_writer_t;


typedef struct {
    ngx_http_cio_spool_writer_t *w;
    ngx_log_t                   *log;
    ngx_http_cio_journal_t      *journal;
    ngx_uint_t                   n;
} ngx_http_cio_spool_walk_t;


typedef struct {
    ngx_uint_t                   loaded;
    ngx_uint_t                   unmatched;
    ngx_uint_t                   full;
    ngx_uint_t                   damaged;
} ngx_http_cio_spool_stats_t;


static ngx_int_t ngx_http_cio_spool_read(ngx_cycle_t *cycle,
    ngx_str_t *spool, ngx_http_cio_zone_t *zone);
static ngx_int_t ngx_http_cio_spool_slurp(ngx_cycle_t *cycle,
    ngx_str_t *spool, u_char **data, u_char **last);
static void ngx_http_cio_spool_report(ngx_log_t *log, ngx_str_t *spool,
    ngx_http_cio_spool_stats_t *stats);
static ngx_int_t ngx_http_cio_spool_line(ngx_http_cio_zone_t *zone,
    u_char *line, size_t len, ngx_http_cio_spool_stats_t *stats);
static void ngx_http_cio_spool_count(void *data, ngx_http_cio_node_t *node);
static void ngx_http_cio_spool_node(void *data, ngx_http_cio_node_t *node);
static void ngx_http_cio_spool_put(ngx_http_cio_spool_writer_t *w,
    u_char *p, size_t len);
static void ngx_http_cio_spool_flush(ngx_http_cio_spool_writer_t *w);


/* a spool that cannot be read stays where it is: nginx starts anyway */

void
ngx_http_cio_spool_load(ngx_cycle_t *cycle, ngx_str_t *spool,
    ngx_http_cio_zone_t *zone)
{
    if (spool->len) {
        (void) ngx_http_cio_spool_read(cycle, spool, zone);
    }
}


static ngx_int_t
ngx_http_cio_spool_read(ngx_cycle_t *cycle, ngx_str_t *spool,
    ngx_http_cio_zone_t *zone)
{
    u_char                      *data, *p, *last, *nl, *tmp, *loaded;
    ngx_int_t                    rc;
    ngx_uint_t                   kept;
    ngx_http_cio_spool_stats_t   stats;
    ngx_http_cio_spool_writer_t  w;

    rc = ngx_http_cio_spool_slurp(cycle, spool, &data, &last);

    if (rc != NGX_OK) {
        return (rc == NGX_DECLINED) ? NGX_OK : NGX_ERROR;
    }

    ngx_memzero(&w, sizeof(ngx_http_cio_spool_writer_t));
    w.fd = NGX_INVALID_FILE;

    tmp = ngx_alloc(spool->len + sizeof(".loaded"), cycle->log);
    loaded = ngx_alloc(spool->len + sizeof(".loaded"), cycle->log);

    if (tmp == NULL || loaded == NULL) {
        goto failed;
    }

    ngx_sprintf(tmp, "%V.new%Z", spool);
    ngx_sprintf(loaded, "%V.loaded%Z", spool);

    ngx_memzero(&stats, sizeof(ngx_http_cio_spool_stats_t));
    kept = 0;

    for (p = data; p < last; p = nl + 1) {
        nl = ngx_strlchr(p, last, '\n');

        if (nl == NULL) {
            /* the last line, cut short perhaps: it is checked as any */
            nl = last;
        }

        if (nl == p) {
            continue;
        }

        if (ngx_http_cio_spool_line(zone, p, nl - p, &stats) == NGX_OK)
        {
            continue;
        }

        /* what cannot be loaded now stays in the spool for a later start */

        if (w.fd == NGX_INVALID_FILE) {
            w.fd = ngx_open_file(tmp, NGX_FILE_WRONLY, NGX_FILE_TRUNCATE,
                                 NGX_FILE_DEFAULT_ACCESS);
            w.buf = ngx_alloc(NGX_HTTP_CIO_SPOOL_BUF, cycle->log);

            if (w.fd == NGX_INVALID_FILE || w.buf == NULL) {
                ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                              "cio: cannot write \"%s\", the spool \"%V\" "
                              "is left as it is", tmp, spool);
                goto failed;
            }

            w.pos = w.buf;
            w.end = w.buf + NGX_HTTP_CIO_SPOOL_BUF;
        }

        ngx_http_cio_spool_put(&w, p, nl - p);
        ngx_http_cio_spool_put(&w, (u_char *) "\n", 1);
        kept++;
    }

    if (w.fd != NGX_INVALID_FILE) {
        ngx_http_cio_spool_flush(&w);

        if (w.failed == 0 && fsync(w.fd) == -1) {
            w.failed = ngx_errno;
        }

        ngx_close_file(w.fd);
        w.fd = NGX_INVALID_FILE;

        if (w.failed) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, w.failed,
                          "cio: writing \"%s\" failed, the spool \"%V\" is "
                          "left as it is: its %ui loaded events will be "
                          "loaded again", tmp, spool, stats.loaded);
            rc = NGX_ERROR;
            goto done;
        }
    }

    if (ngx_rename_file(spool->data, loaded) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      "cio: renaming the spool \"%V\" failed, its %ui "
                      "events will be loaded again at the next start",
                      spool, stats.loaded);

    } else if (kept
               && ngx_rename_file(tmp, spool->data) == NGX_FILE_ERROR)
    {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      "cio: renaming \"%s\" to \"%V\" failed, the %ui lines "
                      "not loaded are in \"%s\"",
                      tmp, spool, kept, tmp);
    }

    ngx_http_cio_spool_report(cycle->log, spool, &stats);

    rc = NGX_OK;
    goto done;

failed:

    if (w.fd != NGX_INVALID_FILE) {
        ngx_close_file(w.fd);
        (void) ngx_delete_file(tmp);
    }

    rc = NGX_ERROR;

done:

    ngx_free(w.buf);
    ngx_free(loaded);
    ngx_free(tmp);
    ngx_free(data);

    return rc;
}


/* the whole file in memory; NGX_DECLINED: there is none */

static ngx_int_t
ngx_http_cio_spool_slurp(ngx_cycle_t *cycle, ngx_str_t *spool,
    u_char **data, u_char **last)
{
    u_char           *p;
    size_t            size;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_file_info_t   fi;

    *data = NULL;

    fd = ngx_open_file(spool->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        if (ngx_errno == NGX_ENOENT) {
            return NGX_DECLINED;
        }

        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      "cio: cannot open the spool \"%V\", its events are "
                      "not loaded", spool);
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      ngx_fd_info_n " \"%V\" failed", spool);
        goto failed;
    }

    size = (size_t) ngx_file_size(&fi);

    *data = ngx_alloc(size + 1, cycle->log);
    if (*data == NULL) {
        goto failed;
    }

    for (p = *data; p < *data + size; p += n) {
        n = ngx_read_fd(fd, p, *data + size - p);

        if (n == -1) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                          "cio: reading the spool \"%V\" failed", spool);
            goto failed;
        }

        if (n == 0) {
            break;
        }
    }

    *last = p;

    ngx_close_file(fd);

    return NGX_OK;

failed:

    ngx_close_file(fd);
    ngx_free(*data);
    *data = NULL;

    return NGX_ERROR;
}


static void
ngx_http_cio_spool_report(ngx_log_t *log, ngx_str_t *spool,
    ngx_http_cio_spool_stats_t *stats)
{
    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "cio: loaded %ui events from the spool \"%V\"",
                  stats->loaded, spool);

    if (stats->full) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "cio: %ui spooled events did not fit in cio_zone, "
                      "they stay in \"%V\" for the next start",
                      stats->full, spool);
    }

    if (stats->unmatched) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "cio: %ui spooled events are for a site and endpoint "
                      "no cio_ingest location uses, they stay in \"%V\"",
                      stats->unmatched, spool);
    }

    if (stats->damaged) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "cio: %ui lines of the spool are damaged, they stay "
                      "in \"%V\" to be fixed by hand",
                      stats->damaged, spool);
    }
}


/* NGX_OK: loaded; NGX_DECLINED: to keep in the spool */

static ngx_int_t
ngx_http_cio_spool_line(ngx_http_cio_zone_t *zone, u_char *line, size_t len,
    ngx_http_cio_spool_stats_t *stats)
{
    u_char               *item, *end;
    cJSON                *root, *site, *url, *attempts;
    uint32_t              n;
    ngx_str_t             s, u;
    ngx_http_cio_shws_t  *ws;

    static char           key[] = ",\"item\":";

    root = cJSON_ParseWithLength((char *) line, len);

    site = cJSON_GetObjectItemCaseSensitive(root, "site_id");
    url = cJSON_GetObjectItemCaseSensitive(root, "url");
    attempts = cJSON_GetObjectItemCaseSensitive(root, "attempts");

    /*
     * the item is cut out verbatim rather than re-encoded, so that its
     * numbers come back exactly as they went: `,"item":` cannot occur
     * inside a JSON string, whose quotes are escaped
     */

    item = ngx_strnstr(line, key, len);
    end = line + len;

    while (end > line && (end[-1] == ' ' || end[-1] == '\r')) {
        end--;
    }

    if (root == NULL
        || !cJSON_IsString(site) || !cJSON_IsString(url)
        || !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "item"))
        || item == NULL || end[-1] != '}')
    {
        cJSON_Delete(root);
        stats->damaged++;
        return NGX_DECLINED;
    }

    item += sizeof(key) - 1;
    end--;

    n = cJSON_IsNumber(attempts) && attempts->valuedouble >= 0
        ? (uint32_t) attempts->valuedouble : 0;

    s.data = (u_char *) site->valuestring;
    s.len = ngx_strlen(s.data);
    u.data = (u_char *) url->valuestring;
    u.len = ngx_strlen(u.data);

    ws = ngx_http_cio_queue_lookup(zone, &u, &s);

    cJSON_Delete(root);

    if (ws == NULL) {
        stats->unmatched++;
        return NGX_DECLINED;
    }

    if (end <= item
        || ngx_http_cio_queue_append(zone, ws, item, end - item, n, 0)
           != NGX_OK)
    {
        stats->full++;
        return NGX_DECLINED;
    }

    stats->loaded++;

    return NGX_OK;
}


/*
 * Runs in the master once every worker has exited (exit_master): nothing
 * else touches the zone any more, and queue.c walks it without the lock.
 */

void
ngx_http_cio_spool_save(ngx_cycle_t *cycle, ngx_str_t *spool,
    ngx_http_cio_zone_t *zone, ngx_http_cio_journal_t *journal)
{
    ngx_uint_t                    n, failed;
    ngx_http_cio_spool_walk_t     walk;
    ngx_http_cio_spool_writer_t   w;

    /*
     * What cio_journal holds is replayed from there: not spooled twice.
     * A journal a reload removed or replaced replays nothing at the next
     * start: its items are spooled.
     */
    ngx_memzero(&walk, sizeof(ngx_http_cio_spool_walk_t));
    walk.journal = journal;

    (void) ngx_http_cio_queue_walk(zone, ngx_http_cio_spool_count, &walk);

    n = walk.n;

    if (n == 0) {
        return;
    }

    if (spool->len == 0) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "cio: %ui undelivered events are lost with the zone: "
                      "set cio_spool to keep them across a stop", n);
        return;
    }

    ngx_memzero(&w, sizeof(ngx_http_cio_spool_writer_t));

    w.fd = ngx_open_file(spool->data, NGX_FILE_APPEND,
                         NGX_FILE_CREATE_OR_OPEN, NGX_FILE_DEFAULT_ACCESS);
    w.buf = ngx_alloc(NGX_HTTP_CIO_SPOOL_BUF, cycle->log);

    if (w.fd == NGX_INVALID_FILE || w.buf == NULL) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      "cio: cannot open the spool \"%V\", %ui undelivered "
                      "events are lost", spool, n);

        if (w.fd != NGX_INVALID_FILE) {
            ngx_close_file(w.fd);
        }

        ngx_free(w.buf);

        return;
    }

    w.pos = w.buf;
    w.end = w.buf + NGX_HTTP_CIO_SPOOL_BUF;

    walk.w = &w;
    walk.log = cycle->log;

    (void) ngx_http_cio_queue_walk(zone, ngx_http_cio_spool_node, &walk);

    ngx_http_cio_spool_flush(&w);

    if (w.failed == 0 && fsync(w.fd) == -1) {
        w.failed = ngx_errno;
    }

    failed = w.failed;

    ngx_close_file(w.fd);
    ngx_free(w.buf);

    if (failed) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, failed,
                      "cio: writing the spool \"%V\" failed, some of its "
                      "%ui events may be lost", spool, n);
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "cio: %ui undelivered events spooled to \"%V\"",
                  n, spool);
}


static void
ngx_http_cio_spool_count(void *data, ngx_http_cio_node_t *node)
{
    ngx_http_cio_spool_walk_t *walk = data;

    if (!ngx_http_cio_journal_holds(walk->journal, node->jref)) {
        walk->n++;
    }
}


static void
ngx_http_cio_spool_node(void *data, ngx_http_cio_node_t *node)
{
    ngx_http_cio_spool_walk_t *walk = data;

    u_char                       *p, *head;
    size_t                        len;
    ngx_http_cio_shws_t          *ws;
    ngx_http_cio_spool_writer_t  *w;

    if (ngx_http_cio_journal_holds(walk->journal, node->jref)) {
        return;
    }

    w = walk->w;
    ws = node->ws;

    len = sizeof("{\"site_id\":\"\",\"url\":\"\",\"attempts\":,\"item\":")
          + 2 * ws->site_id.len + 2 * ws->url.len + NGX_INT32_LEN;

    head = ngx_alloc(len, walk->log);
    if (head == NULL) {
        w->failed = NGX_ENOMEM;
        return;
    }

    p = ngx_cpymem(head, "{\"site_id\":\"", sizeof("{\"site_id\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, ws->site_id.data, ws->site_id.len);
    p = ngx_cpymem(p, "\",\"url\":\"", sizeof("\",\"url\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, ws->url.data, ws->url.len);
    p = ngx_sprintf(p, "\",\"attempts\":%uD,\"item\":", node->attempts);

    ngx_http_cio_spool_put(w, head, p - head);
    ngx_http_cio_spool_put(w, node->data, node->len);
    ngx_http_cio_spool_put(w, (u_char *) "}\n", 2);

    ngx_free(head);
}


static void
ngx_http_cio_spool_put(ngx_http_cio_spool_writer_t *w, u_char *p,
    size_t len)
{
    size_t  n;

    while (len) {
        if (w->pos == w->end) {
            ngx_http_cio_spool_flush(w);
        }

        n = ngx_min(len, (size_t) (w->end - w->pos));
        w->pos = ngx_cpymem(w->pos, p, n);
        p += n;
        len -= n;
    }
}


static void
ngx_http_cio_spool_flush(ngx_http_cio_spool_writer_t *w)
{
    u_char   *p;
    ssize_t   n;

    for (p = w->buf; p < w->pos && w->failed == 0; p += n) {
        n = ngx_write_fd(w->fd, p, w->pos - p);

        if (n <= 0) {
            w->failed = n ? ngx_errno : NGX_ENOSPC;
            break;
        }
    }

    w->pos = w->buf;
}
