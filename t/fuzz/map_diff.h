/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * The comparison of the mapper's two paths (src/ngx_http_cio_map_fast.h)
 * that the differential fuzzer and the unit tests share: everything a
 * result holds must be the same, the items byte for byte.
 */


#ifndef _MAP_DIFF_H_INCLUDED_
#define _MAP_DIFF_H_INCLUDED_


#include <stdio.h>
#include <string.h>

#include "ngx_http_cio_map.h"


static int
map_diff_str(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        return a != b;
    }

    return strcmp(a, b) != 0;
}


/* NULL when fast and tree agree, else what differs (in why) */

static const char *
map_diff(int rca, const ngx_http_cio_map_result_t *a, int rcb,
    const ngx_http_cio_map_result_t *b, char *why, size_t size)
{
    int                             j;
    size_t                          i;
    const ngx_http_cio_map_call_t  *ca, *cb;

    if (rca != rcb || strcmp(a->error, b->error) != 0) {
        snprintf(why, size, "rc %d/%d, error \"%s\"/\"%s\"", rca, rcb,
                 a->error, b->error);
        return why;
    }

    if (map_diff_str(a->write_key, b->write_key)
        || map_diff_str(a->missing_field, b->missing_field))
    {
        snprintf(why, size, "write_key or missing_field");
        return why;
    }

    if (a->ncalls != b->ncalls || a->changes != b->changes
        || a->nfiltered != b->nfiltered)
    {
        snprintf(why, size, "ncalls %zu/%zu, changes %u/%u, filtered "
                 "%zu/%zu", a->ncalls, b->ncalls, a->changes, b->changes,
                 a->nfiltered, b->nfiltered);
        return why;
    }

    for (i = 0; i < a->ncalls; i++) {
        ca = &a->calls[i];
        cb = &b->calls[i];

        if (ca->type != cb->type || ca->nitems != cb->nitems
            || ca->filtered != cb->filtered
            || strcmp(ca->error, cb->error) != 0)
        {
            snprintf(why, size, "call %zu: type %d/%d, items %d/%d, "
                     "filtered %d/%d, error \"%s\"/\"%s\"", i, ca->type,
                     cb->type, ca->nitems, cb->nitems, ca->filtered,
                     cb->filtered, ca->error, cb->error);
            return why;
        }

        for (j = 0; j < ca->nitems; j++) {
            if (ca->item_len[j] != cb->item_len[j]
                || memcmp(ca->item[j], cb->item[j], ca->item_len[j] + 1)
                   != 0)
            {
                snprintf(why, size, "call %zu item %d:\n fast %.*s\n tree "
                         "%.*s", i, j, (int) ca->item_len[j], ca->item[j],
                         (int) cb->item_len[j], cb->item[j]);
                return why;
            }
        }
    }

    return NULL;
}


#endif /* _MAP_DIFF_H_INCLUDED_ */
