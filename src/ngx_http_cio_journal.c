/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * cio_journal: every item a request brings is written to a file before the
 * request is answered 200, so that it outlives every nginx process (and,
 * once synced, the machine).  The zone stays the queue; the journal is
 * what a start reloads it from.
 *
 * The directory holds segments, NNNNNNNN.seg, appended to one after the
 * other, and beside each its settled list, NNNNNNNN.ack.  A record is one
 * item:
 *
 *   magic "CIOJ" (4) | length of what follows the header (4) | crc32 (4) |
 *   site_id length (2) | url length (2) | site_id | url | item |
 *   segment number (4)
 *
 * in the machine's byte order; the crc covers everything after itself.
 * Each write ends with an end mark, "CIOE" (4) | 4 (4) | crc32 (4) |
 * segment number (4), which the next write overwrites.
 * An item is known by its segment's number and its record's offset (the
 * jref, kept in its zone node).  When it is settled (delivered or
 * dead-lettered) the worker appends the offset to the .ack file: 4 bytes
 * and their crc32 mixed with the segment's number.  A segment whose every
 * record is settled, and which is not the one written to, is deleted with
 * its .ack.  A record of another segment number ends a segment as its end
 * mark does: an earlier version wrote new segments over settled ones'
 * files.
 *
 * The page cache holds little of the journal: a busy segment's file is
 * allocated and read in ahead of its writes (ngx_http_cio_journal_ahead),
 * so that the event loop writes into pages that are there already, and
 * each sync (sync=off has none) drops the pages it made clean
 * (POSIX_FADV_DONTNEED): nothing but a start reads them again, and a
 * journal that grows through an outage of Customer.io does not push the
 * machine's other files out of memory.  The pages so freed are the next
 * ones the kernel hands out.
 *
 * Workers append under the mutex of the journal's own small shared
 * memory zone, which also counts each live segment's records and settled
 * ones: the records of the requests of one event loop pass in one
 * pwritev() at the offset the zone keeps, and a write cut short is
 * truncated away again before the 503s.  nginx's master unlocks that
 * mutex when a worker dies holding it, as it does the queue's.  An ack is
 * written under the same mutex, so that a segment is never deleted while
 * anything still writes to it.
 *
 * At start (when the journal's zone is new) the master reads every
 * segment: records neither settled nor damaged go back into the queue, in
 * order; a damaged record or a torn tail is logged and skipped (the next
 * good record is found again by its magic and crc); writing goes on in a
 * new segment, never after a torn tail.
 *
 * Syncing: sync=off leaves the data to the page cache (it survives the
 * death of every nginx process, not of the machine); sync=TIME has each
 * worker fdatasync() what it wrote every TIME, in nginx's thread pool
 * "cio_journal" if one is configured, else "default", when nginx has
 * threads, so that the event loop never waits for the disk; sync=always
 * has the request wait (ngx_http_cio_journal_wait) for the sync that
 * covers its write, and a sync covers every write of the worker before
 * it began: the requests that came while one ran share the next.  The
 * dead-letter file is synced by the same rounds, and a dead-lettered
 * item's ack is written only after its line is synced.  The same pool,
 * whatever the policy, allocates a busy segment ahead of its writes
 * (ngx_http_cio_journal_ahead).
 */


#include "ngx_http_cio.h"

#include <sys/file.h>
#include <zlib.h>
#if (NGX_LINUX)
#include <malloc.h>
#endif
#if (NGX_HTTP_CIO_LIBDEFLATE)
#include <libdeflate.h>
#endif


#define NGX_HTTP_CIO_J_MAGIC       0x4a4f4943       /* "CIOJ" */
#define NGX_HTTP_CIO_J_END_MAGIC   0x454f4943       /* "CIOE" */
#define NGX_HTTP_CIO_J_HEADER      16
#define NGX_HTTP_CIO_J_END         16
#define NGX_HTTP_CIO_J_MAX_RECORD  (16 * 1024 * 1024)
#define NGX_HTTP_CIO_J_SEGS        256
#define NGX_HTTP_CIO_J_MIN_SEG     (NGX_HTTP_CIO_J_MIN_SIZE / 2)
#define NGX_HTTP_CIO_J_MAX_SEG     (64 * 1024 * 1024)
#define NGX_HTTP_CIO_J_ALERT_EVERY 60
#define NGX_HTTP_CIO_J_OLD_FDS     16
#define NGX_HTTP_CIO_J_NAME_LEN    sizeof("/00000000.seg")
#define NGX_HTTP_CIO_J_AHEAD       (1024 * 1024)
#define NGX_HTTP_CIO_J_IOVS        64
#define NGX_HTTP_CIO_J_PASS        (1024 * 1024)
#define NGX_HTTP_CIO_J_TRIM        (16 * 1024 * 1024)
#define NGX_HTTP_CIO_J_MMAP        (4 * 1024 * 1024)
#define NGX_HTTP_CIO_J_KEEP        1000

/* zlib's crc32, libdeflate's when it is there: the same sums, faster */
#if (NGX_HTTP_CIO_LIBDEFLATE)
#define ngx_http_cio_crc32(crc, p, n)                                        \
    ((uint32_t) libdeflate_crc32(crc, p, n))
#else
#define ngx_http_cio_crc32(crc, p, n)                                        \
    ((uint32_t) crc32(crc, p, n))
#endif

/*
 * A jref: the journal's id (8 bits), the segment's number (24), the
 * record's offset (32).  The id tells the records of the journal a reload
 * replaced from this one's, whose segment numbers may be the same.
 */
#define NGX_HTTP_CIO_J_MAX_NO      0xffffff
#define ngx_http_cio_jref(id, no, off)                                       \
    ((uint64_t) (id) << 56 | (uint64_t) (no) << 32 | (uint32_t) (off))
#define ngx_http_cio_jref_id(jref)   ((uint32_t) ((jref) >> 56))
#define ngx_http_cio_jref_no(jref)   ((uint32_t) ((jref) >> 32) & 0xffffff)

/* what failed, for ngx_http_cio_journal_failed */
#define NGX_HTTP_CIO_J_WRITE       0
#define NGX_HTTP_CIO_J_SYNC        1
#define NGX_HTTP_CIO_J_ACK         2


/* a live segment, in the journal's zone; no 0: a free slot */
typedef struct {
    uint32_t                     no;
    uint32_t                     records;
    uint32_t                     settled;
    uint32_t                     size;       /* written: the next offset */
    uint32_t                     disk;       /* the file's size, >= size */
} ngx_http_cio_jseg_t;


typedef struct {
    uint32_t                     magic;
    uint32_t                     id;         /* 1 .. 255, in the jrefs */
    uint32_t                     active;     /* written to; 0: none yet */
    uint32_t                     last;       /* the highest number used */
    uint64_t                     total;      /* bytes of its files */
    ngx_atomic_t                 alert_at[3]; /* unix s: next alert */
    ngx_http_cio_jseg_t          segs[NGX_HTTP_CIO_J_SEGS];
} ngx_http_cio_jsh_t;


struct ngx_http_cio_journal_s {
    ngx_str_t                    path;       /* NUL-ended */
    off_t                        max_size;
    size_t                       seg_size;
    ngx_uint_t                   sync;
    ngx_msec_t                   interval;
    ngx_shm_zone_t              *shm_zone;
    ngx_http_cio_jsh_t          *sh;
    ngx_slab_pool_t             *shpool;
    ngx_cycle_t                 *cycle;      /* the one it was read for */
    ngx_fd_t                     lock_fd;    /* PATH/lock, the master's */
#if (NGX_THREADS)
    ngx_thread_pool_t           *tp;
#endif
    unsigned                     fresh:1;
    unsigned                     taken:1;    /* by a cycle that started */
};


/* a worker's side: its files and its sync timer */
typedef struct {
    ngx_http_cio_journal_t      *j;
    ngx_log_t                   *log;
    ngx_fd_t                     fd;         /* the segment written to */
    uint32_t                     no;
    ngx_fd_t                     ack_fd;
    uint32_t                     ack_no;
    ngx_fd_t                     old[NGX_HTTP_CIO_J_OLD_FDS];
    ngx_uint_t                   nold;       /* written, to sync, close */
    ngx_fd_t                     evict;      /* left with old full */
    ngx_err_t                    sync_err;   /* of a sync outside a round */
    ngx_event_t                  timer;
    ngx_event_t                  keep;       /* while requests wait */
    uint64_t                     wseq;       /* writes so far */
    uint32_t                     end;        /* after the last, in no */
    ngx_queue_t                  waiting;    /* ngx_http_cio_jwait_t */
    ngx_http_cio_jappend_t      *appends;    /* this pass's, to write */
    ngx_http_cio_jappend_t     **appends_tail;
    ngx_event_t                  flush;
    u_char                      *pass;       /* their records */
    size_t                       pass_used;
    ngx_open_file_t             *dl;         /* cio_dead_letter, or NULL */
    uint64_t                    *dead;       /* acks that wait for it */
    ngx_uint_t                   ndead;
    ngx_uint_t                   dtaken;     /* of them, the sync's */
    ngx_uint_t                   dcap;
    unsigned                     dirty:1;
    unsigned                     newseg:1;   /* its name not synced yet */
    unsigned                     syncing:1;
    unsigned                     flushing:1;
    unsigned                     preparing:1;
#if (NGX_THREADS)
    ngx_thread_task_t           *task;
    ngx_thread_task_t           *prep;
#endif
} ngx_http_cio_jworker_t;


/* what a sync task takes to the thread: fds it syncs and closes */
typedef struct {
    ngx_fd_t                     fds[NGX_HTTP_CIO_J_OLD_FDS + 3];
    ngx_uint_t                   n;
    ngx_err_t                    err;
    uint64_t                     seq;        /* the last write it covers */
    uint32_t                     no;         /* for the debug line */
    uint32_t                     end;
    ngx_int_t                    active;     /* fds[active]: segment no */
    off_t                        drop;       /* of it: pages it drops */
    off_t                        dl_end;     /* -1: not the dead letters */
    ngx_int_t                    dl;         /* fds[dl]: theirs; -1: none */
    ngx_err_t                    dl_err;     /* theirs, the last fd */
    ngx_int_t                    dir;        /* fds[dir]: the journal's */
} ngx_http_cio_jsync_t;


/* what a prepare task takes to the thread: a dup of the segment's fd */
typedef struct {
    ngx_fd_t                     fd;
    off_t                        off;
    size_t                       len;
    ngx_err_t                    err;
} ngx_http_cio_jprep_t;


typedef struct {
    ngx_uint_t                   segments;
    ngx_uint_t                   records;
    ngx_uint_t                   loaded;
    ngx_uint_t                   settled;
    ngx_uint_t                   unmatched;
    ngx_uint_t                   full;
    ngx_uint_t                   damaged;
} ngx_http_cio_jstats_t;


static ngx_int_t ngx_http_cio_journal_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_cio_journal_name(ngx_http_cio_journal_t *j,
    u_char *buf, uint32_t no, const char *ext);
static ngx_int_t ngx_http_cio_journal_dir(ngx_http_cio_journal_t *j);
static void ngx_http_cio_journal_unlock(void *data);
static void ngx_http_cio_journal_delete_all(ngx_http_cio_journal_t *j,
    uint32_t *gone, ngx_uint_t n);
static ngx_int_t ngx_http_cio_journal_lock(ngx_cycle_t *cycle,
    ngx_http_cio_journal_t *j);
static ngx_int_t ngx_http_cio_journal_replay(ngx_cycle_t *cycle,
    ngx_http_cio_journal_t *j, ngx_http_cio_zone_t *zone,
    ngx_http_cio_jstats_t *st);
static ngx_int_t ngx_http_cio_journal_segment(ngx_cycle_t *cycle,
    ngx_http_cio_journal_t *j, ngx_http_cio_zone_t *zone, uint32_t no,
    ngx_http_cio_jstats_t *st);
static uint32_t *ngx_http_cio_journal_acks(ngx_cycle_t *cycle,
    ngx_http_cio_journal_t *j, uint32_t no, ngx_uint_t *n);
static ngx_int_t ngx_http_cio_journal_record(ngx_cycle_t *cycle,
    ngx_http_cio_zone_t *zone, u_char *p, size_t len, uint64_t jref,
    ngx_http_cio_jstats_t *st);
static u_char *ngx_http_cio_journal_slurp(ngx_cycle_t *cycle, u_char *name,
    size_t *size);
static ngx_int_t ngx_http_cio_journal_check(u_char *p, u_char *last,
    uint32_t no, size_t *len);
static ngx_http_cio_jseg_t *ngx_http_cio_journal_find(
    ngx_http_cio_journal_t *j, uint32_t no);
static void ngx_http_cio_journal_seal(u_char *buf, size_t len,
    uint32_t *offs, ngx_uint_t n, uint32_t no);
static void ngx_http_cio_journal_flush(ngx_event_t *ev);
static void ngx_http_cio_journal_keep(ngx_event_t *ev);
static u_char *ngx_http_cio_journal_pass(size_t len);
static ngx_http_cio_jappend_t *ngx_http_cio_journal_write(
    ngx_http_cio_journal_t *j, ngx_http_cio_jappend_t *first);
static ngx_uint_t ngx_http_cio_journal_run(ngx_http_cio_journal_t *j,
    ngx_http_cio_jseg_t *seg, ngx_http_cio_jappend_t *first, size_t *len,
    uint32_t *grow);
static ngx_http_cio_jseg_t *ngx_http_cio_journal_next(
    ngx_http_cio_journal_t *j, size_t len, ngx_log_t *log, uint32_t *gone);
static ngx_http_cio_jseg_t *ngx_http_cio_journal_active(
    ngx_http_cio_journal_t *j);
static ngx_uint_t ngx_http_cio_journal_room(ngx_http_cio_journal_t *j,
    ngx_http_cio_jseg_t *seg, size_t len);
static uint32_t ngx_http_cio_journal_retire(ngx_http_cio_journal_t *j,
    ngx_http_cio_jseg_t *seg);
static ngx_int_t ngx_http_cio_journal_open(ngx_http_cio_journal_t *j,
    ngx_log_t *log);
static void ngx_http_cio_journal_evict(ngx_http_cio_journal_t *j);
static void ngx_http_cio_journal_failed(ngx_http_cio_journal_t *j,
    ngx_log_t *log, ngx_err_t err, ngx_uint_t what);
static void ngx_http_cio_journal_delete(ngx_http_cio_journal_t *j,
    uint32_t no, ngx_log_t *log);
static void ngx_http_cio_journal_settle(uint64_t *jrefs, u_char *acts,
    ngx_uint_t n, u_char act);
static void ngx_http_cio_journal_defer(uint64_t *jrefs, u_char *acts,
    ngx_uint_t n, u_char act);
static void ngx_http_cio_journal_undefer(ngx_uint_t n, ngx_err_t err);
static void ngx_http_cio_journal_ack(ngx_http_cio_jseg_t *seg,
    uint32_t *offs, ngx_uint_t n);
static void ngx_http_cio_journal_timer(ngx_event_t *ev);
static void ngx_http_cio_journal_sync(void);
static void ngx_http_cio_journal_sync_dl(ngx_http_cio_jsync_t *js);
static void ngx_http_cio_journal_sync_thread(void *data, ngx_log_t *log);
#if (NGX_THREADS)
static void ngx_http_cio_journal_sync_done(ngx_event_t *ev);
#endif
static void ngx_http_cio_journal_synced(ngx_http_cio_jsync_t *t);
static size_t ngx_http_cio_journal_ahead(ngx_http_cio_journal_t *j,
    ngx_http_cio_jseg_t *seg, off_t *from);
static void ngx_http_cio_journal_prepare(off_t off, size_t len);
#if (NGX_THREADS)
static void ngx_http_cio_journal_prepare_thread(void *data, ngx_log_t *log);
static void ngx_http_cio_journal_prepare_done(ngx_event_t *ev);
#endif
static int ngx_libc_cdecl ngx_http_cio_journal_cmp(const void *a,
    const void *b);


static ngx_http_cio_jworker_t  ngx_http_cio_jw;

/* the master's: the id of the last journal new to it */
static uint32_t                ngx_http_cio_journal_last_id;

static ngx_connection_t        ngx_http_cio_jdummy;


/*
 * The journal cio_journal names, module.c having read its parameters:
 * path is full and without a trailing slash, sync one of
 * NGX_HTTP_CIO_JOURNAL_SYNC_*, interval for sync=TIME.
 */

ngx_http_cio_journal_t *
ngx_http_cio_journal_add(ngx_conf_t *cf, ngx_str_t *path, off_t max_size,
    ngx_uint_t sync, ngx_msec_t interval)
{
    ngx_str_t                name;
    ngx_http_cio_journal_t  *j;

    j = ngx_pcalloc(cf->pool, sizeof(ngx_http_cio_journal_t));
    if (j == NULL) {
        return NULL;
    }

    j->path = *path;
    j->max_size = max_size;
    j->cycle = cf->cycle;
    j->lock_fd = NGX_INVALID_FILE;

    j->sync = sync;
    j->interval = interval;

    /* some segments to the journal, none so large it waits long to go */
    j->seg_size = ngx_max(ngx_min(j->max_size / 8, NGX_HTTP_CIO_J_MAX_SEG),
                          NGX_HTTP_CIO_J_MIN_SEG);

    /* a zone per directory: a reload that moves it starts a new one */
    name.len = sizeof("cio_journal:") - 1 + j->path.len;
    name.data = ngx_pnalloc(cf->pool, name.len);
    if (name.data == NULL) {
        return NULL;
    }

    ngx_sprintf(name.data, "cio_journal:%V", &j->path);

    j->shm_zone = ngx_shared_memory_add(cf, &name, 8 * ngx_pagesize,
                                        &ngx_http_cio_module);
    if (j->shm_zone == NULL) {
        return NULL;
    }

    if (j->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "journal \"%V\" is duplicate", &j->path);
        return NULL;
    }

    j->shm_zone->init = ngx_http_cio_journal_init_zone;
    j->shm_zone->data = j;

#if (NGX_THREADS)
    {
    ngx_str_t  tp = ngx_string("cio_journal");

    /* "thread_pool cio_journal threads=N;" before http, else "default" */
    j->tp = ngx_thread_pool_get(cf->cycle, &tp);

    if (j->tp == NULL) {
        j->tp = ngx_thread_pool_add(cf, NULL);
    }

    if (j->tp == NULL) {
        return NULL;
    }
    }
#endif

    return j;
}


