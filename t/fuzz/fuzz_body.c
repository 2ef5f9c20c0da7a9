/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * libFuzzer target for everything the module does to a request body in
 * process: optional inflate, then the mapper, then the checks that what
 * would be queued for Customer.io is sound.
 *
 * Input layout:
 *   byte 0   route: value % 9, the ngx_http_cio_call_e values (0 is
 *            UNKNOWN, 7 BATCH, 8 AMPLITUDE);
 *   byte 1   bit 0: the rest is gzip/zlib, inflate it first (max 1 MB);
 *            bit 1: cio_screen_views native; bit 2: unused;
 *            bit 3: deny filters; bit 4: an allow filter;
 *            bit 5: an extra device event name;
 *   rest     the body.
 *
 * Every produced item must be an RFC 8259 JSON object of at most
 * max_item_size bytes; any other broken invariant of the mapper's
 * contract (ngx_http_cio_map.h) aborts.  Items must also be valid UTF-8
 * without lone surrogates, which RFC 8259 requires between systems
 * (FUZZ_STRICT_UTF8=0 in the environment turns that check off).
 *
 * Built with -DFUZZ_STANDALONE it has its own main() that runs the files
 * given, for replaying a crash under gcc or Valgrind.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

#include "ngx_http_cio_map.h"
#include "ngx_http_cio_inflate.h"


#define FUZZ_MAX_INFLATED   (1024 * 1024)
#define FUZZ_MAX_ITEM       NGX_HTTP_CIO_MAP_MAX_ITEM_SIZE
#define FUZZ_MAX_CALLS      NGX_HTTP_CIO_MAP_MAX_BATCH_CALLS
#define FUZZ_MAX_DEPTH      512


typedef struct {
    const unsigned char  *p;
    const unsigned char  *end;
    int                   strict;
} fuzz_json_t;


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fuzz_json_value(fuzz_json_t *j, int depth);


static int  fuzz_strict_utf8;


static void
fuzz_fail(const char *what, const char *item, size_t len)
{
    fprintf(stderr, "fuzz_body: %s\n", what);

    if (item != NULL) {
        fprintf(stderr, "item (%zu bytes): %.*s\n", len,
                len > 4096 ? 4096 : (int) len, item);
    }

    abort();
}


static void
fuzz_json_ws(fuzz_json_t *j)
{
    while (j->p < j->end
           && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n'
               || *j->p == '\r'))
    {
        j->p++;
    }
}


static int
fuzz_json_hex4(fuzz_json_t *j, unsigned *cp)
{
    int  i;

    *cp = 0;

    for (i = 0; i < 4; i++) {
        unsigned char  c;

        if (j->p >= j->end) {
            return -1;
        }

        c = *j->p++;

        if (c >= '0' && c <= '9') {
            *cp = *cp * 16 + (c - '0');

        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            *cp = *cp * 16 + ((c | 0x20) - 'a' + 10);

        } else {
            return -1;
        }
    }

    return 0;
}


/* one UTF-8 sequence: no overlong forms, no surrogates, <= U+10FFFF */

static int
fuzz_json_utf8(fuzz_json_t *j)
{
    int             n, i;
    unsigned        cp, min;
    unsigned char   c;

    c = *j->p++;

    if (c < 0x80) {
        return 0;

    } else if ((c & 0xe0) == 0xc0) {
        n = 1;
        cp = c & 0x1f;
        min = 0x80;

    } else if ((c & 0xf0) == 0xe0) {
        n = 2;
        cp = c & 0x0f;
        min = 0x800;

    } else if ((c & 0xf8) == 0xf0) {
        n = 3;
        cp = c & 0x07;
        min = 0x10000;

    } else {
        return -1;
    }

    for (i = 0; i < n; i++) {
        if (j->p >= j->end || (*j->p & 0xc0) != 0x80) {
            return -1;
        }

        cp = (cp << 6) | (*j->p++ & 0x3f);
    }

    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return -1;
    }

    return 0;
}


