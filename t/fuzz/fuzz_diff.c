/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * libFuzzer target comparing the mapper's two paths: every input is
 * mapped by the fast path (src/ngx_http_cio_map_fast.c) and by the cJSON
 * tree (ngx_http_cio_map_tree()); when the fast path does not decline,
 * any difference in the result (status, errors, write key, counts, items
 * byte for byte) aborts.
 *
 * Input layout, as t/fuzz/fuzz_body.c (no inflate: the bodies are plain):
 *   byte 0   route: value % 9, the ngx_http_cio_call_e values;
 *   byte 1   bit 1: cio_screen_views native; bit 2: timestamps not
 *            converted; bit 3: deny filters; bit 4: an allow filter;
 *            bit 5: an extra device event name; bit 6: small items
 *            (max_item_size 600); bit 7: batch cap of 3 calls;
 *   rest     the body.
 *
 * FUZZ_DIFF_STATS=1 in the environment prints, at exit, how many inputs
 * the fast path mapped and how many it declined.  Built with
 * -DFUZZ_STANDALONE it has its own main() that runs the files given.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

#include "ngx_http_cio_map.h"
#include "ngx_http_cio_map_fast.h"
#include "map_diff.h"


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static unsigned long  fuzz_mapped, fuzz_declined;


static void
fuzz_stats(void)
{
    fprintf(stderr, "fuzz_diff: the fast path mapped %lu inputs as the "
            "tree does, declined %lu\n", fuzz_mapped, fuzz_declined);
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char  *s;

    s = getenv("FUZZ_DIFF_STATS");

    if (s != NULL && s[0] == '1') {
        atexit(fuzz_stats);
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                         rcf, rct;
    char                        why[4096];
    size_t                      len;
    const char                 *body, *diff;
    ngx_http_cio_map_opts_t     opts;
    ngx_http_cio_map_result_t   fast, tree;

    static const char  *allow[] = { "Order Completed", "Signed Up" };
    static const char  *deny[] = { "Spam", "" };
    static const char  *consent[] = { "advertising", "C0004" };
    static const char  *devices[] = { "Push Token Registered" };

    if (size < 2) {
        return 0;
    }

    body = (const char *) data + 2;
    len = size - 2;

    memset(&opts, 0, sizeof(ngx_http_cio_map_opts_t));

    opts.route = data[0] % (NGX_HTTP_CIO_CALL_AMPLITUDE + 1);
    opts.received_ms = 1700000000000LL;
    opts.max_item_size = (data[1] & 0x40) ? 600
                                          : NGX_HTTP_CIO_MAP_MAX_ITEM_SIZE;
    opts.max_batch_calls = (data[1] & 0x80) ? 3
                                            : NGX_HTTP_CIO_MAP_MAX_BATCH_CALLS;
    opts.convert_timestamps = !((data[1] >> 2) & 1);
    opts.screen_native = (data[1] >> 1) & 1;

    if (data[1] & 0x08) {
        opts.events_deny = deny;
        opts.nevents_deny = 2;
        opts.consent_deny = consent;
        opts.nconsent_deny = 2;
    }

    if (data[1] & 0x10) {
        opts.events_allow = allow;
        opts.nevents_allow = 2;
    }

    if (data[1] & 0x20) {
        opts.device_events = devices;
        opts.ndevice_events = 1;
    }

    rcf = ngx_http_cio_map_fast(body, len, &opts, &fast);

    if (rcf == NGX_HTTP_CIO_MAP_DECLINED) {
        if (fast.calls != NULL || fast.write_key != NULL
            || fast.ncalls != 0)
        {
            fprintf(stderr, "fuzz_diff: a declined result is not empty\n");
            abort();
        }

        fuzz_declined++;
        return 0;
    }

    fuzz_mapped++;

    rct = ngx_http_cio_map_tree(body, len, &opts, &tree);

    diff = map_diff(rcf, &fast, rct, &tree, why, sizeof(why));

    if (diff != NULL) {
        fprintf(stderr, "fuzz_diff: the paths differ: %s\nbody: %.*s\n",
                diff, (int) (len > 4096 ? 4096 : len), body);
        abort();
    }

    ngx_http_cio_map_result_free(&fast);
    ngx_http_cio_map_result_free(&tree);

    return 0;
}


#ifdef FUZZ_STANDALONE

#include "fuzz_main.h"


int
main(int argc, char **argv)
{
    if (fuzz_run_files(argc, argv) != 0) {
        return 1;
    }

    fuzz_stats();

    return 0;
}

#endif