static ngx_int_t
ngx_http_cio_journal_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_cio_journal_t  *oj = data;

    ngx_pool_cleanup_t      *cln;
    ngx_http_cio_journal_t  *j;

    j = shm_zone->data;

    if (oj) {
        j->sh = oj->sh;
        j->shpool = oj->shpool;
        j->lock_fd = oj->lock_fd;
        return NGX_OK;
    }

    j->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        j->sh = j->shpool->data;
        return NGX_OK;
    }

    /*
     * Here, not in init_module: a zone that fails refuses the reload,
     * where init_module's failure would end the master.
     */
    if (!ngx_test_config && ngx_http_cio_journal_dir(j) != NGX_OK) {
        return NGX_ERROR;
    }

    /* a reload that fails after this would keep the lock: no reload then */
    if (j->lock_fd != NGX_INVALID_FILE) {
        cln = ngx_pool_cleanup_add(j->cycle->pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }

        cln->handler = ngx_http_cio_journal_unlock;
        cln->data = j;
    }

    j->sh = ngx_slab_calloc(j->shpool, sizeof(ngx_http_cio_jsh_t));
    if (j->sh == NULL) {
        return NGX_ERROR;
    }

    j->sh->magic = NGX_HTTP_CIO_J_MAGIC;
    j->sh->id = 1;
    j->shpool->data = j->sh;
    j->fresh = 1;

    return NGX_OK;
}


static void
ngx_http_cio_journal_name(ngx_http_cio_journal_t *j, u_char *buf,
    uint32_t no, const char *ext)
{
    ngx_sprintf(buf, "%V/%08xD.%s%Z", &j->path, no, ext);
}


/*
 * The master, in init_module, not for "nginx -t": a journal zone new to
 * it (at start, or a reload that names a new directory) is filled from
 * the directory, and the queue from its records, when the queue's zone is
 * new too (no worker uses it yet).  A reload that adds a journal to a
 * queue kept from before only takes the segments' counts: their records
 * go to the queue at the next start.
 */

