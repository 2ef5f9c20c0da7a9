/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * The mapper alone, for `make bench`: links src/ngx_http_cio_map.c as the
 * module does and maps one payload file the way the ingest handler calls
 * it (same options as the module's defaults).
 *
 *   map_cost ROUTE FILE [ITER]
 *       maps FILE once to warm up (lazy binding, first allocations), then
 *       ITER times (default 10) through bench_map_once(); run it under
 *       valgrind --tool=callgrind --collect-atstart=no
 *       --toggle-collect=bench_map_once to count the instructions of
 *       exactly those ITER calls (parse + map + serialize + free).
 *       Prints: route, body bytes, calls, items, item bytes.
 *
 *   map_cost -t ROUTE FILE SECONDS
 *       wall clock: calls per second on this (noisy) machine, for scale.
 *
 *   map_cost -b MAXBYTES ROUTE FILE
 *       prints a Customer.io /api/v2/batch body of the mapped items of
 *       FILE repeated, at most MAXBYTES long (the stand-in capacity test).
 *
 *   map_cost -l ROUTE FILE
 *       prints the length of each mapped item, one a line.
 *
 * ROUTE: identify, track, page, screen, group, alias, batch.
 *
 * Built with -DBENCH_ARENA (build/bench/map_cost_arena), malloc, calloc,
 * realloc and free of the whole process are a bump arena rewound after
 * each bench_map_once(): what the mapper would cost with a per-request
 * arena (cJSON_InitHooks plus a pool for its own allocations) instead of
 * glibc malloc.  A what-if for bench/README.md, not a mapper change.
 */


#define _GNU_SOURCE

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ngx_http_cio_map.h"
#include "ngx_http_cio_map_fast.h"


static ngx_http_cio_map_opts_t  opts;

/* BENCH_MAP_TREE=1: the tree mapper alone, as before the fast path */
static int (*map_fn)(const char *body, size_t len,
    const ngx_http_cio_map_opts_t *opts, ngx_http_cio_map_result_t *res)
    = ngx_http_cio_map_request;


#ifdef BENCH_ARENA

#define ARENA_SIZE  (256 * 1024 * 1024)

static char    arena[ARENA_SIZE] __attribute__((aligned(16)));
static size_t  arena_used;

typedef struct {
    size_t  size;
    size_t  pad;
} arena_hdr_t;


void *
malloc(size_t n)
{
    arena_hdr_t  *h;

    n = (n + 15) & ~(size_t) 15;

    if (arena_used + sizeof(arena_hdr_t) + n > ARENA_SIZE) {
        return NULL;
    }

    h = (arena_hdr_t *) (arena + arena_used);
    h->size = n;
    arena_used += sizeof(arena_hdr_t) + n;

    return h + 1;
}


void
free(void *p)
{
    (void) p;
}


void *
calloc(size_t n, size_t size)
{
    void  *p;

    p = malloc(n * size);
    if (p) {
        memset(p, 0, n * size);
    }

    return p;
}


void *
realloc(void *p, size_t n)
{
    void  *q;
    size_t old;

    if (p == NULL) {
        return malloc(n);
    }

    old = ((arena_hdr_t *) p - 1)->size;

    if (n <= old) {
        return p;
    }

    q = malloc(n);
    if (q) {
        memcpy(q, p, old);
    }

    return q;
}

#define ARENA_MARK(m)    size_t m = arena_used
#define ARENA_REWIND(m)  arena_used = (m)

#else

#define ARENA_MARK(m)
#define ARENA_REWIND(m)

#endif


static const struct {
    const char  *name;
    int          route;
} routes[] = {
    { "identify", NGX_HTTP_CIO_CALL_IDENTIFY },
    { "track", NGX_HTTP_CIO_CALL_TRACK },
    { "page", NGX_HTTP_CIO_CALL_PAGE },
    { "screen", NGX_HTTP_CIO_CALL_SCREEN },
    { "group", NGX_HTTP_CIO_CALL_GROUP },
    { "alias", NGX_HTTP_CIO_CALL_ALIAS },
    { "batch", NGX_HTTP_CIO_CALL_BATCH },
};


/* kept out of line: callgrind's --toggle-collect counts exactly this */
__attribute__((noinline)) void bench_map_once(const char *body, size_t len,
    size_t *items, size_t *bytes);

__attribute__((noinline)) void
bench_map_once(const char *body, size_t len, size_t *items, size_t *bytes)
{
    size_t                     i;
    int                        j;
    ngx_http_cio_map_result_t  res;
    ARENA_MARK(mark);

    memset(&res, 0, sizeof(res));

    if (map_fn(body, len, &opts, &res) != 0) {
        fprintf(stderr, "map_cost: body refused: %s\n", res.error);
        exit(1);
    }

    *items = 0;
    *bytes = 0;

    for (i = 0; i < res.ncalls; i++) {
        if (res.calls[i].error[0]) {
            fprintf(stderr, "map_cost: call %zu refused: %s\n", i,
                    res.calls[i].error);
            exit(1);
        }

        for (j = 0; j < res.calls[i].nitems; j++) {
            (*items)++;
            *bytes += res.calls[i].item_len[j];
        }
    }

    ngx_http_cio_map_result_free(&res);
    ARENA_REWIND(mark);
}


static char *
slurp(const char *path, size_t *len)
{
    FILE    *f;
    char    *buf;
    long     n;

    f = fopen(path, "rb");
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0) {
        perror(path);
        exit(2);
    }

    rewind(f);

    buf = malloc((size_t) n + 1);
    if (buf == NULL || fread(buf, 1, (size_t) n, f) != (size_t) n) {
        perror(path);
        exit(2);
    }

    fclose(f);
    buf[n] = '\0';
    *len = (size_t) n;

    return buf;
}