static int
fuzz_json_string(fuzz_json_t *j)
{
    unsigned       cp, lo;
    unsigned char  c;

    j->p++;                                     /* the opening quote */

    while (j->p < j->end) {
        c = *j->p;

        if (c == '"') {
            j->p++;
            return 0;
        }

        if (c < 0x20) {
            return -1;
        }

        if (c >= 0x80 && j->strict) {
            if (fuzz_json_utf8(j) != 0) {
                return -1;
            }

            continue;
        }

        j->p++;

        if (c != '\\') {
            continue;
        }

        if (j->p >= j->end) {
            return -1;
        }

        c = *j->p++;

        if (strchr("\"\\/bfnrt", c) != NULL && c != '\0') {
            continue;
        }

        if (c != 'u' || fuzz_json_hex4(j, &cp) != 0) {
            return -1;
        }

        if (!j->strict || cp < 0xd800 || cp > 0xdfff) {
            continue;
        }

        /* a high surrogate must be followed by a low one */
        if (cp >= 0xdc00
            || j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u')
        {
            return -1;
        }

        j->p += 2;

        if (fuzz_json_hex4(j, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff) {
            return -1;
        }
    }

    return -1;
}


static int
fuzz_json_digits(fuzz_json_t *j)
{
    const unsigned char  *start;

    start = j->p;

    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        j->p++;
    }

    return j->p > start ? 0 : -1;
}


static int
fuzz_json_number(fuzz_json_t *j)
{
    if (*j->p == '-') {
        j->p++;
    }

    if (j->p < j->end && *j->p == '0') {
        j->p++;

    } else if (fuzz_json_digits(j) != 0) {
        return -1;
    }

    if (j->p < j->end && *j->p == '.') {
        j->p++;

        if (fuzz_json_digits(j) != 0) {
            return -1;
        }
    }

    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;

        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) {
            j->p++;
        }

        if (fuzz_json_digits(j) != 0) {
            return -1;
        }
    }

    return 0;
}


static int
fuzz_json_literal(fuzz_json_t *j, const char *word)
{
    size_t  n;

    n = strlen(word);

    if ((size_t) (j->end - j->p) < n || memcmp(j->p, word, n) != 0) {
        return -1;
    }

    j->p += n;

    return 0;
}


static int
fuzz_json_container(fuzz_json_t *j, int depth)
{
    unsigned char  close;

    close = (*j->p == '{') ? '}' : ']';
    j->p++;

    fuzz_json_ws(j);

    if (j->p < j->end && *j->p == close) {
        j->p++;
        return 0;
    }

    for ( ;; ) {

        if (close == '}') {
            if (j->p >= j->end || *j->p != '"'
                || fuzz_json_string(j) != 0)
            {
                return -1;
            }

            fuzz_json_ws(j);

            if (j->p >= j->end || *j->p++ != ':') {
                return -1;
            }
        }

        if (fuzz_json_value(j, depth + 1) != 0) {
            return -1;
        }

        fuzz_json_ws(j);

        if (j->p >= j->end) {
            return -1;
        }

        if (*j->p == close) {
            j->p++;
            return 0;
        }

        if (*j->p++ != ',') {
            return -1;
        }

        fuzz_json_ws(j);
    }
}


static int
fuzz_json_value(fuzz_json_t *j, int depth)
{
    if (depth > FUZZ_MAX_DEPTH) {
        return -1;
    }

    fuzz_json_ws(j);

    if (j->p >= j->end) {
        return -1;
    }

    switch (*j->p) {

    case '{':
    case '[':
        return fuzz_json_container(j, depth);

    case '"':
        return fuzz_json_string(j);

    case 't':
        return fuzz_json_literal(j, "true");

    case 'f':
        return fuzz_json_literal(j, "false");

    case 'n':
        return fuzz_json_literal(j, "null");

    default:
        if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9')) {
            return fuzz_json_number(j);
        }

        return -1;
    }
}


/* the whole text is exactly one JSON object */

static int
fuzz_json_is_object(const char *s, size_t len, int strict)
{
    fuzz_json_t  j;

    j.p = (const unsigned char *) s;
    j.end = j.p + len;
    j.strict = strict;

    if (len == 0 || s[0] != '{' || fuzz_json_value(&j, 0) != 0) {
        return 0;
    }

    fuzz_json_ws(&j);

    return j.p == j.end;
}