ngx_int_t
ngx_http_cio_journal_start(ngx_cycle_t *cycle, ngx_http_cio_journal_t *j,
    ngx_http_cio_zone_t *zone, ngx_uint_t fresh)
{
    ngx_http_cio_jstats_t  st;

    if (j == NULL || !j->fresh) {
        return NGX_OK;
    }

    j->fresh = 0;

    /*
     * A journal new to this master takes the next id: the items queued
     * from one a reload replaced (or removed, and the next added) keep
     * their jrefs, which must not settle this one's records.
     */
    ngx_http_cio_journal_last_id = ngx_http_cio_journal_last_id % 255 + 1;
    j->sh->id = ngx_http_cio_journal_last_id;

    ngx_memzero(&st, sizeof(ngx_http_cio_jstats_t));

    if (ngx_http_cio_journal_replay(cycle, j, fresh ? zone : NULL, &st)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "cio: journal \"%V\": %ui records in %ui segments, "
                  "%ui settled, %ui queued again",
                  &j->path, st.records, st.segments, st.settled,
                  st.loaded);

    if (!fresh && st.records > st.settled) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "cio: journal \"%V\": the queue was kept by the "
                      "reload, its %ui unsettled records are queued at the "
                      "next start", &j->path, st.records - st.settled);
    }

    if (st.full) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "cio: journal \"%V\": %ui records did not fit in "
                      "cio_zone, they stay in the journal for the next "
                      "start", &j->path, st.full);
    }

    if (st.unmatched) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "cio: journal \"%V\": %ui records are for a site and "
                      "endpoint no cio_ingest location uses, they stay in "
                      "the journal", &j->path, st.unmatched);
    }

    return NGX_OK;
}


/*
 * A journal zone new to the master, before the cycle is taken: its
 * directory is there, the workers' to write, readable, and this nginx's.
 */

static ngx_int_t
ngx_http_cio_journal_dir(ngx_http_cio_journal_t *j)
{
    ngx_dir_t         dir;
    ngx_cycle_t      *cycle;
    ngx_core_conf_t  *ccf;

    cycle = j->cycle;

    if (ngx_create_dir(j->path.data, 0700) == NGX_FILE_ERROR
        && ngx_errno != NGX_EEXIST)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      ngx_create_dir_n " \"%V\" failed", &j->path);
        return NGX_ERROR;
    }

    /* the workers write it */
    if (geteuid() == 0) {
        ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx,
                                               ngx_core_module);

        if (ccf && ccf->user != (ngx_uid_t) NGX_CONF_UNSET_UINT
            && chown((char *) j->path.data, ccf->user, -1) == -1)
        {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          "chown(\"%V\") failed", &j->path);
        }
    }

    if (ngx_open_dir(&j->path, &dir) == NGX_ERROR) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      ngx_open_dir_n " \"%V\" failed", &j->path);
        return NGX_ERROR;
    }

    (void) ngx_close_dir(&dir);

    return ngx_http_cio_journal_lock(cycle, j);
}


/*
 * One nginx to a journal: the master locks PATH/lock while the journal is
 * in its configuration, its workers as long as they live (the kernel
 * drops the lock with the last of them, however they die).  Another nginx
 * on the same directory, such as the new master of a binary upgrade (the
 * fd is not inherited across exec), would write segments under the same
 * numbers: it does not start.  Nor does a reload that names a directory
 * the workers of an older configuration still write to.
 */

static ngx_int_t
ngx_http_cio_journal_lock(ngx_cycle_t *cycle, ngx_http_cio_journal_t *j)
{
    u_char    *name;
    ngx_fd_t   fd;

    name = ngx_pnalloc(cycle->pool, j->path.len + sizeof("/lock"));
    if (name == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(name, "%V/lock%Z", &j->path);

    fd = open((char *) name, O_RDWR|O_CREAT|O_CLOEXEC, 0600);

    if (fd == -1) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "open() \"%s\" failed", name);
        return NGX_ERROR;
    }

    if (flock(fd, LOCK_EX|LOCK_NB) == -1) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "cio: the journal \"%V\" is in use by another nginx "
                      "(a binary upgrade? stop that one, then start this "
                      "one: the journal keeps the queue), or by the workers "
                      "of an earlier configuration of this one (reload "
                      "again once they have exited)", &j->path);
        (void) close(fd);
        return NGX_ERROR;
    }

    j->lock_fd = fd;

    return NGX_OK;
}


/* whether a start with this journal queues the item again */

ngx_uint_t
ngx_http_cio_journal_holds(ngx_http_cio_journal_t *j, uint64_t jref)
{
    return j != NULL && j->sh != NULL && jref != 0
           && ngx_http_cio_jref_id(jref) == j->sh->id;
}


/*
 * The master, once a cycle is taken (init_module): its journal's lock is
 * its own now.  A reload that no longer has the old configuration's
 * journal leaves its lock to the old workers until they exit, and the new
 * ones do not inherit it.
 */

void
ngx_http_cio_journal_cycle(ngx_http_cio_journal_t *oj,
    ngx_http_cio_journal_t *j)
{
    if (j != NULL) {
        j->taken = 1;
    }

    if (oj == NULL || oj->lock_fd == NGX_INVALID_FILE
        || (j && j->sh == oj->sh))
    {
        return;
    }

    (void) close(oj->lock_fd);
    oj->lock_fd = NGX_INVALID_FILE;
}


/* the cycle that locked the journal did not start: nothing holds it */

static void
ngx_http_cio_journal_unlock(void *data)
{
    ngx_http_cio_journal_t *j = data;

    if (!j->taken && j->lock_fd != NGX_INVALID_FILE) {
        (void) close(j->lock_fd);
        j->lock_fd = NGX_INVALID_FILE;
    }
}


static ngx_int_t
ngx_http_cio_journal_replay(ngx_cycle_t *cycle, ngx_http_cio_journal_t *j,
    ngx_http_cio_zone_t *zone, ngx_http_cio_jstats_t *st)
{
    u_char           *name, *p;
    size_t            len;
    uint32_t          no, *nos;
    ngx_dir_t         dir;
    ngx_uint_t        i, n, cap;
    ngx_file_info_t   fi;

    if (ngx_open_dir(&j->path, &dir) == NGX_ERROR) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      ngx_open_dir_n " \"%V\" failed", &j->path);
        return NGX_ERROR;
    }

    n = 0;
    cap = 64;
    nos = ngx_alloc(cap * sizeof(uint32_t), cycle->log);

    for ( ;; ) {
        ngx_set_errno(0);

        if (ngx_read_dir(&dir) == NGX_ERROR) {
            if (ngx_errno == 0) {
                break;
            }

            /*
             * a segment not listed would be written again under its own
             * number, over records it holds that were answered 200
             */
            ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                          ngx_read_dir_n " \"%V\" failed", &j->path);
            ngx_free(nos);
            nos = NULL;
            break;
        }

        name = ngx_de_name(&dir);
        len = ngx_de_namelen(&dir);

        /* NNNNNNNN.seg, NNNNNNNN.ack */
        if (len != 12 || nos == NULL) {
            continue;
        }

        for (p = name; p < name + 8; p++) {
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
                break;
            }
        }

        if (p != name + 8) {
            continue;
        }

        no = (uint32_t) ngx_hextoi(name, 8);

        if (no == 0 || no > NGX_HTTP_CIO_J_MAX_NO
            || (ngx_strncmp(name + 8, ".seg", 4) != 0
                && ngx_strncmp(name + 8, ".ack", 4) != 0))
        {
            continue;
        }

        if (no > j->sh->last) {
            j->sh->last = no;
        }

        if (ngx_strncmp(name + 8, ".ack", 4) == 0) {
            continue;
        }

        if (n == cap) {
            p = ngx_alloc(2 * cap * sizeof(uint32_t), cycle->log);
            if (p == NULL) {
                ngx_free(nos);
                nos = NULL;
                continue;
            }

            ngx_memcpy(p, nos, cap * sizeof(uint32_t));
            ngx_free(nos);
            nos = (uint32_t *) p;
            cap *= 2;
        }

        nos[n++] = no;
    }

    ngx_close_dir(&dir);

    if (nos == NULL) {
        return NGX_ERROR;
    }

    /* oldest first: the queue gets them in the order they came */
    ngx_qsort(nos, n, sizeof(uint32_t), ngx_http_cio_journal_cmp);

    for (i = 0; i < n; i++) {
        (void) ngx_http_cio_journal_segment(cycle, j, zone, nos[i], st);
    }

    ngx_free(nos);

    /* .ack files whose segment is gone: deleted in between, at a crash */

    name = ngx_alloc(j->path.len + NGX_HTTP_CIO_J_NAME_LEN, cycle->log);
    if (name == NULL) {
        return NGX_OK;
    }

    for (no = 1; no <= j->sh->last && no != 0; no++) {
        if (ngx_http_cio_journal_find(j, no) != NULL) {
            continue;
        }

        ngx_http_cio_journal_name(j, name, no, "seg");

        if (ngx_file_info(name, &fi) != NGX_FILE_ERROR) {
            continue;
        }

        ngx_http_cio_journal_name(j, name, no, "ack");
        (void) ngx_delete_file(name);
    }

    /* the file an earlier version kept to write the next segment over */
    ngx_sprintf(name, "%V/spare%Z", &j->path);
    (void) ngx_delete_file(name);

    ngx_free(name);

    return NGX_OK;
}


static int ngx_libc_cdecl
ngx_http_cio_journal_cmp(const void *a, const void *b)
{
    uint32_t  x, y;

    x = *(const uint32_t *) a;
    y = *(const uint32_t *) b;

    return (x < y) ? -1 : (x > y);
}


/*
 * One segment: its settled offsets, then its records in order, up to its
 * end mark, or to the records of the segment its file was before.  A
 * record that fails its checks is skipped byte by byte until a good one
 * begins: what a torn write or a flipped bit leaves is logged with where
 * it is, and never becomes an item.
 */