static int
route_of(const char *name)
{
    size_t  i;

    for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(routes[i].name, name) == 0) {
            return routes[i].route;
        }
    }

    fprintf(stderr, "map_cost: unknown route \"%s\"\n", name);
    exit(2);
}


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static int
batch_body(size_t max, const char *body, size_t len)
{
    size_t                     i, out, n, items;
    int                        j;
    ngx_http_cio_map_result_t  res;

    memset(&res, 0, sizeof(res));

    if (map_fn(body, len, &opts, &res) != 0) {
        fprintf(stderr, "map_cost: body refused: %s\n", res.error);
        return 1;
    }

    out = sizeof("{\"batch\":[]}") - 1;
    items = 0;
    fputs("{\"batch\":[", stdout);

    for (n = 0; ; n++) {
        for (i = 0; i < res.ncalls; i++) {
            for (j = 0; j < res.calls[i].nitems; j++) {
                if (out + res.calls[i].item_len[j] + (items ? 1 : 0) > max) {
                    goto done;
                }

                if (items++) {
                    putchar(',');
                    out++;
                }

                fwrite(res.calls[i].item[j], 1, res.calls[i].item_len[j],
                       stdout);
                out += res.calls[i].item_len[j];
            }
        }
    }

done:

    fputs("]}", stdout);
    fprintf(stderr, "items=%zu bytes=%zu\n", items, out);
    ngx_http_cio_map_result_free(&res);

    return 0;
}


static int
item_lengths(const char *body, size_t len)
{
    size_t                     i;
    int                        j;
    ngx_http_cio_map_result_t  res;

    memset(&res, 0, sizeof(res));

    if (map_fn(body, len, &opts, &res) != 0) {
        fprintf(stderr, "map_cost: body refused: %s\n", res.error);
        return 1;
    }

    for (i = 0; i < res.ncalls; i++) {
        for (j = 0; j < res.calls[i].nitems; j++) {
            printf("%zu\n", res.calls[i].item_len[j]);
        }
    }

    ngx_http_cio_map_result_free(&res);

    return 0;
}


int
main(int argc, char **argv)
{
    int      timed, lengths, iter, i;
    char    *body;
    size_t   len, items, bytes, max;
    double   t0, t1, secs;
    long     calls;

    timed = 0;
    lengths = 0;
    max = 0;

    if (argc > 2 && strcmp(argv[1], "-t") == 0) {
        timed = 1;
        argv++;
        argc--;

    } else if (argc > 2 && strcmp(argv[1], "-l") == 0) {
        lengths = 1;
        argv++;
        argc--;

    } else if (argc > 3 && strcmp(argv[1], "-b") == 0) {
        max = (size_t) atol(argv[2]);
        argv += 2;
        argc -= 2;
    }

    if (argc < 3) {
        fprintf(stderr, "usage: map_cost [-t | -l | -b MAXBYTES] ROUTE FILE "
                "[ITER | SECONDS]\n");
        return 2;
    }

    if (getenv("BENCH_MAP_TREE") != NULL
        && strcmp(getenv("BENCH_MAP_TREE"), "1") == 0)
    {
        map_fn = ngx_http_cio_map_tree;
    }

    /* as ngx_http_cio_process() sets them with the default directives */
    opts.route = route_of(argv[1]);
    opts.received_ms = 1715682104000LL;
    opts.max_item_size = NGX_HTTP_CIO_MAP_MAX_ITEM_SIZE;
    opts.max_batch_calls = NGX_HTTP_CIO_MAP_MAX_BATCH_CALLS;
    opts.screen_native = 0;
    opts.convert_timestamps = 1;

    body = slurp(argv[2], &len);

    if (max) {
        return batch_body(max, body, len);
    }

    if (lengths) {
        return item_lengths(body, len);
    }

    /* warm-up, outside the counted function */
    {
        ngx_http_cio_map_result_t  res;

        memset(&res, 0, sizeof(res));
        map_fn(body, len, &opts, &res);
        ngx_http_cio_map_result_free(&res);
    }

    if (timed) {
        secs = argc > 3 ? atof(argv[3]) : 1.0;
        calls = 0;
        t0 = now();

        do {
            for (i = 0; i < 1000; i++) {
                bench_map_once(body, len, &items, &bytes);
            }

            calls += 1000;
            t1 = now();

        } while (t1 - t0 < secs);

        printf("route=%s body=%zu items=%zu item_bytes=%zu "
               "calls_per_s=%.0f ns_per_call=%.0f\n",
               argv[1], len, items, bytes, calls / (t1 - t0),
               (t1 - t0) * 1e9 / calls);
        return 0;
    }

    iter = argc > 3 ? atoi(argv[3]) : 10;

    for (i = 0; i < iter; i++) {
        bench_map_once(body, len, &items, &bytes);
    }

    printf("route=%s body=%zu items=%zu item_bytes=%zu iter=%d\n",
           argv[1], len, items, bytes, iter);

    free(body);

    return 0;
}