static void
fuzz_check(int rc, const ngx_http_cio_map_opts_t *opts,
    const ngx_http_cio_map_result_t *res)
{
    int                             j;
    size_t                          i, nfiltered;
    const ngx_http_cio_map_call_t  *c;

    if (memchr(res->error, '\0', sizeof(res->error)) == NULL) {
        fuzz_fail("request error not terminated", NULL, 0);
    }

    if (rc != 0) {
        if (rc != -1 || res->error[0] == '\0') {
            fuzz_fail("failure without a reason", NULL, 0);
        }

        return;
    }

    if (res->ncalls == 0 || res->calls == NULL
        || res->ncalls > opts->max_batch_calls)
    {
        fuzz_fail("call count out of range", NULL, 0);
    }

    nfiltered = 0;

    for (i = 0; i < res->ncalls; i++) {
        c = &res->calls[i];

        if (memchr(c->error, '\0', sizeof(c->error)) == NULL) {
            fuzz_fail("call error not terminated", NULL, 0);
        }

        if (c->nitems < 0 || c->nitems > NGX_HTTP_CIO_MAP_MAX_ITEMS) {
            fuzz_fail("item count out of range", NULL, 0);
        }

        /* each call has items, or an error, or was filtered: one of them */
        if ((c->error[0] != '\0') + (c->nitems > 0) + c->filtered != 1) {
            fuzz_fail("call neither mapped, refused nor filtered", NULL, 0);
        }

        nfiltered += c->filtered;

        for (j = 0; j < c->nitems; j++) {
            if (c->item[j] == NULL) {
                fuzz_fail("NULL item", NULL, 0);
            }

            if (strlen(c->item[j]) != c->item_len[j]) {
                fuzz_fail("item_len is not the item's length",
                          c->item[j], strlen(c->item[j]));
            }

            if (c->item_len[j] > opts->max_item_size) {
                fuzz_fail("item larger than max_item_size",
                          c->item[j], c->item_len[j]);
            }

            if (!fuzz_json_is_object(c->item[j], c->item_len[j],
                                     fuzz_strict_utf8))
            {
                fuzz_fail(fuzz_strict_utf8
                          ? "item is not a JSON object in valid UTF-8"
                          : "item is not a JSON object",
                          c->item[j], c->item_len[j]);
            }
        }
    }

    if (nfiltered != res->nfiltered) {
        fuzz_fail("nfiltered does not count the filtered calls", NULL, 0);
    }
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char  *s;

    s = getenv("FUZZ_STRICT_UTF8");
    fuzz_strict_utf8 = (s == NULL || s[0] != '0');

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                         rc;
    size_t                      len;
    const char                 *body, *err;
    unsigned char              *inflated;
    ngx_http_cio_map_opts_t     opts;
    ngx_http_cio_map_result_t   res;

    static const char  *allow[] = { "Order Completed", "Signed Up" };
    static const char  *deny[] = { "Spam", "" };
    static const char  *consent[] = { "advertising", "C0004" };
    static const char  *devices[] = { "Push Token Registered" };

    if (size < 2) {
        return 0;
    }

    body = (const char *) data + 2;
    len = size - 2;
    inflated = NULL;

    if (data[1] & 0x01) {
        rc = ngx_http_cio_inflate(data + 2, len, FUZZ_MAX_INFLATED,
                                  &inflated, &len, &err);

        if (rc != 0) {
            if ((rc != -1 && rc != -2) || inflated != NULL || len != 0
                || err == NULL)
            {
                fuzz_fail("inflate failure contract broken", NULL, 0);
            }

            return 0;
        }

        if (inflated == NULL || len > FUZZ_MAX_INFLATED
            || inflated[len] != '\0' || err != NULL)
        {
            fuzz_fail("inflate success contract broken", NULL, 0);
        }

        body = (const char *) inflated;
    }

    memset(&opts, 0, sizeof(ngx_http_cio_map_opts_t));

    opts.route = data[0] % (NGX_HTTP_CIO_CALL_AMPLITUDE + 1);
    opts.received_ms = 1700000000000LL;        /* 2023-11-14T22:13:20Z */
    opts.max_item_size = FUZZ_MAX_ITEM;
    opts.max_batch_calls = FUZZ_MAX_CALLS;
    opts.convert_timestamps = 1;
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

    rc = ngx_http_cio_map_request(body, len, &opts, &res);

    fuzz_check(rc, &opts, &res);

    ngx_http_cio_map_result_free(&res);
    free(inflated);

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

    printf("%d inputs ran\n", argc - 1);

    return 0;
}

#endif