static ngx_int_t
ngx_http_cio_journal_segment(ngx_cycle_t *cycle, ngx_http_cio_journal_t *j,
    ngx_http_cio_zone_t *zone, uint32_t no, ngx_http_cio_jstats_t *st)
{
    u_char               *data, *p, *last, *bad, *name;
    size_t                size, len;
    uint32_t             *acks, off;
    ngx_int_t             rc;
    ngx_uint_t            nacks, records, settled;
    ngx_http_cio_jseg_t  *seg;

    name = ngx_alloc(j->path.len + NGX_HTTP_CIO_J_NAME_LEN, cycle->log);
    if (name == NULL) {
        return NGX_ERROR;
    }

    ngx_http_cio_journal_name(j, name, no, "seg");

    data = ngx_http_cio_journal_slurp(cycle, name, &size);
    if (data == NULL) {
        ngx_free(name);
        return NGX_ERROR;
    }

    acks = ngx_http_cio_journal_acks(cycle, j, no, &nacks);

    /*
     * No slot left to follow it (below): its records are not queued, so
     * that their settling is not lost; they wait for a later start.
     */
    if (ngx_http_cio_journal_find(j, 0) == NULL) {
        zone = NULL;
    }

    records = 0;
    settled = 0;
    bad = NULL;
    last = data + size;

    for (p = data; p < last; /* void */) {

        rc = ngx_http_cio_journal_check(p, last, no, &len);

        if (rc == NGX_DONE) {
            break;
        }

        if (rc == NGX_DECLINED) {
            if (bad == NULL) {
                bad = p;
            }

            p++;
            continue;
        }

        if (bad) {
            ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                          "cio: journal \"%s\": %uz damaged bytes at offset "
                          "%uz skipped", name, (size_t) (p - bad),
                          (size_t) (bad - data));
            st->damaged++;
            bad = NULL;
        }

        off = (uint32_t) (p - data);
        records++;

        if (acks && bsearch(&off, acks, nacks, sizeof(uint32_t),
                            ngx_http_cio_journal_cmp))
        {
            settled++;

        } else if (zone == NULL
                   || ngx_http_cio_journal_record(cycle, zone, p, len,
                                                  ngx_http_cio_jref(
                                                      j->sh->id, no, off),
                                                  st)
                      != NGX_OK)
        {
            /* stays unsettled: the segment is kept for a later start */
        }

        p += len;
    }

    if (bad) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "cio: journal \"%s\": a torn or damaged tail of %uz "
                      "bytes at offset %uz skipped",
                      name, (size_t) (p - bad), (size_t) (bad - data));
        st->damaged++;
    }

    st->segments++;
    st->records += records;
    st->settled += settled;

    ngx_free(acks);
    ngx_free(data);

    if (settled >= records) {
        /* nothing left in it */
        (void) ngx_delete_file(name);
        ngx_http_cio_journal_name(j, name, no, "ack");
        (void) ngx_delete_file(name);
        ngx_free(name);
        return NGX_OK;
    }

    ngx_free(name);

    seg = ngx_http_cio_journal_find(j, 0);

    if (seg == NULL) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "cio: journal \"%V\" has more than %d segments with "
                      "unsettled records: segment %08xD is not followed",
                      &j->path, NGX_HTTP_CIO_J_SEGS, no);
        return NGX_ERROR;
    }

    seg->no = no;
    seg->records = records;
    seg->settled = settled;
    seg->size = (uint32_t) size;
    seg->disk = (uint32_t) size;

    j->sh->total += size;

    return NGX_OK;
}


/*
 * At p: NGX_OK, a good record of segment no, *len its whole length;
 * NGX_DONE, the segment's records end there: its end mark, or a good
 * record or end mark of another segment, what its file held before it was
 * reused; NGX_DECLINED, nothing good begins there.
 */

static ngx_int_t
ngx_http_cio_journal_check(u_char *p, u_char *last, uint32_t no,
    size_t *len)
{
    uint32_t  magic, n, crc, rno;
    uint16_t  slen, ulen;

    if (last - p < NGX_HTTP_CIO_J_HEADER) {
        return NGX_DECLINED;
    }

    ngx_memcpy(&magic, p, 4);
    ngx_memcpy(&n, p + 4, 4);
    ngx_memcpy(&crc, p + 8, 4);

    if (magic == NGX_HTTP_CIO_J_END_MAGIC) {
        /* whose ever it is, nothing of this segment follows */
        return (n == 4 && ngx_http_cio_crc32(0, p + 12, 4) == crc)
               ? NGX_DONE : NGX_DECLINED;
    }

    if (magic != NGX_HTTP_CIO_J_MAGIC) {
        return NGX_DECLINED;
    }

    ngx_memcpy(&slen, p + 12, 2);
    ngx_memcpy(&ulen, p + 14, 2);

    if (n > NGX_HTTP_CIO_J_MAX_RECORD
        || (size_t) (last - p) - NGX_HTTP_CIO_J_HEADER < n
        || (uint32_t) slen + ulen + 4 >= n)
    {
        return NGX_DECLINED;
    }

    if (ngx_http_cio_crc32(0, p + 12, n + 4) != crc) {
        return NGX_DECLINED;
    }

    ngx_memcpy(&rno, p + 12 + n, 4);

    if (rno != no) {
        return NGX_DONE;
    }

    *len = NGX_HTTP_CIO_J_HEADER + n;

    return NGX_OK;
}


static ngx_int_t
ngx_http_cio_journal_record(ngx_cycle_t *cycle, ngx_http_cio_zone_t *zone,
    u_char *p, size_t len, uint64_t jref, ngx_http_cio_jstats_t *st)
{
    uint16_t              slen, ulen;
    ngx_str_t             site, url;
    ngx_http_cio_shws_t  *ws;

    ngx_memcpy(&slen, p + 12, 2);
    ngx_memcpy(&ulen, p + 14, 2);

    site.data = p + NGX_HTTP_CIO_J_HEADER;
    site.len = slen;
    url.data = site.data + slen;
    url.len = ulen;

    ws = ngx_http_cio_queue_lookup(zone, &url, &site);

    if (ws == NULL) {
        st->unmatched++;
        return NGX_DECLINED;
    }

    p = url.data + ulen;
    len -= NGX_HTTP_CIO_J_HEADER + slen + ulen + 4;

    if (ngx_http_cio_queue_append(zone, ws, p, len, 0, jref) != NGX_OK) {
        st->full++;
        return NGX_DECLINED;
    }

    st->loaded++;

    return NGX_OK;
}


/* a segment's settled offsets, sorted; those that fail their crc dropped */

static uint32_t *
ngx_http_cio_journal_acks(ngx_cycle_t *cycle, ngx_http_cio_journal_t *j,
    uint32_t no, ngx_uint_t *n)
{
    u_char    *name, *data;
    size_t     size, i;
    uint32_t  *acks, e[2];

    *n = 0;

    name = ngx_alloc(j->path.len + NGX_HTTP_CIO_J_NAME_LEN, cycle->log);
    if (name == NULL) {
        return NULL;
    }

    ngx_http_cio_journal_name(j, name, no, "ack");

    data = ngx_http_cio_journal_slurp(cycle, name, &size);

    ngx_free(name);

    if (data == NULL) {
        return NULL;
    }

    acks = (uint32_t *) data;

    /* a torn last entry is left out with size / 8 */
    for (i = 0; i < size / 8; i++) {
        ngx_memcpy(e, data + i * 8, 8);

        if ((ngx_http_cio_crc32(0, (u_char *) &e[0], 4) ^ no) == e[1]) {
            acks[(*n)++] = e[0];
        }
    }

    ngx_qsort(acks, *n, sizeof(uint32_t), ngx_http_cio_journal_cmp);

    return acks;
}


/* a whole file; NULL for none (an absent .ack is no error) */

static u_char *
ngx_http_cio_journal_slurp(ngx_cycle_t *cycle, u_char *name, size_t *size)
{
    u_char           *data, *p;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_file_info_t   fi;

    fd = ngx_open_file(name, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        if (ngx_errno != NGX_ENOENT) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                          ngx_open_file_n " \"%s\" failed", name);
        }

        return NULL;
    }

    data = NULL;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      ngx_fd_info_n " \"%s\" failed", name);
        goto failed;
    }

    *size = (size_t) ngx_file_size(&fi);

    data = ngx_alloc(*size + 1, cycle->log);
    if (data == NULL) {
        goto failed;
    }

    for (p = data; p < data + *size; p += n) {
        n = ngx_read_fd(fd, p, data + *size - p);

        if (n == -1) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                          ngx_read_fd_n " \"%s\" failed", name);
            goto failed;
        }

        if (n == 0) {
            break;
        }
    }

    *size = p - data;

    ngx_close_file(fd);

    return data;

failed:

    ngx_free(data);
    ngx_close_file(fd);

    return NULL;
}


static ngx_http_cio_jseg_t *
ngx_http_cio_journal_find(ngx_http_cio_journal_t *j, uint32_t no)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_CIO_J_SEGS; i++) {
        if (j->sh->segs[i].no == no) {
            return &j->sh->segs[i];
        }
    }

    return NULL;
}


void
ngx_http_cio_journal_init_process(ngx_cycle_t *cycle,
    ngx_http_cio_journal_t *j)
{
    ngx_http_cio_jworker_t    *jw;
    ngx_http_cio_main_conf_t  *mcf;

    jw = &ngx_http_cio_jw;

    ngx_memzero(jw, sizeof(ngx_http_cio_jworker_t));

    jw->j = j;
    jw->log = cycle->log;
    jw->fd = NGX_INVALID_FILE;
    jw->ack_fd = NGX_INVALID_FILE;
    jw->evict = NGX_INVALID_FILE;
    ngx_queue_init(&jw->waiting);
    jw->appends_tail = &jw->appends;

    if (j == NULL) {
        return;
    }

    jw->flush.handler = ngx_http_cio_journal_flush;
    jw->flush.log = cycle->log;
    jw->flush.data = &ngx_http_cio_jdummy;

    /* not cancelable: see ngx_http_cio_journal_keep() */
    jw->keep.handler = ngx_http_cio_journal_keep;
    jw->keep.log = cycle->log;
    jw->keep.data = &ngx_http_cio_jdummy;

#if (NGX_LINUX) && defined(M_TRIM_THRESHOLD)
    /*
     * The requests of a pass now live until its write, together: what
     * they free at its end went back to the kernel (glibc trims a heap
     * top of more than 128 KB), and each page of the next pass cost a
     * fault and zeroing in the event loop.  The worker keeps that much
     * of its heap instead (bench/results.md, "A pass's records in one
     * write").
     */
    (void) mallopt(M_TRIM_THRESHOLD, NGX_HTTP_CIO_J_TRIM);

    /*
     * which turns glibc's mmap threshold from dynamic to fixed: set as
     * high as the dynamic one may rise, not left at 128 KB, so that large
     * blocks (big request bodies) do not get mmap()ed and faulted in anew
     * each time
     */
    (void) mallopt(M_MMAP_THRESHOLD, NGX_HTTP_CIO_J_MMAP);
#endif

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_cio_module);
    jw->dl = mcf->dead_letter;

    if (j->sync != NGX_HTTP_CIO_J_SYNC_TIMER) {
        return;
    }

    ngx_http_cio_jdummy.fd = (ngx_socket_t) -1;

    jw->timer.handler = ngx_http_cio_journal_timer;
    jw->timer.log = cycle->log;
    jw->timer.data = &ngx_http_cio_jdummy;
    jw->timer.cancelable = 1;

    ngx_add_timer(&jw->timer, j->interval);
}


/* what this worker wrote is synced before it exits */

void
ngx_http_cio_journal_exit_process(ngx_cycle_t *cycle)
{
    ngx_err_t                err;
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;

    if (jw->j == NULL) {
        return;
    }

    /* a sync task still in the pool's thread syncs what it took */

    if (jw->ndead) {
        err = (fdatasync(jw->dl->fd) == -1) ? ngx_errno : 0;
        ngx_http_cio_journal_undefer(jw->ndead, err);
    }

    ngx_free(jw->dead);
    jw->dead = NULL;
    jw->dcap = 0;

    ngx_free(jw->pass);
    jw->pass = NULL;

    while (jw->nold) {
        jw->nold--;

        if (jw->j->sync != NGX_HTTP_CIO_J_SYNC_OFF) {
            (void) fdatasync(jw->old[jw->nold]);
        }

        (void) ngx_close_file(jw->old[jw->nold]);
    }

    if (jw->fd != NGX_INVALID_FILE) {
        if (jw->dirty && jw->j->sync != NGX_HTTP_CIO_J_SYNC_OFF) {
            (void) fdatasync(jw->fd);
        }

        (void) ngx_close_file(jw->fd);
        jw->fd = NGX_INVALID_FILE;
    }

    if (jw->ack_fd != NGX_INVALID_FILE) {
        (void) ngx_close_file(jw->ack_fd);
        jw->ack_fd = NGX_INVALID_FILE;
    }

    jw->j = NULL;
}


/*
 * Room for a request's records in the worker's buffer for the current
 * pass, reused from one pass to the next; NULL: none left, the records go
 * into the request's pool.  Records in request pools made glibc's heap
 * top grow and shrink by a pass's worth (past its trim threshold) at
 * every pass, and each new page cost a fault and zeroing in the event
 * loop: 20-call batches ran at 0.59 of the rate without the journal,
 * against 1.0 with the trim threshold raised (bench/results.md).
 */

static u_char *
ngx_http_cio_journal_pass(size_t len)
{
    u_char                  *p;
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;

    if (jw->pass == NULL) {
        jw->pass = ngx_alloc(NGX_HTTP_CIO_J_PASS, jw->log);

        if (jw->pass == NULL) {
            return NULL;
        }
    }

    if (len > NGX_HTTP_CIO_J_PASS - jw->pass_used) {
        return NULL;
    }

    p = jw->pass + jw->pass_used;
    jw->pass_used += len;

    return p;
}


/*
 * A request's items as records, each [magic][length][crc32][site id
 * length][url length][site id][url][item][segment number], then room for
 * the end mark, in one buffer (the pass's, ngx_http_cio_journal_pass), one
 * iovec of the pass's pwritev(): a copy costs less than the kernel's walk
 * of an iovec per piece (measured: pwritev() of 3 pieces a record took
 * more time in the kernel than the copy saved).  The crc of what every
 * record shares, the lengths, site id and url, is computed once.  The
 * segment is not known yet: each crc slot holds the crc without the
 * number, which ngx_http_cio_journal_seal adds.  offs[i]: where record i
 * starts in the buffer.
 */

static u_char *
ngx_http_cio_journal_encode(ngx_http_cio_ws_t *ws, ngx_str_t *items,
    ngx_uint_t n, ngx_pool_t *pool, size_t *size, uint32_t **offs)
{
    u_char      *buf, *common, *p;
    size_t       len, clen;
    uint16_t     slen, ulen;
    uint32_t     rlen, crc, ccrc, magic;
    ngx_uint_t   i;

    slen = (uint16_t) ws->site_id.len;
    ulen = (uint16_t) ws->url.len;
    magic = NGX_HTTP_CIO_J_MAGIC;
    clen = 4 + slen + ulen;

    len = 0;

    for (i = 0; i < n; i++) {
        len += 12 + clen + items[i].len + 4;
    }

    buf = ngx_http_cio_journal_pass(len + NGX_HTTP_CIO_J_END);

    if (buf == NULL) {
        buf = ngx_pnalloc(pool, len + NGX_HTTP_CIO_J_END);
    }

    *offs = ngx_palloc(pool, n * sizeof(uint32_t));

    if (buf == NULL || *offs == NULL) {
        return NULL;
    }

    /* the first record's shared part, copied to the others from there */
    common = buf + 12;

    p = ngx_cpymem(common, &slen, 2);
    p = ngx_cpymem(p, &ulen, 2);
    p = ngx_cpymem(p, ws->site_id.data, slen);
    (void) ngx_cpymem(p, ws->url.data, ulen);

    ccrc = ngx_http_cio_crc32(0, common, clen);

    p = buf;

    for (i = 0; i < n; i++) {
        (*offs)[i] = (uint32_t) (p - buf);

        rlen = slen + ulen + (uint32_t) items[i].len + 4;
        crc = ngx_http_cio_crc32(ccrc, items[i].data, items[i].len);

        p = ngx_cpymem(p, &magic, 4);
        p = ngx_cpymem(p, &rlen, 4);
        p = ngx_cpymem(p, &crc, 4);

        if (p != common) {
            ngx_memcpy(p, common, clen);
        }

        p = ngx_cpymem(p + clen, items[i].data, items[i].len) + 4;
    }

    *size = len;

    return buf;
}


/*
 * The segment's number into each record and into its crc, under the
 * lock, once the segment is known; then the end mark after the last.
 */

static void
ngx_http_cio_journal_seal(u_char *buf, size_t len, uint32_t *offs,
    ngx_uint_t n, uint32_t no)
{
    u_char      *end;
    uint32_t     crc, v;
    ngx_uint_t   i;

    for (i = 0; i < n; i++) {
        end = (i + 1 < n) ? buf + offs[i + 1] : buf + len;

        ngx_memcpy(end - 4, &no, 4);
        ngx_memcpy(&crc, buf + offs[i] + 8, 4);
        crc = ngx_http_cio_crc32(crc, (u_char *) &no, 4);
        ngx_memcpy(buf + offs[i] + 8, &crc, 4);
    }

    end = buf + len;

    v = NGX_HTTP_CIO_J_END_MAGIC;
    ngx_memcpy(end, &v, 4);
    v = 4;
    ngx_memcpy(end + 4, &v, 4);
    crc = ngx_http_cio_crc32(0, (u_char *) &no, 4);
    ngx_memcpy(end + 8, &crc, 4);
    ngx_memcpy(end + 12, &no, 4);
}


/*
 * A request's items as records, written after the handlers of the event
 * loop's pass that took the request have run: the records of all the
 * requests of one pass go out in one pwritev() under the journal's lock
 * (ngx_http_cio_journal_flush), where each used to cost a pwrite() of its
 * own, 1.5 to 2 us of a single call's 12 here.  Until a->handler runs,
 * the request waits, and nothing of it is queued or answered.
 */

ngx_int_t
ngx_http_cio_journal_append(ngx_http_cio_journal_t *j, ngx_http_cio_ws_t *ws,
    ngx_str_t *items, ngx_uint_t n, ngx_pool_t *pool,
    ngx_http_cio_jappend_t *a)
{
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;

    a->buf = ngx_http_cio_journal_encode(ws, items, n, pool, &a->len,
                                         &a->offs);
    a->jrefs = ngx_palloc(pool, n * sizeof(uint64_t));

    if (a->buf == NULL || a->jrefs == NULL) {
        return NGX_ERROR;
    }

    a->n = n;
    a->next = NULL;
    a->rc = NGX_ERROR;

    *jw->appends_tail = a;
    jw->appends_tail = &a->next;

    if (!jw->flush.posted) {
        ngx_post_event(&jw->flush, &ngx_posted_events);
    }

    return NGX_OK;
}


static void
ngx_http_cio_journal_flush(ngx_event_t *ev)
{
    ngx_http_cio_jappend_t  *a, *next, *rest;
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;

    a = jw->appends;
    jw->appends = NULL;
    jw->appends_tail = &jw->appends;

    /* the sync=always waits the handlers start share one sync, below */
    jw->flushing = 1;

    while (a) {
        rest = ngx_http_cio_journal_write(jw->j, a);

        /* a handler may append again: that goes to the next flush */
        for ( /* void */ ; a != rest; a = next) {
            next = a->next;
            a->handler(a);
        }
    }

    jw->flushing = 0;

    if (jw->appends == NULL) {
        jw->pass_used = 0;
    }

    /*
     * Not one sync per wait: a sync run in the event loop (no thread
     * pool) would leave the requests of its write that wait after it
     * waiting for the next write's sync
     */
    if (!ngx_queue_empty(&jw->waiting)) {
        ngx_http_cio_journal_sync();
    }
}


/*
 * The records of the appends from first on that go into one segment, in
 * one pwritev() under the lock; returns the first append not written.
 * NGX_BUSY: the journal is full; NGX_ERROR: it cannot be written.  Either
 * way nothing of the append stays in it, and its request is answered 503.
 */

static ngx_http_cio_jappend_t *
ngx_http_cio_journal_write(ngx_http_cio_journal_t *j,
    ngx_http_cio_jappend_t *first)
{
    off_t                    from;
    size_t                   len, ahead;
    ssize_t                  written;
    uint32_t                 no, off, gone, grow;
    ngx_err_t                err;
    ngx_uint_t               i, k, n, events;
    struct iovec             iov[NGX_HTTP_CIO_J_IOVS];
    ngx_http_cio_jsh_t      *sh;
    ngx_http_cio_jseg_t     *seg;
    ngx_http_cio_jappend_t  *a;

    gone = 0;
    sh = j->sh;

    ngx_shmtx_lock(&j->shpool->mutex);

    seg = ngx_http_cio_journal_next(j, first->len, first->log, &gone);

    if (seg == NULL) {
        ngx_shmtx_unlock(&j->shpool->mutex);

        ngx_http_cio_journal_delete(j, gone, first->log);

        ngx_log_error(NGX_LOG_WARN, first->log, 0,
                      "cio: journal \"%V\" has %d segments with "
                      "unsettled records, %ui events refused with 503",
                      &j->path, NGX_HTTP_CIO_J_SEGS, first->n);
        first->rc = NGX_BUSY;
        return first->next;
    }

    off = seg->size;
    k = ngx_http_cio_journal_run(j, seg, first, &len, &grow);

    if (k == 0) {
        ngx_shmtx_unlock(&j->shpool->mutex);

        ngx_http_cio_journal_delete(j, gone, first->log);

        ngx_log_error(NGX_LOG_WARN, first->log, 0,
                      "cio: journal \"%V\" is full (max_size), %ui events "
                      "refused with 503", &j->path, first->n);
        first->rc = NGX_BUSY;
        return first->next;
    }

    if (ngx_http_cio_journal_open(j, first->log) != NGX_OK) {
        err = ngx_errno;
        goto failed;
    }

    no = seg->no;
    events = 0;

    for (i = 0, a = first; i < k; i++, a = a->next) {
        ngx_http_cio_journal_seal(a->buf, a->len, a->offs, a->n, no);

        iov[i].iov_base = a->buf;
        iov[i].iov_len = a->len;
        events += a->n;
    }

    /* the last one's end mark, which the next write overwrites */
    iov[k - 1].iov_len += NGX_HTTP_CIO_J_END;

    written = pwritev(ngx_http_cio_jw.fd, iov, (int) k, (off_t) off);

    if (written != (ssize_t) (len + NGX_HTTP_CIO_J_END)) {
        err = (written == -1) ? ngx_errno : NGX_ENOSPC;

        /* no half record stays for the next write to follow */
        if (written > 0) {
            /*
             * seg->disk stays: a region allocated ahead that another
             * worker's task has still to prepare would grow the file
             * again, and the journal's size errs on the safe side until
             * the segment is retired
             */
            if (ftruncate(ngx_http_cio_jw.fd, (off_t) off) == -1) {
                ngx_log_error(NGX_LOG_ALERT, first->log, ngx_errno,
                              "cio: journal \"%V\": ftruncate() failed",
                              &j->path);
            }
        }

        goto failed;
    }

    seg->size += (uint32_t) len;
    seg->disk += grow;
    seg->records += (uint32_t) events;
    sh->total += grow;

    ahead = ngx_http_cio_journal_ahead(j, seg, &from);

    ngx_shmtx_unlock(&j->shpool->mutex);

    ngx_http_cio_journal_evict(j);
    ngx_http_cio_journal_delete(j, gone, first->log);

    if (ahead) {
        ngx_http_cio_journal_prepare(from, ahead);
    }

    ngx_http_cio_jw.dirty = 1;
    ngx_http_cio_jw.wseq++;
    ngx_http_cio_jw.end = off + (uint32_t) len;

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, first->log, 0,
                   "cio: journal written: %ui requests, %ui events, %uz "
                   "bytes at %uD in segment %08xD", k, events, len, off, no);

    for (i = 0, a = first; i < k; i++, a = a->next) {
        for (n = 0; n < a->n; n++) {
            a->jrefs[n] = ngx_http_cio_jref(sh->id, no, off + a->offs[n]);
        }

        a->rc = NGX_OK;
        off += (uint32_t) a->len;
    }

    return a;

failed:

    ngx_shmtx_unlock(&j->shpool->mutex);

    ngx_http_cio_journal_evict(j);
    ngx_http_cio_journal_delete(j, gone, first->log);

    ngx_http_cio_journal_failed(j, first->log, err, NGX_HTTP_CIO_J_WRITE);

    for (i = 0, a = first; i < k; i++, a = a->next) {
        a->rc = NGX_ERROR;
    }

    return a;
}


/*
 * How many appends from first on go into seg, which takes the first:
 * as many as fit in the segment and in max_size, up to
 * NGX_HTTP_CIO_J_IOVS; 0: not even the first fits in max_size.  *len:
 * their records' bytes, *grow: what the file grows by (nothing inside a
 * region allocated ahead).
 */

static ngx_uint_t
ngx_http_cio_journal_run(ngx_http_cio_journal_t *j, ngx_http_cio_jseg_t *seg,
    ngx_http_cio_jappend_t *first, size_t *len, uint32_t *grow)
{
    size_t                   total;
    uint32_t                 g;
    ngx_uint_t               k;
    ngx_http_cio_jappend_t  *a;

    total = 0;
    *grow = 0;
    k = 0;

    for (a = first; a && k < NGX_HTTP_CIO_J_IOVS; a = a->next) {

        if (k && seg->size + total + a->len > j->seg_size) {
            break;
        }

        g = (seg->size + total + a->len + NGX_HTTP_CIO_J_END > seg->disk)
            ? seg->size + (uint32_t) (total + a->len) + NGX_HTTP_CIO_J_END
              - seg->disk
            : 0;

        if (j->sh->total + g > (uint64_t) j->max_size) {
            break;
        }

        total += a->len;
        *grow = g;
        k++;
    }

    *len = total;

    return k;
}


/*
 * A busy segment's file is allocated and brought into the page cache
 * ahead of its writes, in the thread pool: a write into new pages makes
 * the kernel allocate, zero and reserve them in the event loop, which
 * took 7.7 us of a 9.5 KB pwrite() here against 3.4-4.6 us into pages
 * prepared so (bench/results.md, "The journal allocated ahead").  The
 * region is counted in the segment's size on disk at once, under the
 * lock: max_size holds it, and no other worker prepares it again.  Only
 * a segment past its first megabyte is: a quiet journal's files keep
 * their size.  Returns how much to prepare at *from, 0: nothing.
 */

static size_t
ngx_http_cio_journal_ahead(ngx_http_cio_journal_t *j,
    ngx_http_cio_jseg_t *seg, off_t *from)
{
#if (NGX_THREADS && NGX_LINUX)
    size_t  len;

    if (j->tp == NULL
        || ngx_http_cio_jw.preparing
        || seg->size < NGX_HTTP_CIO_J_AHEAD
        || seg->size + NGX_HTTP_CIO_J_AHEAD <= seg->disk
        || seg->disk >= j->seg_size)
    {
        return 0;
    }

    len = ngx_min(NGX_HTTP_CIO_J_AHEAD, j->seg_size - seg->disk);

    if (j->sh->total + len > (uint64_t) j->max_size) {
        return 0;
    }

    *from = seg->disk;
    seg->disk += (uint32_t) len;
    j->sh->total += len;

    return len;
#else
    return 0;
#endif
}


static void
ngx_http_cio_journal_prepare(off_t off, size_t len)
{
#if (NGX_THREADS)
    ngx_http_cio_jprep_t    *p;
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;

    if (jw->prep == NULL) {
        jw->prep = ngx_thread_task_alloc(ngx_cycle->pool,
                                         sizeof(ngx_http_cio_jprep_t));
        if (jw->prep == NULL) {
            return;
        }

        jw->prep->handler = ngx_http_cio_journal_prepare_thread;
        jw->prep->event.handler = ngx_http_cio_journal_prepare_done;
        jw->prep->event.data = jw->prep;
        jw->prep->event.log = jw->log;
    }

    p = jw->prep->ctx;

    /* the thread's own fd: this worker may close its own meanwhile */
    p->fd = dup(jw->fd);

    if (p->fd == NGX_INVALID_FILE) {
        return;
    }

    p->off = off;
    p->len = len;
    p->err = 0;

    if (ngx_thread_task_post(jw->j->tp, jw->prep) != NGX_OK) {
        (void) close(p->fd);
        return;
    }

    jw->preparing = 1;
#endif
}


#if (NGX_THREADS)

/*
 * In a thread of the pool.  fallocate() never changes bytes a write has
 * put there already, and the pages readahead() brings are those of
 * unwritten blocks, zeros: a worker that writes into the region first
 * loses nothing.  A start reads a segment to its last end mark.
 */

static void
ngx_http_cio_journal_prepare_thread(void *data, ngx_log_t *log)
{
    ngx_http_cio_jprep_t *p = data;

#if (NGX_LINUX)
    if (fallocate(p->fd, 0, p->off, (off_t) p->len) == -1) {
        p->err = errno;

    } else {
        (void) readahead(p->fd, p->off, p->len);
    }
#endif

    (void) close(p->fd);
}


static void
ngx_http_cio_journal_prepare_done(ngx_event_t *ev)
{
#if (NGX_DEBUG)
    ngx_thread_task_t     *task = ev->data;
    ngx_http_cio_jprep_t  *p = task->ctx;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ev->log, p->err,
                   "cio: journal prepared %uz bytes at %O%s",
                   p->len, p->off, p->err ? " failed" : "");
#endif

    ngx_http_cio_jw.preparing = 0;
}

#endif


/* the segment written to, NULL: none yet */

static ngx_http_cio_jseg_t *
ngx_http_cio_journal_active(ngx_http_cio_journal_t *j)
{
    return j->sh->active ? ngx_http_cio_journal_find(j, j->sh->active)
                         : NULL;
}


/* whether seg, the active segment, takes len bytes more */

static ngx_uint_t
ngx_http_cio_journal_room(ngx_http_cio_journal_t *j,
    ngx_http_cio_jseg_t *seg, size_t len)
{
    return seg
           && (seg->size == 0
               || (seg->size + len <= j->seg_size
                   && (seg->settled < seg->records
                       || seg->size < NGX_HTTP_CIO_J_MIN_SEG)));
}


/*
 * The segment len bytes go to, under the lock: the active one, or a new
 * one when it is full, or all settled and large enough to be worth giving
 * back: that is how a journal that filled its disk while Customer.io was
 * away gives the space back.  NULL: every slot holds a segment with
 * unsettled records.  *gone: for ngx_http_cio_journal_delete, after the
 * lock.
 */

static ngx_http_cio_jseg_t *
ngx_http_cio_journal_next(ngx_http_cio_journal_t *j, size_t len,
    ngx_log_t *log, uint32_t *gone)
{
    ngx_http_cio_jsh_t   *sh;
    ngx_http_cio_jseg_t  *seg;

    sh = j->sh;
    seg = ngx_http_cio_journal_active(j);

    if (ngx_http_cio_journal_room(j, seg, len)) {
        return seg;
    }

    if (seg && seg->settled >= seg->records) {
        /* nothing of it left to settle: it goes now, not at an ack */
        *gone = ngx_http_cio_journal_retire(j, seg);
    }

    seg = ngx_http_cio_journal_find(j, 0);

    if (seg == NULL) {
        sh->active = 0;
        return NULL;
    }

    /* numbers wrap, past those still in use */
    do {
        sh->last = (sh->last >= NGX_HTTP_CIO_J_MAX_NO) ? 1 : sh->last + 1;
    } while (ngx_http_cio_journal_find(j, sh->last));

    ngx_memzero(seg, sizeof(ngx_http_cio_jseg_t));
    seg->no = sh->last;
    sh->active = seg->no;

    return seg;
}


/*
 * A segment whose every record is settled leaves its slot, under the
 * lock; returns its number, for ngx_http_cio_journal_delete after it.
 */

static uint32_t
ngx_http_cio_journal_retire(ngx_http_cio_journal_t *j,
    ngx_http_cio_jseg_t *seg)
{
    uint32_t  no;

    no = seg->no;
    j->sh->total -= seg->disk;

    ngx_memzero(seg, sizeof(ngx_http_cio_jseg_t));

    return no;
}


/* this worker's fd onto the active segment, under the lock */

static ngx_int_t
ngx_http_cio_journal_open(ngx_http_cio_journal_t *j, ngx_log_t *log)
{
    u_char                  *name;
    ngx_fd_t                 fd;
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;

    if (jw->fd != NGX_INVALID_FILE && jw->no == j->sh->active) {
        return NGX_OK;
    }

    name = ngx_alloc(j->path.len + NGX_HTTP_CIO_J_NAME_LEN, log);
    if (name == NULL) {
        return NGX_ERROR;
    }

    ngx_http_cio_journal_name(j, name, j->sh->active, "seg");

    /* read as well: readahead() of ngx_http_cio_journal_prepare */
    fd = ngx_open_file(name, NGX_FILE_RDWR, NGX_FILE_CREATE_OR_OPEN,
                       NGX_FILE_DEFAULT_ACCESS);

    ngx_free(name);

    if (fd == NGX_INVALID_FILE) {
        return NGX_ERROR;
    }

    if (jw->fd != NGX_INVALID_FILE) {
        /* what it got is synced by the next round, then it is closed */
        if (jw->j->sync == NGX_HTTP_CIO_J_SYNC_OFF
            || jw->nold == NGX_HTTP_CIO_J_OLD_FDS)
        {
            /*
             * synced once the lock is released: the other workers must
             * not wait for this one's disk
             */
            jw->evict = jw->fd;

        } else {
            jw->old[jw->nold++] = jw->fd;
        }
    }

    jw->fd = fd;
    jw->no = j->sh->active;
    jw->newseg = 1;

    /* nothing of its own in it yet: a sync drops none of its pages */
    jw->end = 0;

    return NGX_OK;
}


/*
 * A segment left while the list of those to sync was full: synced and
 * closed now, outside the lock.  The next round fails its waiters if this
 * sync did: see ngx_http_cio_journal_sync.
 */

static void
ngx_http_cio_journal_evict(ngx_http_cio_journal_t *j)
{
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;

    if (jw->evict == NGX_INVALID_FILE) {
        return;
    }

    if (j->sync != NGX_HTTP_CIO_J_SYNC_OFF
        && fdatasync(jw->evict) == -1 && jw->sync_err == 0)
    {
        jw->sync_err = ngx_errno;
    }

    (void) ngx_close_file(jw->evict);
    jw->evict = NGX_INVALID_FILE;
}


static void
ngx_http_cio_journal_failed(ngx_http_cio_journal_t *j, ngx_log_t *log,
    ngx_err_t err, ngx_uint_t what)
{
    ngx_uint_t           level;
    ngx_atomic_t        *at;
    ngx_atomic_uint_t    now, old;

    static const char   *msg[] = {
        "cio: writing the journal \"%V\" failed, events refused with 503",
        "cio: syncing the journal \"%V\" failed, the events it waited for "
            "are not known to be on the disk (sync=always: answered 503)",
        "cio: settling in the journal \"%V\" failed, settled events may "
            "be sent again after a restart"
    };

    now = (ngx_atomic_uint_t) ngx_time();
    at = &j->sh->alert_at[what];
    old = *at;

    /* one worker wins the minute's alert, the others warn */
    level = (now >= old
             && ngx_atomic_cmp_set(at, old, now + NGX_HTTP_CIO_J_ALERT_EVERY))
            ? NGX_LOG_ALERT : NGX_LOG_WARN;

    ngx_log_error(level, log, err, msg[what], &j->path);
}


/*
 * Items freed from the zone: those whose acts[i] is act (all of them when
 * acts is NULL), delivered, dead-lettered, or refused with the request
 * they came in.  Their offsets go to their segments' .ack files, a run of
 * one segment at a time, and a segment all settled (not the active one)
 * is deleted.
 *
 * A dead-lettered item's ack waits, when the journal syncs, until the
 * dead-letter file is synced: were the ack on the disk and its line not,
 * a power loss would lose the item; the other way round it is sent again.
 */

void
ngx_http_cio_journal_settled(uint64_t *jrefs, u_char *acts, ngx_uint_t n,
    u_char act)
{
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;

    if (jw->j == NULL || jrefs == NULL) {
        return;
    }

    if (act == NGX_HTTP_CIO_ACT_DEAD && acts && jw->dl
        && jw->j->sync != NGX_HTTP_CIO_J_SYNC_OFF)
    {
        ngx_http_cio_journal_defer(jrefs, acts, n, act);
        return;
    }

    ngx_http_cio_journal_settle(jrefs, acts, n, act);
}


static void
ngx_http_cio_journal_settle(uint64_t *jrefs, u_char *acts, ngx_uint_t n,
    u_char act)
{
    uint32_t                 offs[64], no, gone[64];
    ngx_uint_t               i, k, ngone;
    ngx_http_cio_jseg_t     *seg;
    ngx_http_cio_journal_t  *j;

    j = ngx_http_cio_jw.j;
    ngone = 0;

    ngx_shmtx_lock(&j->shpool->mutex);

    for (i = 0; i < n; /* void */) {

        if ((acts && acts[i] != act)
            || !ngx_http_cio_journal_holds(j, jrefs[i]))
        {
            /* none, or of a journal a reload replaced: not this one's */
            i++;
            continue;
        }

        no = ngx_http_cio_jref_no(jrefs[i]);
        k = 0;

        for ( /* void */ ; i < n && k < 64; i++) {
            if ((acts && acts[i] != act)
                || !ngx_http_cio_journal_holds(j, jrefs[i]))
            {
                continue;
            }

            if (ngx_http_cio_jref_no(jrefs[i]) != no) {
                break;
            }

            offs[k++] = (uint32_t) jrefs[i];
        }

        seg = ngx_http_cio_journal_find(j, no);

        if (seg == NULL) {
            /* a journal that is no longer configured, say */
            continue;
        }

        ngx_http_cio_journal_ack(seg, offs, k);

        seg->settled += (uint32_t) k;

        if (seg->settled >= seg->records && seg->no != j->sh->active) {
            gone[ngone++] = ngx_http_cio_journal_retire(j, seg);
        }

        if (ngone == 64) {
            /* a retired segment is no longer found: nothing else runs */
            ngx_shmtx_unlock(&j->shpool->mutex);
            ngx_http_cio_journal_delete_all(j, gone, ngone);
            ngone = 0;
            ngx_shmtx_lock(&j->shpool->mutex);
        }
    }

    ngx_shmtx_unlock(&j->shpool->mutex);

    ngx_http_cio_journal_delete_all(j, gone, ngone);
}


static void
ngx_http_cio_journal_delete_all(ngx_http_cio_journal_t *j, uint32_t *gone,
    ngx_uint_t n)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        ngx_http_cio_journal_delete(j, gone[i], ngx_http_cio_jw.log);
    }
}


/*
 * The jrefs of dead-lettered items, kept until a sync of the dead-letter
 * file covers their lines (written before this call): sync=always starts
 * one now, sync=TIME has the timer's.  An item whose ack cannot be kept
 * for lack of memory is left unsettled: sent again after a restart.
 */

static void
ngx_http_cio_journal_defer(uint64_t *jrefs, u_char *acts, ngx_uint_t n,
    u_char act)
{
    uint64_t                *dead;
    ngx_uint_t               i, cap;
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;

    if (jw->ndead + n > jw->dcap) {
        cap = ngx_max(2 * jw->dcap, jw->ndead + n);
        cap = ngx_max(cap, 64);

        dead = ngx_alloc(cap * sizeof(uint64_t), jw->log);
        if (dead == NULL) {
            return;
        }

        if (jw->ndead) {
            ngx_memcpy(dead, jw->dead, jw->ndead * sizeof(uint64_t));
        }

        ngx_free(jw->dead);
        jw->dead = dead;
        jw->dcap = cap;
    }

    for (i = 0; i < n; i++) {
        if (acts[i] == act && jrefs[i] != 0) {
            jw->dead[jw->ndead++] = jrefs[i];
        }
    }

    if (jw->j->sync == NGX_HTTP_CIO_J_SYNC_ALWAYS) {
        ngx_http_cio_journal_sync();
    }
}


/* the first n deferred acks: their lines are synced (or err: not known) */

static void
ngx_http_cio_journal_undefer(ngx_uint_t n, ngx_err_t err)
{
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;

    if (n == 0) {
        return;
    }

    if (err) {
        ngx_log_error(NGX_LOG_ALERT, jw->log, err,
                      "cio: syncing the dead-letter file \"%V\" failed, "
                      "%ui dead-lettered events stay unsettled in the "
                      "journal and are sent again after a restart",
                      &jw->dl->name, n);

    } else {
        ngx_http_cio_journal_settle(jw->dead, NULL, n, 0);
    }

    jw->ndead -= n;

    if (jw->ndead) {
        ngx_memmove(jw->dead, jw->dead + n, jw->ndead * sizeof(uint64_t));
    }
}


/* a segment all settled, out of the table: its files go */

static void
ngx_http_cio_journal_delete(ngx_http_cio_journal_t *j, uint32_t no,
    ngx_log_t *log)
{
    u_char  *name;

    if (no == 0) {
        return;
    }

    name = ngx_alloc(j->path.len + NGX_HTTP_CIO_J_NAME_LEN, log);
    if (name == NULL) {
        return;
    }

    /* the segment first: an .ack alone is deleted at the next start */

    ngx_http_cio_journal_name(j, name, no, "seg");

    if (ngx_delete_file(name) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      ngx_delete_file_n " \"%s\" failed", name);
    }

    ngx_http_cio_journal_name(j, name, no, "ack");
    (void) ngx_delete_file(name);

    ngx_free(name);
}


/* under the lock: the .ack file of seg gets these offsets */

static void
ngx_http_cio_journal_ack(ngx_http_cio_jseg_t *seg, uint32_t *offs,
    ngx_uint_t n)
{
    u_char                  *name;
    uint32_t                 e[2 * 64];
    ssize_t                  written;
    ngx_uint_t               i;
    ngx_file_info_t          fi;
    ngx_http_cio_journal_t  *j;
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;
    j = jw->j;

    if (jw->ack_fd == NGX_INVALID_FILE || jw->ack_no != seg->no) {

        if (jw->ack_fd != NGX_INVALID_FILE) {
            (void) ngx_close_file(jw->ack_fd);
            jw->ack_fd = NGX_INVALID_FILE;
        }

        name = ngx_alloc(j->path.len + NGX_HTTP_CIO_J_NAME_LEN, jw->log);
        if (name == NULL) {
            return;
        }

        ngx_http_cio_journal_name(j, name, seg->no, "ack");

        jw->ack_fd = ngx_open_file(name, NGX_FILE_APPEND,
                                   NGX_FILE_CREATE_OR_OPEN,
                                   NGX_FILE_DEFAULT_ACCESS);
        ngx_free(name);

        if (jw->ack_fd == NGX_INVALID_FILE) {
            ngx_http_cio_journal_failed(j, jw->log, ngx_errno,
                                        NGX_HTTP_CIO_J_ACK);
            return;
        }

        jw->ack_no = seg->no;
    }

    for (i = 0; i < n; i++) {
        e[2 * i] = offs[i];
        e[2 * i + 1] = ngx_http_cio_crc32(0, (u_char *) &offs[i], 4)
                       ^ seg->no;
    }

    written = ngx_write_fd(jw->ack_fd, e, n * 8);

    if (written == (ssize_t) (n * 8)) {
        return;
    }

    ngx_http_cio_journal_failed(j, jw->log,
                                written == -1 ? ngx_errno : NGX_ENOSPC,
                                NGX_HTTP_CIO_J_ACK);

    /*
     * a torn entry would put every later one out of step, and a start
     * would take them all for unsettled: the part written is cut off
     * (the lock keeps the other workers' entries out of the file)
     */
    if (written > 0
        && (ngx_fd_info(jw->ack_fd, &fi) == NGX_FILE_ERROR
            || ftruncate(jw->ack_fd, ngx_file_size(&fi) - written) == -1))
    {
        ngx_log_error(NGX_LOG_ALERT, jw->log, ngx_errno,
                      "cio: journal \"%V\": cutting back a torn entry of "
                      "segment %08xD's .ack failed", &j->path, seg->no);
    }
}


static void
ngx_http_cio_journal_timer(ngx_event_t *ev)
{
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;

    if (jw->j == NULL) {
        return;
    }

    ngx_http_cio_journal_sync();

    ngx_add_timer(ev, jw->j->interval);
}


/*
 * fdatasync() of what this worker wrote since the last one: in the thread
 * pool, so that the event loop does not wait for the disk, or right here
 * when nginx has no threads or the pool refuses the task.  One sync covers
 * every write this worker finished before it began: the requests waiting
 * for any of them (sync=always) are answered together, a group commit.
 */

static void
ngx_http_cio_journal_sync(void)
{
    ngx_http_cio_jsync_t     js;
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;

    if ((!jw->dirty && jw->nold == 0 && jw->ndead == 0 && jw->sync_err == 0)
        || jw->syncing)
    {
        return;
    }

    /*
     * a segment left while a round ran, with 16 more waiting, was synced
     * and closed as soon as the lock was released (journal_evict): its
     * waiters are this round's, and so is its error
     */
    js.n = 0;
    js.err = jw->sync_err;
    jw->sync_err = 0;
    js.seq = jw->wseq;
    js.no = jw->no;
    js.end = jw->end;
    js.active = -1;

    /* the page the next write goes on into stays */
    js.drop = (off_t) (jw->end & ~((uint32_t) ngx_pagesize - 1));
    js.dl_end = -1;
    js.dl = -1;
    js.dl_err = 0;
    js.dir = -1;

    while (jw->nold) {
        js.fds[js.n++] = jw->old[--jw->nold];
    }

    if (jw->dirty && jw->fd != NGX_INVALID_FILE) {
        js.fds[js.n] = dup(jw->fd);

        if (js.fds[js.n] != NGX_INVALID_FILE) {
            js.active = (ngx_int_t) js.n++;

        } else {
            js.err = ngx_errno;
        }
    }

    jw->dirty = 0;

    /* every line written so far, of every worker: fdatasync is the file's */
    if (jw->ndead) {
        ngx_http_cio_journal_sync_dl(&js);
    }

    /*
     * a segment new to this worker: POSIX keeps a new file's name only
     * once its directory is synced (ext4 and XFS do it with the file's)
     */
    if (jw->newseg) {
        jw->newseg = 0;
        js.fds[js.n] = open((char *) jw->j->path.data, O_RDONLY|O_DIRECTORY);

        if (js.fds[js.n] != NGX_INVALID_FILE) {
            js.dir = (ngx_int_t) js.n++;

        } else {
            /* the next round tries again: see synced() */
            jw->newseg = 1;

            if (js.err == 0) {
                js.err = ngx_errno;
            }
        }
    }

#if (NGX_THREADS)

    if (jw->j->tp) {

        if (jw->task == NULL) {
            jw->task = ngx_thread_task_alloc(ngx_cycle->pool,
                                             sizeof(ngx_http_cio_jsync_t));
        }

        if (jw->task) {
            *(ngx_http_cio_jsync_t *) jw->task->ctx = js;

            jw->task->handler = ngx_http_cio_journal_sync_thread;
            jw->task->event.handler = ngx_http_cio_journal_sync_done;
            jw->task->event.data = jw->task;
            jw->task->event.log = jw->log;

            if (ngx_thread_task_post(jw->j->tp, jw->task) == NGX_OK) {
                jw->syncing = 1;
                return;
            }
        }
    }

#endif

    ngx_http_cio_journal_sync_thread(&js, jw->log);
    ngx_http_cio_journal_synced(&js);
}


/* the dead-letter file into a sync: its size now, a dup of its fd */

static void
ngx_http_cio_journal_sync_dl(ngx_http_cio_jsync_t *js)
{
    ngx_fd_t                 fd;
    ngx_file_info_t          fi;
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;

    jw->dtaken = jw->ndead;
    js->dl_end = 0;

    fd = dup(jw->dl->fd);

    if (fd == NGX_INVALID_FILE) {
        js->dl_err = ngx_errno;
        return;
    }

    if (ngx_fd_info(fd, &fi) != NGX_FILE_ERROR) {
        js->dl_end = ngx_file_size(&fi);
    }

    js->dl = (ngx_int_t) js->n;
    js->fds[js->n++] = fd;
}


/*
 * In a thread of the pool: no nginx call but the system's.  What a sync
 * made clean of a segment leaves the page cache: all of one writing has
 * left, of the active one what lies before its last write's page.
 */

static void
ngx_http_cio_journal_sync_thread(void *data, ngx_log_t *log)
{
    ngx_http_cio_jsync_t *t = data;

    ngx_uint_t  i;

    for (i = 0; i < t->n; i++) {
        if (((ngx_int_t) i == t->dir ? fsync(t->fds[i])
                                     : fdatasync(t->fds[i])) == -1)
        {
            if ((ngx_int_t) i == t->dl) {
                t->dl_err = errno;

            } else if (t->err == 0) {
                t->err = errno;
            }

        } else if ((ngx_int_t) i != t->dl && (ngx_int_t) i != t->dir) {
#if (NGX_HAVE_POSIX_FADVISE)
            if ((ngx_int_t) i != t->active || t->drop) {
                (void) posix_fadvise(t->fds[i], 0,
                                     (ngx_int_t) i == t->active ? t->drop
                                                                : 0,
                                     POSIX_FADV_DONTNEED);
            }
#endif
        }

        /*
         * closing a file drops every record lock the process holds on
         * it: the event loop may be writing a dead letter under its lock
         * now, so that fd is closed there (synced())
         */
        if ((ngx_int_t) i != t->dl) {
            (void) close(t->fds[i]);
        }
    }

    t->n = 0;
}


#if (NGX_THREADS)

static void
ngx_http_cio_journal_sync_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task;

    task = ev->data;

    ngx_http_cio_jw.syncing = 0;

    ngx_http_cio_journal_synced(task->ctx);
}

#endif


/*
 * A sync is over: the requests that waited for a write it covers are
 * answered (503 if it failed: their items are queued all the same, and
 * the client's retry makes a duplicate, not a loss); those that wrote
 * since wait for the next one, which starts at once.
 */

static void
ngx_http_cio_journal_synced(ngx_http_cio_jsync_t *t)
{
    ngx_queue_t             *q, *next;
    ngx_http_cio_jwait_t    *w;
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;

    if (t->dl != -1) {
        (void) close(t->fds[t->dl]);
        t->dl = -1;
    }

    if (jw->j == NULL) {
        return;
    }

    if (t->err) {
        ngx_http_cio_journal_failed(jw->j, jw->log, t->err,
                                    NGX_HTTP_CIO_J_SYNC);

        /* a segment's name not known to be kept: the next round again */
        if (t->dir != -1) {
            jw->newseg = 1;
        }

    } else {
        /* a power loss keeps at least this much: what tests cut back to */
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, jw->log, 0,
                       "cio: journal synced: segment %08xD up to %uD "
                       "bytes, write %uL", t->no, t->end, t->seq);
    }

    if (t->dl_end != -1) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, jw->log, 0,
                       "cio: journal synced: dead-letter file up to %O "
                       "bytes, %ui dead-lettered settled", t->dl_end,
                       t->dl_err ? 0 : jw->dtaken);

        ngx_http_cio_journal_undefer(jw->dtaken, t->dl_err);
        jw->dtaken = 0;
    }

    for (q = ngx_queue_head(&jw->waiting);
         q != ngx_queue_sentinel(&jw->waiting);
         q = next)
    {
        next = ngx_queue_next(q);
        w = ngx_queue_data(q, ngx_http_cio_jwait_t, link);

        if (w->seq > t->seq) {
            continue;
        }

        ngx_queue_remove(q);
        w->rc = t->err ? NGX_ERROR : NGX_OK;
        ngx_post_event(&w->ev, &ngx_posted_events);
    }

    if (ngx_queue_empty(&jw->waiting) && jw->keep.timer_set) {
        ngx_del_timer(&jw->keep);
    }

    if (!ngx_queue_empty(&jw->waiting)
        || (jw->ndead && jw->j->sync == NGX_HTTP_CIO_J_SYNC_ALWAYS))
    {
        ngx_http_cio_journal_sync();
    }
}


/*
 * sync=always: NGX_AGAIN, and w->ev is posted once this worker's last
 * write (the caller's) is synced, w->rc telling how it went; NGX_OK: no
 * wait (another sync= policy).
 */

ngx_int_t
ngx_http_cio_journal_wait(ngx_http_cio_journal_t *j, ngx_http_cio_jwait_t *w)
{
    ngx_http_cio_jworker_t  *jw;

    jw = &ngx_http_cio_jw;

    if (j->sync != NGX_HTTP_CIO_J_SYNC_ALWAYS || jw->j == NULL) {
        return NGX_OK;
    }

    w->seq = jw->wseq;
    w->rc = NGX_AGAIN;

    ngx_queue_insert_tail(&jw->waiting, &w->link);

    if (!jw->keep.timer_set) {
        ngx_add_timer(&jw->keep, NGX_HTTP_CIO_J_KEEP);
    }

    if (!jw->flushing) {
        ngx_http_cio_journal_sync();
    }

    return NGX_AGAIN;
}


/*
 * A request that waits for a sync has no timer of its own, and a worker
 * that is shutting down (a reload, a quit) exits once no timer but
 * cancelable ones is left: it would close the request unanswered, with
 * nginx's "open socket left" alert, while its sync ran in the pool.  This
 * timer keeps the worker while any request waits.
 */

static void
ngx_http_cio_journal_keep(ngx_event_t *ev)
{
    if (!ngx_queue_empty(&ngx_http_cio_jw.waiting)) {
        ngx_add_timer(ev, NGX_HTTP_CIO_J_KEEP);
    }
}
