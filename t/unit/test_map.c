/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * Unit tests of the event mapper, linked alone (no nginx).  Each case is a
 * request body, the route it arrived on, and the exact Customer.io items
 * (or error) that docs/mapping.md promises for it.  Items are compared as
 * JSON values, so key order does not matter but every key and value does.
 *
 * To keep the cases readable, the JSON in them may use ' where JSON has "
 * (no test value contains an apostrophe), and an expected item's ULID
 * "id" may be "*": any well-formed ULID then matches, and the ids are
 * tested on their own (test_dedupe).
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "ngx_http_cio_map.h"
#include "ngx_http_cio_map_fast.h"
#include "../fuzz/map_diff.h"


#define RECEIVED_MS  1700000000000LL        /* 2023-11-14T22:13:20Z */


static int  passed, failed;

/*
 * The suite runs twice: through ngx_http_cio_map_request() (the fast path
 * first), with every call also mapped by both paths and compared, then
 * with the tree mapper alone.
 */
static int  tree_only;
static int  fast_mapped, fast_declined;


static void
ok(int cond, const char *name, const char *detail)
{
    if (cond) {
        passed++;
        return;
    }

    failed++;
    printf("not ok: %s\n", name);

    if (detail) {
        printf("    %s\n", detail);
    }
}


static ngx_http_cio_map_opts_t
opts(int route)
{
    ngx_http_cio_map_opts_t  o;

    memset(&o, 0, sizeof(o));
    o.route = route;
    o.received_ms = RECEIVED_MS;
    o.max_item_size = NGX_HTTP_CIO_MAP_MAX_ITEM_SIZE;
    o.max_batch_calls = NGX_HTTP_CIO_MAP_MAX_BATCH_CALLS;
    o.convert_timestamps = 1;

    return o;
}


/* a malloc()ed copy of len bytes with every ' turned into " */
static char *
dq(const char *s, size_t len)
{
    char    *p;
    size_t   i;

    p = malloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';

    for (i = 0; i < len; i++) {
        if (p[i] == '\'') {
            p[i] = '"';
        }
    }

    return p;
}


/* the fast path, when it maps a body, gives the tree's result exactly */
static void
map_both(const char *b, size_t len, const ngx_http_cio_map_opts_t *o)
{
    int                         rcf, rct;
    char                        why[2048];
    const char                 *diff;
    ngx_http_cio_map_result_t   fast, tree;

    rcf = ngx_http_cio_map_fast(b, len, o, &fast);

    if (rcf == NGX_HTTP_CIO_MAP_DECLINED) {
        fast_declined++;
        return;
    }

    fast_mapped++;
    rct = ngx_http_cio_map_tree(b, len, o, &tree);

    diff = map_diff(rcf, &fast, rct, &tree, why, sizeof(why));
    ok(diff == NULL, "the fast path maps as the tree does", diff);

    if (diff != NULL) {
        printf("    body: %.*s\n", (int) len, b);
    }

    ngx_http_cio_map_result_free(&fast);
    ngx_http_cio_map_result_free(&tree);
}


/*
 * The same, once more with a messageId added to a single call (most
 * cases have none, and without one the fast path declines): the two
 * paths must still agree.
 */
static void
map_both_with_id(const char *b, size_t len, const ngx_http_cio_map_opts_t *o)
{
    char    *m;
    size_t   n;

    static const char  id[] = "{\"messageId\":\"unit-1\"";

    if (o->route == NGX_HTTP_CIO_CALL_BATCH || len < 2 || b[0] != '{') {
        return;
    }

    m = malloc(len + sizeof(id) + 1);
    memcpy(m, id, sizeof(id) - 1);
    n = sizeof(id) - 1;

    if (b[1] != '}') {
        m[n++] = ',';
    }

    memcpy(m + n, b + 1, len - 1);
    n += len - 1;

    map_both(m, n, o);
    free(m);
}


static int
map_len(const char *body, size_t len, const ngx_http_cio_map_opts_t *o,
    ngx_http_cio_map_result_t *res)
{
    int    rc;
    char  *b;

    b = dq(body, len);
    memset(res, 0, sizeof(*res));

    if (tree_only) {
        rc = ngx_http_cio_map_tree(b, len, o, res);

    } else {
        rc = ngx_http_cio_map_request(b, len, o, res);
        map_both(b, len, o);
        map_both_with_id(b, len, o);
    }

    free(b);

    return rc;
}


static int
map(const char *body, const ngx_http_cio_map_opts_t *o,
    ngx_http_cio_map_result_t *res)
{
    return map_len(body, strlen(body), o, res);
}


static cJSON *
parse(const char *json)
{
    char   *s;
    cJSON  *v;

    s = dq(json, strlen(json));
    v = cJSON_Parse(s);
    free(s);

    return v;
}


/* the items of call i as one JSON array text, for comparison and output */
static char *
items_of(ngx_http_cio_map_result_t *res, size_t i)
{
    int     j;
    cJSON  *arr, *it;
    char   *s;

    arr = cJSON_CreateArray();

    for (j = 0; j < res->calls[i].nitems; j++) {
        it = cJSON_ParseWithLength(res->calls[i].item[j],
                                   res->calls[i].item_len[j]);
        if (it == NULL) {
            it = cJSON_CreateString("<item is not valid JSON>");
        }
        cJSON_AddItemToArray(arr, it);
    }

    s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);

    return s;
}


static int
is_ulid(const char *s)
{
    size_t  i;

    if (s == NULL || strlen(s) != 26 || s[0] > '7') {
        return 0;
    }

    for (i = 0; i < 26; i++) {
        if (strchr("0123456789ABCDEFGHJKMNPQRSTVWXYZ", s[i]) == NULL) {
            return 0;
        }
    }

    return 1;
}


/* the time part of a ULID, in unix ms */
static long long
ulid_ms(const char *s)
{
    int        i;
    long long  ms;

    static const char  alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

    ms = 0;

    for (i = 0; i < 10 && s[i]; i++) {
        ms = ms * 32 + (strchr(alphabet, s[i]) - alphabet);
    }

    return ms;
}


/*
 * got and want are arrays of items; an expected "id":"*" takes the got
 * item's id when that is a well-formed ULID.
 */
static int
same_items(cJSON *got, cJSON *want)
{
    cJSON  *g, *w, *gid, *wid;

    if (!cJSON_IsArray(got) || !cJSON_IsArray(want)
        || cJSON_GetArraySize(got) != cJSON_GetArraySize(want))
    {
        return 0;
    }

    for (g = got->child, w = want->child; g && w; g = g->next, w = w->next)
    {
        wid = cJSON_GetObjectItemCaseSensitive(w, "id");
        gid = cJSON_GetObjectItemCaseSensitive(g, "id");

        if (cJSON_IsString(wid) && strcmp(wid->valuestring, "*") == 0
            && cJSON_IsString(gid) && is_ulid(gid->valuestring))
        {
            cJSON_ReplaceItemInObjectCaseSensitive(w, "id",
                cJSON_CreateString(gid->valuestring));
        }
    }

    return cJSON_Compare(got, want, 1);
}


/*
 * A whole request in, every call's outcome out.  `want` is a JSON array
 * with one entry per call: the array of its items, {"error":"..."}, or
 * "filtered".
 */
static void
expect_calls(const char *name, const ngx_http_cio_map_opts_t *o,
    const char *body, const char *want)
{
    int                        good;
    char                       detail[8192];
    char                      *got, *ws;
    size_t                     i;
    cJSON                     *w, *wc, *g, *e;
    ngx_http_cio_map_call_t   *c;
    ngx_http_cio_map_result_t  res;

    w = parse(want);

    if (w == NULL) {
        ok(0, name, "the test's expected JSON does not parse");
        return;
    }

    if (map(body, o, &res) != 0
        || res.ncalls != (size_t) cJSON_GetArraySize(w))
    {
        snprintf(detail, sizeof(detail), "request error \"%s\", %zu calls",
                 res.error, res.ncalls);
        ok(0, name, detail);
        ngx_http_cio_map_result_free(&res);
        cJSON_Delete(w);
        return;
    }

    good = 1;
    detail[0] = '\0';
    i = 0;

    cJSON_ArrayForEach(wc, w) {
        c = &res.calls[i];
        got = items_of(&res, i);

        if (cJSON_IsString(wc)) {
            good = c->filtered && c->nitems == 0 && c->error[0] == '\0';

        } else if (cJSON_IsObject(wc)) {
            e = cJSON_GetObjectItemCaseSensitive(wc, "error");
            good = c->nitems == 0 && !c->filtered && cJSON_IsString(e)
                   && strcmp(c->error, e->valuestring) == 0;

        } else {
            g = cJSON_Parse(got);
            good = c->error[0] == '\0' && !c->filtered
                   && same_items(g, wc);
            cJSON_Delete(g);
        }

        if (!good) {
            ws = cJSON_PrintUnformatted(wc);
            snprintf(detail, sizeof(detail),
                     "call %zu: got %s%s%s%s\n    want: %s", i, got,
                     c->error[0] ? " error \"" : "", c->error,
                     c->filtered ? " (filtered)" : "", ws);
            free(ws);
        }

        free(got);
        i++;

        if (!good) {
            break;
        }
    }

    ok(good, name, detail);

    ngx_http_cio_map_result_free(&res);
    cJSON_Delete(w);
}


/* One call in, the expected items out: `want` is a JSON array of items. */
static void
expect_items_o(const char *name, const ngx_http_cio_map_opts_t *o,
    const char *body, const char *want)
{
    char    *w;
    size_t   n;

    n = strlen(want) + 3;
    w = malloc(n);
    snprintf(w, n, "[%s]", want);
    expect_calls(name, o, body, w);
    free(w);
}


static void
expect_items(const char *name, int route, const char *body,
    const char *want)
{
    ngx_http_cio_map_opts_t  o;

    o = opts(route);
    expect_items_o(name, &o, body, want);
}


/* one call in, a per-call error out */
static void
expect_call_error(const char *name, int route, const char *body,
    const char *want)
{
    char                       detail[512];
    ngx_http_cio_map_opts_t    o;
    ngx_http_cio_map_result_t  res;

    o = opts(route);

    if (map(body, &o, &res) != 0 || res.ncalls < 1) {
        snprintf(detail, sizeof(detail), "request error \"%s\"", res.error);
        ok(0, name, detail);

    } else {
        snprintf(detail, sizeof(detail), "got \"%s\" (%d items), want \"%s\"",
                 res.calls[0].error, res.calls[0].nitems, want);
        ok(res.ncalls == 1 && strcmp(res.calls[0].error, want) == 0
           && res.calls[0].nitems == 0, name, detail);
    }

    ngx_http_cio_map_result_free(&res);
}


/* the whole body refused */
static void
expect_request_error(const char *name, int route, const char *body,
    size_t len, const char *want)
{
    int                        rc;
    char                       detail[512];
    ngx_http_cio_map_opts_t    o;
    ngx_http_cio_map_result_t  res;

    o = opts(route);
    o.max_batch_calls = 3;

    rc = map_len(body, len, &o, &res);

    snprintf(detail, sizeof(detail), "rc %d, got \"%s\", want \"%s\"",
             rc, res.error, want);
    ok(rc == -1 && strcmp(res.error, want) == 0, name, detail);

    ngx_http_cio_map_result_free(&res);
}


/* maps one call and returns its first item parsed (or NULL) */
static cJSON *
first_item(int route, const char *body, ngx_http_cio_map_opts_t *o,
    unsigned *changes)
{
    cJSON                      *it;
    ngx_http_cio_map_opts_t     def;
    ngx_http_cio_map_result_t   res;

    def = opts(route);

    if (map(body, o ? o : &def, &res) != 0 || res.ncalls != 1
        || res.calls[0].nitems == 0)
    {
        ngx_http_cio_map_result_free(&res);
        return NULL;
    }

    it = cJSON_ParseWithLength(res.calls[0].item[0],
                               res.calls[0].item_len[0]);

    if (changes) {
        *changes = res.changes;
    }

    ngx_http_cio_map_result_free(&res);

    return it;
}


static const char *
item_str(cJSON *it, const char *key)
{
    cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(it, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}


static double
item_num(cJSON *it, const char *key)
{
    cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(it, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}


static void
test_identity(void)
{
    cJSON  *it;

    expect_items("identify: plain userId is id, traits are attributes,"
                 " createdAt becomes created_at seconds, anonymousId kept",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{\"userId\":\"u1\",\"anonymousId\":\"a1\",\"traits\":{\"email\":"
        "\"x@y.com\",\"createdAt\":\"2020-01-01T00:00:00Z\",\"plan\":\"pro\""
        ",\"unsubscribed\":true}}",
        "[{\"type\":\"person\",\"action\":\"identify\",\"identifiers\":"
        "{\"id\":\"u1\"},\"attributes\":{\"email\":\"x@y.com\",\"plan\":"
        "\"pro\",\"unsubscribed\":true,\"created_at\":1577836800,"
        "\"anonymous_id\":\"a1\"}}]");

    expect_items("identify: cio_ prefix becomes cio_id",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{\"userId\":\"cio_03000001\",\"traits\":{}}",
        "[{\"type\":\"person\",\"action\":\"identify\",\"identifiers\":"
        "{\"cio_id\":\"03000001\"},\"attributes\":{}}]");

    expect_items("identify: e-mail userId becomes email identifier",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{\"userId\":\"Ann@Example.com\"}",
        "[{\"type\":\"person\",\"action\":\"identify\",\"identifiers\":"
        "{\"email\":\"Ann@Example.com\"},\"attributes\":{}}]");

    expect_items("identify: numeric userId stays a number",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{\"userId\":42,\"traits\":{\"a\":1}}",
        "[{\"type\":\"person\",\"action\":\"identify\",\"identifiers\":"
        "{\"id\":42},\"attributes\":{\"a\":1}}]");

    expect_items("identify: no userId, traits.email identifies",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{\"anonymousId\":\"a1\",\"traits\":{\"email\":\"t@x.io\"}}",
        "[{\"type\":\"person\",\"action\":\"identify\",\"identifiers\":"
        "{\"email\":\"t@x.io\"},\"attributes\":{\"email\":\"t@x.io\","
        "\"anonymous_id\":\"a1\"}}]");

    expect_items("identify: context.traits used when traits are absent",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{\"anonymousId\":\"a1\",\"context\":{\"traits\":{\"email\":"
        "\"c@x.io\",\"n\":2}}}",
        "[{\"type\":\"person\",\"action\":\"identify\",\"identifiers\":"
        "{\"email\":\"c@x.io\"},\"attributes\":{\"email\":\"c@x.io\","
        "\"n\":2,\"anonymous_id\":\"a1\"}}]");

    expect_items("identify: only anonymousId gives anonymous_id",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{\"anonymousId\":\"a1\",\"traits\":{\"n\":1}}",
        "[{\"type\":\"person\",\"action\":\"identify\",\"identifiers\":"
        "{\"anonymous_id\":\"a1\"},\"attributes\":{\"n\":1}}]");

    expect_call_error("no identity at all is refused",
        NGX_HTTP_CIO_CALL_TRACK, "{\"event\":\"x\"}",
        "userId or anonymousId is required");

    expect_call_error("empty userId and no anonymousId is refused",
        NGX_HTTP_CIO_CALL_TRACK, "{\"userId\":\"\",\"event\":\"x\"}",
        "userId or anonymousId is required");

    {
        char  body[512], want[64];

        snprintf(body, sizeof(body),
                 "{\"userId\":\"%0151d\",\"event\":\"x\"}", 7);
        snprintf(want, sizeof(want), "userId is longer than 150 bytes");
        expect_call_error("identifier over 150 bytes is refused",
            NGX_HTTP_CIO_CALL_TRACK, body, want);

        snprintf(body, sizeof(body),
                 "{\"userId\":\"%0150d\",\"event\":\"x\"}", 7);
        it = first_item(NGX_HTTP_CIO_CALL_TRACK, body, NULL, NULL);
        ok(it != NULL, "identifier of exactly 150 bytes is accepted", NULL);
        cJSON_Delete(it);
    }

    /* U+FFFD for the bad bytes would make one person of several */
    expect_call_error("a userId that is not UTF-8 is refused",
        NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"jos\xe9\",\"event\":\"x\",\"messageId\":\"m\"}",
        "userId is not valid UTF-8");
    expect_call_error("an anonymousId that is not UTF-8 is refused",
        NGX_HTTP_CIO_CALL_TRACK,
        "{\"anonymousId\":\"a\xc3\",\"event\":\"x\",\"messageId\":\"m\"}",
        "anonymousId is not valid UTF-8");
    expect_call_error("an identify e-mail that is not UTF-8 is refused",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{\"traits\":{\"email\":\"jos\xe9@x.io\"},\"messageId\":\"m\"}",
        "email is not valid UTF-8");
    expect_call_error("a groupId that is not UTF-8 is refused",
        NGX_HTTP_CIO_CALL_GROUP,
        "{\"userId\":\"u\",\"groupId\":\"g\xe9\",\"messageId\":\"m\"}",
        "groupId is not valid UTF-8");
    expect_call_error("a previousId that is not UTF-8 is refused",
        NGX_HTTP_CIO_CALL_ALIAS,
        "{\"userId\":\"u\",\"previousId\":\"p\xff\",\"messageId\":\"m\"}",
        "previousId is not valid UTF-8");
}


static void
test_track(void)
{
    cJSON  *it, *a, *b;

    expect_items("track: event with properties, timestamp in seconds,"
                 " ISO strings in properties converted",
        NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"cio_abc\",\"event\":\"Signed Up\",\"properties\":"
        "{\"a\":1,\"when\":\"2021-02-03T04:05:06.789+01:00\",\"s\":\"x\"},"
        "\"timestamp\":\"2023-11-14T22:13:20.123Z\",\"messageId\":\"m1\"}",
        "[{\"type\":\"person\",\"action\":\"event\",\"identifiers\":"
        "{\"cio_id\":\"abc\"},\"name\":\"Signed Up\","
        "\"id\":\"01HF7YAT3VC2GBEBX93WTFJ2T7\",\"timestamp\":1700000000,"
        "\"attributes\":{\"a\":1,\"when\":1612321506,\"s\":\"x\"}}]");

    expect_call_error("track without event is refused",
        NGX_HTTP_CIO_CALL_TRACK, "{\"userId\":\"u\"}", "event is required");

    expect_call_error("track with empty event is refused",
        NGX_HTTP_CIO_CALL_TRACK, "{\"userId\":\"u\",\"event\":\"\"}",
        "event is required");

    /* time: originalTimestamp, epoch ms, +hhmm offsets, no time at all */
    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"e\","
        "\"originalTimestamp\":\"2023-11-14T23:13:10+0100\"}", NULL, NULL);
    ok(it && item_num(it, "timestamp") == 1699999990,
       "originalTimestamp with +hhmm offset is used", NULL);
    cJSON_Delete(it);

    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"e\",\"timestamp\":1600000000999}",
        NULL, NULL);
    ok(it && item_num(it, "timestamp") == 1600000000,
       "epoch milliseconds timestamp", NULL);
    cJSON_Delete(it);

    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"e\"}", NULL, NULL);
    ok(it && item_num(it, "timestamp") == 1700000000,
       "no timestamp: the time nginx received it", NULL);
    cJSON_Delete(it);

    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"e\","
        "\"timestamp\":\"2030-01-01T00:00:00.000000Z\","
        "\"sentAt\":\"2030-01-01T00:00:30Z\"}", NULL, NULL);
    ok(it && item_num(it, "timestamp") == 1700000000 - 30,
       "clock skew: time = received - (sentAt - timestamp)", NULL);
    cJSON_Delete(it);

    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"e\",\"timestamp\":\"yesterday\"}",
        NULL, NULL);
    ok(it && item_num(it, "timestamp") == 1700000000,
       "unparsable timestamp falls back to the received time", NULL);
    cJSON_Delete(it);

    /* dedupe ids */
    a = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"e\",\"messageId\":\"m-1\","
        "\"timestamp\":\"2023-11-14T22:13:20Z\"}", NULL, NULL);
    b = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"e\",\"messageId\":\"m-1\","
        "\"timestamp\":\"2023-11-14T22:13:20Z\",\"properties\":{\"x\":1}}",
        NULL, NULL);
    ok(a && b && strcmp(item_str(a, "id"), item_str(b, "id")) == 0,
       "same messageId gives the same id", NULL);
    ok(a && strlen(item_str(a, "id")) == 26
       && strncmp(item_str(a, "id"), "01HF7YAT00", 10) == 0,
       "id is a ULID whose time part is the event time", item_str(a, "id"));
    cJSON_Delete(b);

    b = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"e\",\"messageId\":\"m-2\","
        "\"timestamp\":\"2023-11-14T22:13:20Z\"}", NULL, NULL);
    ok(a && b && strcmp(item_str(a, "id"), item_str(b, "id")) != 0,
       "another messageId gives another id", NULL);
    cJSON_Delete(a);
    cJSON_Delete(b);

    a = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"e\",\"properties\":{\"x\":1}}",
        NULL, NULL);
    b = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"e\",\"properties\":{\"x\":1}}",
        NULL, NULL);
    ok(a && b && strcmp(item_str(a, "id"), item_str(b, "id")) == 0,
       "no messageId: the same event sent twice gets the same id", NULL);
    cJSON_Delete(b);

    b = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"e\",\"properties\":{\"x\":2}}",
        NULL, NULL);
    ok(a && b && strcmp(item_str(a, "id"), item_str(b, "id")) != 0,
       "no messageId: a different event gets a different id", NULL);
    cJSON_Delete(a);
    cJSON_Delete(b);
}


static void
test_page_screen(void)
{
    cJSON                    *it;
    char                      body[512];
    ngx_http_cio_map_opts_t   o;

    expect_items("page: url from properties when no name",
        NGX_HTTP_CIO_CALL_PAGE,
        "{\"anonymousId\":\"a1\",\"properties\":{\"url\":\"https://x/p\"}}",
        "[{\"type\":\"person\",\"action\":\"page\",\"identifiers\":"
        "{\"anonymous_id\":\"a1\"},\"name\":\"https://x/p\","
        "\"id\":\"01E0VGHMFWCCEZGNCA01G34EG5\",\"timestamp\":1700000000,"
        "\"attributes\":{\"url\":\"https://x/p\"}}]");

    it = first_item(NGX_HTTP_CIO_CALL_PAGE,
        "{\"userId\":\"u\",\"name\":\"Home\",\"properties\":{\"url\":\"/\"}}",
        NULL, NULL);
    ok(it && strcmp(item_str(it, "name"), "Home") == 0,
       "page: name wins over url", NULL);
    cJSON_Delete(it);

    it = first_item(NGX_HTTP_CIO_CALL_PAGE,
        "{\"userId\":\"u\",\"context\":{\"page\":{\"url\":\"https://c/\"}}}",
        NULL, NULL);
    ok(it && strcmp(item_str(it, "name"), "https://c/") == 0,
       "page: context.page.url as the last resort", NULL);
    cJSON_Delete(it);

    expect_call_error("page without name or url is refused",
        NGX_HTTP_CIO_CALL_PAGE, "{\"userId\":\"u\"}",
        "page needs a name or a url");

    expect_items("screen: Viewed X Screen event, numeric userId",
        NGX_HTTP_CIO_CALL_SCREEN,
        "{\"userId\":42,\"name\":\"Home\"}",
        "[{\"type\":\"person\",\"action\":\"event\",\"identifiers\":"
        "{\"id\":42},\"name\":\"Viewed Home Screen\","
        "\"id\":\"01EG33GK339RD5V4BAGXBAPWZB\",\"timestamp\":1700000000,"
        "\"attributes\":{}}]");

    it = first_item(NGX_HTTP_CIO_CALL_SCREEN,
        "{\"userId\":\"u\",\"properties\":{\"name\":\"Cart\"}}", NULL, NULL);
    ok(it && strcmp(item_str(it, "name"), "Viewed Cart Screen") == 0,
       "screen: properties.name", item_str(it, "name"));
    cJSON_Delete(it);

    it = first_item(NGX_HTTP_CIO_CALL_SCREEN,
        "{\"userId\":\"u\",\"event\":\"Pay\"}", NULL, NULL);
    ok(it && strcmp(item_str(it, "name"), "Viewed Pay Screen") == 0,
       "screen: event as the last resort", item_str(it, "name"));
    cJSON_Delete(it);

    it = first_item(NGX_HTTP_CIO_CALL_SCREEN, "{\"userId\":\"u\"}",
                    NULL, NULL);
    ok(it && strcmp(item_str(it, "name"), "Viewed Undefined Screen") == 0,
       "screen: no name gives Viewed Undefined Screen", NULL);
    cJSON_Delete(it);

    snprintf(body, sizeof(body), "{\"userId\":\"u\",\"name\":\"%0120d\"}", 1);
    it = first_item(NGX_HTTP_CIO_CALL_SCREEN, body, NULL, NULL);
    ok(it && strlen(item_str(it, "name")) == 100
       && strncmp(item_str(it, "name"), "Viewed 0000", 11) == 0
       && strcmp(item_str(it, "name") + 93, " Screen") == 0,
       "screen: X is cut so the whole name fits 100 bytes",
       item_str(it, "name"));
    cJSON_Delete(it);

    o = opts(NGX_HTTP_CIO_CALL_SCREEN);
    o.screen_native = 1;
    it = first_item(NGX_HTTP_CIO_CALL_SCREEN,
        "{\"userId\":\"u\",\"name\":\"Home\"}", &o, NULL);
    ok(it && strcmp(item_str(it, "action"), "screen") == 0
       && strcmp(item_str(it, "name"), "Home") == 0,
       "cio_screen_views native: person/screen named X", NULL);
    cJSON_Delete(it);
}


static void
test_group_alias(void)
{
    expect_items("group: object identify with relationship to the person",
        NGX_HTTP_CIO_CALL_GROUP,
        "{\"userId\":\"u@x.io\",\"groupId\":7,\"traits\":{\"objectTypeId\":"
        "\"2\",\"name\":\"Acme\"}}",
        "[{\"type\":\"object\",\"action\":\"identify\",\"identifiers\":"
        "{\"object_type_id\":\"2\",\"object_id\":\"7\"},\"attributes\":"
        "{\"name\":\"Acme\"},\"cio_relationships\":[{\"identifiers\":"
        "{\"email\":\"u@x.io\"}}]}]");

    expect_items("group: only anonymousId gives identify_anonymous,"
                 " default object type 1",
        NGX_HTTP_CIO_CALL_GROUP,
        "{\"anonymousId\":\"a\",\"groupId\":\"g1\"}",
        "[{\"type\":\"object\",\"action\":\"identify_anonymous\","
        "\"identifiers\":{\"object_type_id\":\"1\",\"object_id\":\"g1\"},"
        "\"attributes\":{},\"cio_relationships\":[{\"identifiers\":"
        "{\"anonymous_id\":\"a\"}}]}]");

    expect_call_error("group without groupId is refused",
        NGX_HTTP_CIO_CALL_GROUP, "{\"userId\":\"u\"}", "groupId is required");

    expect_items("alias: merge previousId into userId",
        NGX_HTTP_CIO_CALL_ALIAS,
        "{\"userId\":\"u1\",\"previousId\":\"a@b.c\"}",
        "[{\"type\":\"person\",\"action\":\"merge\",\"primary\":"
        "{\"id\":\"u1\"},\"secondary\":{\"email\":\"a@b.c\"}}]");

    expect_call_error("alias without previousId is refused",
        NGX_HTTP_CIO_CALL_ALIAS, "{\"userId\":\"u1\"}",
        "alias needs userId and previousId");
}


static void
test_devices(void)
{
    cJSON  *it;

    expect_items("Application Installed with a token: add_device, then the"
                 " event",
        NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"Application Installed\","
        "\"context\":{\"device\":{\"token\":\"tok\",\"type\":\"iOS\","
        "\"model\":\"X\"},\"os\":{\"name\":\"iPadOS\"},\"app\":{\"version\":"
        "\"1.2\"},\"locale\":\"en-US\"},\"properties\":{\"p\":1}}",
        "[{\"type\":\"person\",\"action\":\"add_device\",\"identifiers\":"
        "{\"id\":\"u\"},\"device\":{\"token\":\"tok\",\"platform\":\"ios\","
        "\"last_used\":1700000000,\"attributes\":{\"device_os\":\"iPadOS\","
        "\"device_model\":\"X\",\"app_version\":\"1.2\",\"device_locale\":"
        "\"en-US\",\"p\":1}}},"
        "{\"type\":\"person\",\"action\":\"event\",\"identifiers\":"
        "{\"id\":\"u\"},\"name\":\"Application Installed\","
        "\"id\":\"01ECDPHYYJJQS1RW899EPPV8FS\",\"timestamp\":1700000000,"
        "\"attributes\":{\"p\":1}}]");

    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"Application Opened\",\"context\":"
        "{\"device\":{\"token\":\"t\",\"type\":\"Android\"}}}", NULL, NULL);
    ok(it && strcmp(item_str(it, "action"), "add_device") == 0
       && strcmp(item_str(cJSON_GetObjectItem(it, "device"), "platform"),
                 "android") == 0,
       "Application Opened: platform is the device type lower-cased", NULL);
    cJSON_Delete(it);

    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"anonymousId\":\"a\",\"event\":\"Application Installed\","
        "\"context\":{\"device\":{\"token\":\"t\"}}}", NULL, NULL);
    ok(it && strcmp(item_str(it, "action"), "event") == 0,
       "device event of an anonymous person is only the event", NULL);
    cJSON_Delete(it);

    {
        const char               *names[] = { "Push Enabled" };
        ngx_http_cio_map_opts_t   o;

        o = opts(NGX_HTTP_CIO_CALL_TRACK);
        o.device_events = names;
        o.ndevice_events = 1;

        it = first_item(NGX_HTTP_CIO_CALL_TRACK,
            "{\"userId\":\"u\",\"event\":\"Push Enabled\",\"context\":"
            "{\"device\":{\"token\":\"t\"}}}", &o, NULL);
        ok(it && strcmp(item_str(it, "action"), "add_device") == 0,
           "cio_device_events: a listed name adds the device", NULL);
        cJSON_Delete(it);

        it = first_item(NGX_HTTP_CIO_CALL_TRACK,
            "{\"userId\":\"u\",\"event\":\"Push Enabled\",\"context\":"
            "{\"device\":{\"token\":\"t\"}}}", NULL, NULL);
        ok(it && strcmp(item_str(it, "action"), "event") == 0,
           "an unlisted name is only an event", NULL);
        cJSON_Delete(it);
    }

    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"Device Deleted\",\"context\":"
        "{\"device\":{\"token\":\"t\"}}}", NULL, NULL);
    ok(it && strcmp(item_str(it, "action"), "delete_device") == 0,
       "Device Deleted: delete_device", NULL);
    cJSON_Delete(it);

    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"User Deleted\"}", NULL, NULL);
    ok(it && strcmp(item_str(it, "action"), "delete") == 0,
       "User Deleted: person delete", NULL);
    cJSON_Delete(it);

    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"User Suppressed\"}", NULL, NULL);
    ok(it && strcmp(item_str(it, "action"), "suppress") == 0,
       "User Suppressed: person suppress", NULL);
    cJSON_Delete(it);
}


static void
test_limits(void)
{
    int                        i;
    char                      *body, *p, detail[128];
    cJSON                     *it, *attrs, *v;
    unsigned                   changes;
    ngx_http_cio_map_opts_t    o;
    ngx_http_cio_map_result_t  res;

    body = malloc(64 * 1024);

    /* event name: 99 ASCII bytes then a 2-byte character → cut before it */
    p = body + sprintf(body, "{\"userId\":\"u\",\"event\":\"");
    memset(p, 'a', 99);
    p += 99;
    p += sprintf(p, "\xc3\xa9tail\"}");

    changes = 0;
    it = first_item(NGX_HTTP_CIO_CALL_TRACK, body, NULL, &changes);
    ok(it && strlen(item_str(it, "name")) == 99 && changes > 0,
       "event name cut to 100 bytes at a UTF-8 boundary, change counted",
       NULL);
    cJSON_Delete(it);

    /* attribute name over 150 bytes dropped; long value cut to 1000 */
    p = body + sprintf(body, "{\"userId\":\"u\",\"event\":\"e\","
                       "\"properties\":{\"");
    memset(p, 'k', 151);
    p += 151;
    p += sprintf(p, "\":1,\"v\":\"");
    memset(p, 'v', 1500);
    p += 1500;
    sprintf(p, "\"}}");

    it = first_item(NGX_HTTP_CIO_CALL_TRACK, body, NULL, NULL);
    attrs = cJSON_GetObjectItem(it, "attributes");
    v = cJSON_GetObjectItem(attrs, "v");
    ok(it && cJSON_GetArraySize(attrs) == 1 && cJSON_IsString(v)
       && strlen(v->valuestring) == 1000,
       "attribute name over 150 bytes dropped, value cut to 1000 bytes",
       NULL);
    cJSON_Delete(it);

    /* the same inside a nested value (docs/mapping.md §7.2) */
    p = body + sprintf(body, "{\"userId\":\"u\",\"event\":\"e\","
                       "\"properties\":{\"o\":[{\"");
    memset(p, 'k', 151);
    p += 151;
    sprintf(p, "\":1,\"ok\":2}]}}");

    changes = 0;
    it = first_item(NGX_HTTP_CIO_CALL_TRACK, body, NULL, &changes);
    attrs = cJSON_GetObjectItem(it, "attributes");
    v = cJSON_GetArrayItem(cJSON_GetObjectItem(attrs, "o"), 0);
    ok(it && cJSON_GetArraySize(v) == 1 && cJSON_GetObjectItem(v, "ok")
       && changes == 1,
       "nested attribute name over 150 bytes dropped, change counted",
       NULL);
    cJSON_Delete(it);

    /* 310 attributes → the first 300 kept */
    p = body + sprintf(body, "{\"userId\":\"u\",\"event\":\"e\","
                       "\"properties\":{");
    for (i = 0; i < 310; i++) {
        p += sprintf(p, "%s\"k%03d\":%d", i ? "," : "", i, i);
    }
    sprintf(p, "}}");

    it = first_item(NGX_HTTP_CIO_CALL_TRACK, body, NULL, NULL);
    attrs = cJSON_GetObjectItem(it, "attributes");
    snprintf(detail, sizeof(detail), "%d attributes",
             cJSON_GetArraySize(attrs));
    ok(it && cJSON_GetArraySize(attrs) == 300
       && cJSON_GetObjectItem(attrs, "k000")
       && cJSON_GetObjectItem(attrs, "k299")
       && cJSON_GetObjectItem(attrs, "k300") == NULL,
       "at most 300 attributes, the first kept", detail);
    cJSON_Delete(it);

    /* item over 32 KiB after mapping is refused */
    p = body + sprintf(body, "{\"userId\":\"u\",\"event\":\"e\","
                       "\"properties\":{");
    for (i = 0; i < 40; i++) {
        p += sprintf(p, "%s\"k%02d\":\"", i ? "," : "", i);
        memset(p, 'x', 999);
        p += 999;
        *p++ = '"';
    }
    sprintf(p, "}}");

    expect_call_error("item over 32 KiB is refused", NGX_HTTP_CIO_CALL_TRACK,
        body, "event is larger than 32768 bytes after mapping");

    /* the cap follows the option */
    o = opts(NGX_HTTP_CIO_CALL_TRACK);
    o.max_item_size = 100000;
    it = first_item(NGX_HTTP_CIO_CALL_TRACK, body, &o, NULL);
    ok(it != NULL, "a larger max_item_size lets it through", NULL);
    cJSON_Delete(it);

    /* convert_timestamps off leaves ISO strings alone */
    o = opts(NGX_HTTP_CIO_CALL_TRACK);
    o.convert_timestamps = 0;
    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\",\"event\":\"e\",\"properties\":"
        "{\"d\":\"2021-01-01T00:00:00Z\"}}", &o, NULL);
    v = cJSON_GetObjectItem(cJSON_GetObjectItem(it, "attributes"), "d");
    ok(cJSON_IsString(v), "cio_convert_timestamps off keeps strings", NULL);
    cJSON_Delete(it);

    /* an identify never carries a timestamp */
    it = first_item(NGX_HTTP_CIO_CALL_IDENTIFY,
        "{\"userId\":\"u\",\"timestamp\":\"2023-01-01T00:00:00Z\"}",
        NULL, NULL);
    ok(it && cJSON_GetObjectItem(it, "timestamp") == NULL,
       "identify items carry no timestamp", NULL);
    cJSON_Delete(it);

    (void) res;
    free(body);
}


static void
test_batch(void)
{
    char                       detail[256];
    char                      *got;
    ngx_http_cio_map_opts_t    o;
    ngx_http_cio_map_result_t  res;

    o = opts(NGX_HTTP_CIO_CALL_BATCH);

    map("{\"writeKey\":\"wk\",\"sentAt\":\"2023-11-14T22:13:30Z\","
        "\"context\":{\"locale\":\"fr\"},\"batch\":["
        "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\","
        "\"timestamp\":\"2023-11-14T22:13:20Z\"},"
        "{\"type\":\"bogus\",\"userId\":\"u\"},"
        "{\"type\":\"track\",\"event\":\"x\"},"
        "{\"type\":\"identify\",\"userId\":\"u\",\"traits\":{\"a\":1}},"
        "7]}", &o, &res);

    ok(res.write_key && strcmp(res.write_key, "wk") == 0,
       "batch: writeKey taken from the body", NULL);
    ok(res.ncalls == 5, "batch: one result per call", NULL);

    if (res.ncalls == 5) {
        got = items_of(&res, 0);
        snprintf(detail, sizeof(detail), "%s", got);
        ok(strstr(got, "\"timestamp\":1699999990") != NULL,
           "batch: batch-level sentAt corrects the clock skew", detail);
        free(got);

        ok(strcmp(res.calls[1].error, "call type is missing or unknown") == 0,
           "batch: unknown type refused alone", res.calls[1].error);
        ok(strcmp(res.calls[2].error,
                  "userId or anonymousId is required") == 0,
           "batch: call without identity refused alone", res.calls[2].error);
        ok(res.calls[3].error[0] == '\0' && res.calls[3].nitems == 1,
           "batch: valid identify mapped", res.calls[3].error);
        ok(strcmp(res.calls[4].error, "call must be a JSON object") == 0,
           "batch: a non-object call refused alone", res.calls[4].error);
    }

    ngx_http_cio_map_result_free(&res);

    expect_request_error("invalid JSON", NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":", 10, "invalid JSON");
    expect_request_error("empty body", NGX_HTTP_CIO_CALL_TRACK, "", 0,
        "invalid JSON");
    expect_request_error("array body", NGX_HTTP_CIO_CALL_TRACK, "[1]", 3,
        "body must be a JSON object");
    expect_request_error("batch not an array", NGX_HTTP_CIO_CALL_BATCH,
        "{\"batch\":{}}", 12, "batch must be a non-empty array");
    expect_request_error("empty batch", NGX_HTTP_CIO_CALL_BATCH,
        "{\"batch\":[]}", 12, "batch must be a non-empty array");
    expect_request_error("too many calls", NGX_HTTP_CIO_CALL_BATCH,
        "{\"batch\":[{},{},{},{}]}", 23, "too many calls in batch (max 3)");
    expect_request_error("NUL inside the body", NGX_HTTP_CIO_CALL_TRACK,
        "{\"a\":1}\0{}", 10, "invalid JSON");
    expect_request_error("NUL inside a string", NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\0v\",\"event\":\"e\"}", 28, "invalid JSON");
    expect_request_error("NUL after the object", NGX_HTTP_CIO_CALL_TRACK,
        "{\"a\":1}\0", 8, "invalid JSON");

    /* what cJSON alone would read: 01 would name the person "1" */
    expect_request_error("a number with a leading zero",
        NGX_HTTP_CIO_CALL_IDENTIFY, "{\"userId\":01}", 13, "invalid JSON");
    expect_request_error("a number with a plus sign",
        NGX_HTTP_CIO_CALL_IDENTIFY, "{\"userId\":+1}", 13, "invalid JSON");
    expect_request_error("a number ending in a point",
        NGX_HTTP_CIO_CALL_IDENTIFY, "{\"userId\":1.}", 13, "invalid JSON");
    expect_request_error("a number starting with a point",
        NGX_HTTP_CIO_CALL_TRACK, "{\"userId\":\"u\",\"event\":\"e\","
        "\"properties\":{\"n\":.5}}", 48, "invalid JSON");
    expect_request_error("a number with two exponents",
        NGX_HTTP_CIO_CALL_TRACK, "{\"userId\":\"u\",\"event\":\"e\","
        "\"properties\":{\"n\":1e5e5}}", 51, "invalid JSON");
    expect_request_error("a control byte between tokens",
        NGX_HTTP_CIO_CALL_IDENTIFY, "{\"userId\":\v\"u\"}", 15,
        "invalid JSON");
    expect_request_error("Amplitude: a leading zero",
        NGX_HTTP_CIO_CALL_AMPLITUDE, "{\"api_key\":\"k\",\"events\":"
        "[{\"user_id\":007,\"event_type\":\"e\"}]}", 59, "invalid JSON");

    expect_items("a UTF-8 byte order mark before the object is skipped",
        NGX_HTTP_CIO_CALL_IDENTIFY, "\xef\xbb\xbf{\"userId\":-0.5e+2}",
        "[{\"type\":\"person\",\"action\":\"identify\",\"identifiers\":"
        "{\"id\":-50},\"attributes\":{}}]");
    expect_items("numbers and strings that only look lenient",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{\"userId\":\"01\",\"traits\":{\"a\":0,\"b\":[-0,1E-2,0.10],"
        "\"c\":\"+1 .5 \\\" 01\",\"d\":true,\"e\":null}}",
        "[{\"type\":\"person\",\"action\":\"identify\",\"identifiers\":"
        "{\"id\":\"01\"},\"attributes\":{\"a\":0,\"b\":[-0,0.01,0.1],"
        "\"c\":\"+1 .5 \\\" 01\",\"d\":true,\"e\":null}}]");
}


/*
 * A lone surrogate escape (a string JavaScript cut inside an emoji) is a
 * byte that is not UTF-8: U+FFFD in a value, the identifier refused, and
 * the other calls of the batch mapped (cJSON alone refused the body).
 */
#define R3  "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"  /* its 3 bytes */

static void
test_lone_surrogates(void)
{
    cJSON                      *it;
    unsigned                    changes;
    ngx_http_cio_map_opts_t     o;
    ngx_http_cio_map_result_t   res;

    expect_calls("batch: a title cut inside an emoji loses nothing",
        (o = opts(NGX_HTTP_CIO_CALL_BATCH), &o),
        "{\"batch\":[{\"type\":\"identify\",\"userId\":\"u1\"},"
        "{\"type\":\"identify\",\"userId\":\"u2\","
        "\"traits\":{\"t\":\"x\\udc00\",\"u\":\"\\ud83d\","
        "\"\\ud83dk\":\"\\ud83d\\ude00\",\"v\":\"\\\\udc00\"}}]}",
        "[[{\"type\":\"person\",\"action\":\"identify\",\"identifiers\":"
        "{\"id\":\"u1\"},\"attributes\":{}}],"
        "[{\"type\":\"person\",\"action\":\"identify\",\"identifiers\":"
        "{\"id\":\"u2\"},\"attributes\":{\"t\":"
        "\"x" R3 "\",\"u\":\"" R3 "\",\"" R3 "k\":"
        "\"\xf0\x9f\x98\x80\",\"v\":\"\\\\udc00\"}}]]");

    changes = 0;
    it = first_item(NGX_HTTP_CIO_CALL_GROUP,
                    "{\"userId\":\"u\",\"groupId\":\"g\",\"traits\":"
                    "{\"name\":\"\\udbff!\"}}", NULL, &changes);
    ok(it != NULL && changes > 0, "group: a lone surrogate repaired, "
       "counted as a change", NULL);
    cJSON_Delete(it);

    expect_call_error("track: a userId with a lone surrogate",
        NGX_HTTP_CIO_CALL_TRACK,
        "{\"userId\":\"u\\ud83d\",\"event\":\"E\"}",
        "userId is not valid UTF-8");

    o = opts(NGX_HTTP_CIO_CALL_AMPLITUDE);
    ok(map("{\"api_key\":\"k\",\"events\":[{\"event_type\":\"a\","
           "\"user_id\":\"user1\"},{\"event_type\":\"b\",\"user_id\":"
           "\"user2\",\"event_properties\":{\"t\":\"\\ud83d\"}}]}", &o,
           &res) == 0 && res.ncalls == 2 && res.calls[1].nitems == 1,
       "Amplitude: a lone surrogate in a property loses nothing",
       res.error);
    ngx_http_cio_map_result_free(&res);
}


/*
 * A key a rule reads, twice: cJSON would take the first, the peers'
 * parsers the last, so the call is refused rather than named either way.
 */
static void
test_repeated_keys(void)
{
    ngx_http_cio_map_opts_t     o;
    ngx_http_cio_map_result_t   res;

    expect_call_error("userId twice",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'alice','userId':'bob','event':'Hi','messageId':'m1'}",
        "userId appears twice");
    expect_call_error("an escaped userId after a plain one",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'alice','user\\u0049d':'bob','event':'Hi'}",
        "userId appears twice");
    expect_call_error("anonymousId twice",
        NGX_HTTP_CIO_CALL_PAGE,
        "{'anonymousId':'a1','name':'p','anonymousId':'a2'}",
        "anonymousId appears twice");
    expect_call_error("identify: traits.email twice",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'traits':{'email':'a@x.co','email':'b@x.co'},'messageId':'m'}",
        "traits.email appears twice");
    expect_call_error("identify: context.traits.email twice",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'anonymousId':'a','messageId':'m','context':{'traits':"
        "{'email':'a@x.co','email':'b@x.co'}}}",
        "context.traits.email appears twice");
    expect_call_error("identify: context.traits twice",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'anonymousId':'a','messageId':'m','context':{'traits':"
        "{'email':'a@x.co'},'traits':{'email':'b@x.co'}}}",
        "context.traits appears twice");

    /* where no rule reads it, a repeated e-mail is an attribute's */
    expect_items("identify with a userId: traits.email twice is kept once",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'userId':'u','traits':{'email':'a@x.co','email':'b@x.co'}}",
        "[{'type':'person','action':'identify','identifiers':{'id':'u'},"
        "'attributes':{'email':'a@x.co'}}]");

    o = opts(NGX_HTTP_CIO_CALL_BATCH);
    ok(map("{'batch':[{'type':'identify','userId':'u'}],'batch':[]}", &o,
           &res) == -1 && strcmp(res.error, "batch appears twice") == 0,
       "batch twice: the request refused", res.error);
    ngx_http_cio_map_result_free(&res);

    o = opts(NGX_HTTP_CIO_CALL_AMPLITUDE);
    ok(map("{'api_key':'k','events':[{'event_type':'e','user_id':'alice',"
           "'user_id':'bob'},{'event_type':'e','user_id':'carol'}]}", &o,
           &res) == 0 && res.ncalls == 2
       && strcmp(res.calls[0].error, "user_id appears twice") == 0
       && res.calls[1].nitems == 1,
       "Amplitude: user_id twice refuses that event alone",
       res.ncalls ? res.calls[0].error : res.error);
    ngx_http_cio_map_result_free(&res);
}


static void
test_identity_edges(void)
{
    char  body[512], want[512];

    /* the v2 body carries ids as JSON: no path encoding, no mangling */
    expect_items("ids with / + @ and space are sent verbatim (R-01)",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'type':'track','userId':'user/with/slashes','event':'Test Event',"
        "'properties':{'test':'property','value':123}}",
        "[{'type':'person','action':'event','identifiers':"
        "{'id':'user/with/slashes'},'name':'Test Event','id':'*',"
        "'timestamp':1700000000,'attributes':{'test':'property',"
        "'value':123}}]");

    expect_items("a + in an e-mail address is still an e-mail",
        NGX_HTTP_CIO_CALL_IDENTIFY, "{'userId':'test+user@email.com'}",
        "[{'type':'person','action':'identify','identifiers':"
        "{'email':'test+user@email.com'},'attributes':{}}]");

    expect_items("a space makes it an id, not an e-mail",
        NGX_HTTP_CIO_CALL_IDENTIFY, "{'userId':'ann smith@x.io'}",
        "[{'type':'person','action':'identify','identifiers':"
        "{'id':'ann smith@x.io'},'attributes':{}}]");

    expect_items("no dot in the domain: an id (R-23 user@1)",
        NGX_HTTP_CIO_CALL_IDENTIFY, "{'userId':'user@1'}",
        "[{'type':'person','action':'identify','identifiers':"
        "{'id':'user@1'},'attributes':{}}]");

    expect_items("two @: an id", NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'userId':'a@b@c.io'}",
        "[{'type':'person','action':'identify','identifiers':"
        "{'id':'a@b@c.io'},'attributes':{}}]");

    /* docs/mapping.md §2: a bare cio_ names nobody */
    expect_items("cio_ with nothing after it is no userId: the anonymousId",
        NGX_HTTP_CIO_CALL_IDENTIFY, "{'userId':'cio_','anonymousId':'a1'}",
        "[{'type':'person','action':'identify','identifiers':"
        "{'anonymous_id':'a1'},'attributes':{}}]");

    expect_items("numeric userId with a fraction stays that number",
        NGX_HTTP_CIO_CALL_IDENTIFY, "{'userId':1.5}",
        "[{'type':'person','action':'identify','identifiers':"
        "{'id':1.5},'attributes':{}}]");

    expect_items("negative numeric userId", NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'userId':-7}",
        "[{'type':'person','action':'identify','identifiers':"
        "{'id':-7},'attributes':{}}]");

    expect_call_error("a numeric userId past 2^53 has lost digits: refused",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':9007199254740993,'event':'e'}",
        "userId is a number too large to be exact");

    expect_call_error("2^53 may be 2^53 + 1 rounded: refused",
        NGX_HTTP_CIO_CALL_IDENTIFY, "{'userId':9007199254740992}",
        "userId is a number too large to be exact");

    expect_items("2^53 - 1 is exact", NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'userId':9007199254740991}",
        "[{'type':'person','action':'identify','identifiers':"
        "{'id':9007199254740991},'attributes':{}}]");

    expect_items("numeric anonymousId becomes its decimal text (V-05)",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'type':'track','anonymousId':987654,'event':'Product Viewed',"
        "'properties':{'plan':'enterprise'}}",
        "[{'type':'person','action':'event','identifiers':"
        "{'anonymous_id':'987654'},'name':'Product Viewed','id':'*',"
        "'timestamp':1700000000,'attributes':{'plan':'enterprise'}}]");

    expect_items("numeric anonymousId of a known person: the attribute",
        NGX_HTTP_CIO_CALL_IDENTIFY, "{'userId':'u','anonymousId':0.25}",
        "[{'type':'person','action':'identify','identifiers':{'id':'u'},"
        "'attributes':{'anonymous_id':'0.25'}}]");

    expect_items("userId null: anonymousId identifies",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':null,'anonymousId':'a','event':'e'}",
        "[{'type':'person','action':'event','identifiers':"
        "{'anonymous_id':'a'},'name':'e','id':'*','timestamp':1700000000,"
        "'attributes':{}}]");

    expect_items("userId true is no id: anonymousId identifies",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':true,'anonymousId':'a','event':'e'}",
        "[{'type':'person','action':'event','identifiers':"
        "{'anonymous_id':'a'},'name':'e','id':'*','timestamp':1700000000,"
        "'attributes':{}}]");

    expect_items("an empty anonymousId adds no attribute",
        NGX_HTTP_CIO_CALL_IDENTIFY, "{'userId':'u','anonymousId':''}",
        "[{'type':'person','action':'identify','identifiers':{'id':'u'},"
        "'attributes':{}}]");

    expect_items("S-03: identify without userId, traits.email identifies",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'type':'identify','userId':null,'anonymousId':'unknown_123',"
        "'timestamp':'2024-01-15T10:00:00.000Z','traits':{'full_name':"
        "'Test User','email':'test@example.com','created_at':"
        "'2024-01-15T10:00:00.000Z'}}",
        "[{'type':'person','action':'identify','identifiers':"
        "{'email':'test@example.com'},'attributes':{'full_name':"
        "'Test User','email':'test@example.com','created_at':1705312800,"
        "'anonymous_id':'unknown_123'}}]");

    expect_items("S-02: e-mail userId",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'type':'identify','userId':'foo@bar.com','anonymousId':"
        "'unknown_123','timestamp':'2024-01-15T10:00:00.000Z','traits':"
        "{'full_name':'Test User','created_at':'2024-01-15T10:00:00.000Z'}}",
        "[{'type':'person','action':'identify','identifiers':"
        "{'email':'foo@bar.com'},'attributes':{'full_name':'Test User',"
        "'created_at':1705312800,'anonymous_id':'unknown_123'}}]");

    expect_items("R-02: cio_ userId, traits.id and email pass through",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'type':'identify','userId':'cio_1234','traits':{'email':"
        "'updated_email@example.com','id':'updated-id-value'}}",
        "[{'type':'person','action':'identify','identifiers':"
        "{'cio_id':'1234'},'attributes':{'email':"
        "'updated_email@example.com','id':'updated-id-value'}}]");

    expect_items("identify by e-mail falls back to context.traits.email"
                 " when traits.email is empty",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'anonymousId':'a','traits':{'email':''},'context':{'traits':"
        "{'email':'c@x.io'}}}",
        "[{'type':'person','action':'identify','identifiers':"
        "{'email':'c@x.io'},'attributes':{'email':'','anonymous_id':'a'}}]");

    expect_call_error("R-04-like: identify with nothing to identify by",
        NGX_HTTP_CIO_CALL_IDENTIFY, "{'traits':{'age':26}}",
        "userId or anonymousId is required");

    snprintf(body, sizeof(body), "{'anonymousId':'%0151d','name':'p'}", 1);
    expect_call_error("an anonymousId over 150 bytes is refused",
        NGX_HTTP_CIO_CALL_PAGE, body, "anonymousId is longer than 150 bytes");

    snprintf(body, sizeof(body),
             "{'anonymousId':'a','traits':{'email':'%0146d@x.io'}}", 1);
    expect_call_error("an identifying e-mail over 150 bytes is refused",
        NGX_HTTP_CIO_CALL_IDENTIFY, body, "email is longer than 150 bytes");

    snprintf(body, sizeof(body), "{'userId':'u','anonymousId':'%0151d'}", 1);
    snprintf(want, sizeof(want), "[{'type':'person','action':'identify',"
             "'identifiers':{'id':'u'},'attributes':{}}]");
    expect_items("a known person's anonymousId over 150 bytes names no"
                 " anonymous activity: no attribute",
        NGX_HTTP_CIO_CALL_IDENTIFY, body, want);

    /* non-object traits, properties and context must not crash */
    expect_items("traits a string: context.traits are used",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'userId':'u','traits':'x','context':{'traits':{'a':1}}}",
        "[{'type':'person','action':'identify','identifiers':{'id':'u'},"
        "'attributes':{'a':1}}]");

    expect_items("traits an array, context a number: no attributes",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'userId':'u','traits':[1,2],'context':7}",
        "[{'type':'person','action':'identify','identifiers':{'id':'u'},"
        "'attributes':{}}]");

    expect_items("traits null: no attributes",
        NGX_HTTP_CIO_CALL_IDENTIFY, "{'userId':'u','traits':null}",
        "[{'type':'person','action':'identify','identifiers':{'id':'u'},"
        "'attributes':{}}]");

    expect_items("properties an array: no attributes",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'e','properties':[{'a':1}]}",
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'e','id':'*','timestamp':1700000000,'attributes':{}}]");

    expect_items("properties a string, context.device a string: an event",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'Application Opened','properties':'p',"
        "'context':{'device':'d'}}",
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'Application Opened','id':'*','timestamp':1700000000,"
        "'attributes':{}}]");

    expect_call_error("event a number is no event name",
        NGX_HTTP_CIO_CALL_TRACK, "{'userId':'u','event':5}",
        "event is required");

    expect_call_error("event null is no event name",
        NGX_HTTP_CIO_CALL_TRACK, "{'userId':'u','event':null}",
        "event is required");
}


static void
test_time_edges(void)
{
    cJSON  *it;
    size_t  i;

    static const struct {
        const char  *ts;
        double       want;
        const char  *name;
    } cases[] = {
        { "2024-08-14T20:36:48.6527521Z", 1723667808,
          "7 fraction digits" },
        { "2024-01-15T10:00:00.123456789Z", 1705312800,
          "9 fraction digits" },
        { "2024-01-15T10:00:00.999999999999Z", 1705312800,
          "12 fraction digits" },
        { "2024-01-15T10:00:00.123456+00:00", 1705312800,
          "microseconds and +00:00 (Python)" },
        { "2006-01-02T15:04:05-0800", 1136243045, "-hhmm offset" },
        { "2022-01-10T20:39:03.955+05:30", 1641827343,
          "+05:30 offset (R-20)" },
        { "2024-01-15T10:00:00.000+0000", 1705312800, "+0000 offset" },
        { "2024-01-15", 1705276800, "date only" },
        { "2024-01-15T10:00Z", 1705312800, "no seconds" },
        { "2024-02-29T00:00:00Z", 1709164800, "a leap day" },
        { "2023-02-29T00:00:00Z", 1700000000,
          "not a leap year: received time" },
        { "2021-04-31T00:00:00Z", 1700000000,
          "31 April: received time" },
        { "2024-01-15T24:00:00Z", 1700000000, "hour 24: received time" },
        { "2024-01-15T10:00:00 PDT", 1700000000,
          "a zone name: received time" },
        { "GMT+0000", 1700000000,
          "context.timezone's GMT+0000 is not a time" },
        { "1712345678", 1700000000, "digits in a string are not a time" },
        { NULL, 0, NULL }
    };

    for (i = 0; cases[i].ts; i++) {
        char  body[256], name[128], detail[64];

        snprintf(body, sizeof(body),
                 "{'userId':'u','event':'e','timestamp':'%s'}", cases[i].ts);
        snprintf(name, sizeof(name), "time: %s", cases[i].name);

        it = first_item(NGX_HTTP_CIO_CALL_TRACK, body, NULL, NULL);
        snprintf(detail, sizeof(detail), "%.0f", item_num(it, "timestamp"));
        ok(it && item_num(it, "timestamp") == cases[i].want, name, detail);
        cJSON_Delete(it);
    }

    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'e','timestamp':null,"
        "'originalTimestamp':'2019-10-14T11:15:18.299Z'}", NULL, NULL);
    ok(it && item_num(it, "timestamp") == 1571051718,
       "time: timestamp null, originalTimestamp used", NULL);
    cJSON_Delete(it);

    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'e','timestamp':-5}", NULL, NULL);
    ok(it && item_num(it, "timestamp") == 1700000000,
       "time: a negative epoch is not a time", NULL);
    cJSON_Delete(it);

    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'e','timestamp':'2023-11-14T22:13:00Z',"
        "'sentAt':'2023-11-14T22:13:20.000000+00:00'}", NULL, NULL);
    ok(it && item_num(it, "timestamp") == 1699999980,
       "time: per-call sentAt with +00:00 corrects the skew", NULL);
    cJSON_Delete(it);

    /* ISO strings anywhere in the attributes (S-05), and what is not one */
    expect_items("S-05: only ISO-8601 strings become unix seconds",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'type':'identify','userId':'abc123','anonymousId':'anonId1234',"
        "'timestamp':'2018-03-04T12:08:56.235 PDT','traits':{'date01':"
        "'25 Mar 2015','date03':'01/01/2019','date04':'2019-02-01',"
        "'date06':'2006-01-02T18:04:07Z','date07':"
        "'2006-01-02T18:04:07+01:00','date11':'2018-03-04T12:08:56 PDT',"
        "'date15':'2006-01-02T15:04:05-0800','tz':'GMT+0000',"
        "'dec':'1712345678.123','digits':'20240115'}}",
        "[{'type':'person','action':'identify','identifiers':{'id':'abc123'},"
        "'attributes':{'date01':'25 Mar 2015','date03':'01/01/2019',"
        "'date04':1548979200,'date06':1136225047,'date07':1136221447,"
        "'date11':'2018-03-04T12:08:56 PDT','date15':1136243045,"
        "'tz':'GMT+0000','dec':'1712345678.123','digits':'20240115',"
        "'anonymous_id':'anonId1234'}}]");

    expect_items("ISO strings inside nested objects and arrays, and a date"
                 " before 1970",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'e','properties':{'person':{'birthdate':"
        "'1990-01-01T00:00:00.000Z'},'dates':['2024-01-15',"
        "'x',{'d':'1969-12-31T23:59:59.500Z'}]}}",
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'e','id':'*','timestamp':1700000000,'attributes':"
        "{'person':{'birthdate':631152000},'dates':[1705276800,'x',"
        "{'d':-1}]}}]");
}


static void
test_peer_calls(void)
{
    expect_items("S-06: track, known user: anonymous_id attribute, nested"
                 " ISO converted",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'type':'track','event':'testEvent','userId':'abc123',"
        "'anonymousId':'anonId1234','messageId':'msg-0001','timestamp':"
        "'2024-01-15T10:00:00.000Z','properties':{'property1':"
        "'this is a test','person':{'over18':true,'identification':"
        "'valid','birthdate':'1990-01-01T00:00:00.000Z'}}}",
        "[{'type':'person','action':'event','name':'testEvent','id':'*',"
        "'identifiers':{'id':'abc123'},'attributes':{'property1':"
        "'this is a test','person':{'over18':true,'identification':"
        "'valid','birthdate':631152000},'anonymous_id':'anonId1234'},"
        "'timestamp':1705312800}]");

    expect_items("S-07: track, anonymous",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'type':'track','event':'test event','anonymousId':"
        "'anonymous123','messageId':'msg-0001','timestamp':"
        "'2024-01-15T10:00:00.000Z','properties':{'property1':"
        "'this is a test'}}",
        "[{'type':'person','action':'event','name':'test event','id':'*',"
        "'identifiers':{'anonymous_id':'anonymous123'},'attributes':"
        "{'property1':'this is a test'},'timestamp':1705312800}]");

    expect_call_error("S-08: track without event name",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'type':'track','userId':'u','properties':{'property1':'x'}}",
        "event is required");

    /* R-10: our track does not identify by e-mail: anonymousId does */
    expect_items("R-10: userId empty: anonymousId, not context.traits.email",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'context':{'traits':{'email':'test@rudderstack.com',"
        "'anonymousId':'12345'}},'type':'track','originalTimestamp':"
        "'2019-10-14T11:15:18.300Z','anonymousId':"
        "'c82cbdff-e5be-4009-ac78-cdeea09ab4b1','userId':'','event':"
        "'test track event','properties':{'user_actual_role':"
        "'system_admin','user_actual_id':12345,'user_time_spent':50000}}",
        "[{'type':'person','action':'event','identifiers':{'anonymous_id':"
        "'c82cbdff-e5be-4009-ac78-cdeea09ab4b1'},'name':'test track event',"
        "'id':'*','timestamp':1571051718,'attributes':{'user_actual_role':"
        "'system_admin','user_actual_id':12345,'user_time_spent':50000}}]");

    expect_items("R-12: a 100-byte event name is kept whole; longer cut",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'type':'track','originalTimestamp':'2019-10-14T11:15:18.300Z',"
        "'anonymousId':'c82cbdff-e5be-4009-ac78-cdeea09ab4b1','event':"
        "'https://www.stoodi.com.br/exershgcios/upe/2019/questao/"
        "gregorio-de-matos-poeta-baiano-que-viveu-no-seculo-xvi/',"
        "'properties':{'user_actual_role':'system_admin','user_actual_id':"
        "12345,'user_time_spent':50}}",
        "[{'type':'person','action':'event','identifiers':{'anonymous_id':"
        "'c82cbdff-e5be-4009-ac78-cdeea09ab4b1'},'name':'https://www."
        "stoodi.com.br/exershgcios/upe/2019/questao/gregorio-de-matos-"
        "poeta-baiano-que-viveu-no-s','id':'*','timestamp':1571051718,"
        "'attributes':{'user_actual_role':'system_admin','user_actual_id':"
        "12345,'user_time_spent':50}}]");

    expect_items("V-01: cio_ userId is a cio_id (RudderStack sends id)",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'type':'track','userId':'cio_v2_user1','event':'Order Completed',"
        "'properties':{'orderId':'abc-123','revenue':49.99}}",
        "[{'type':'person','action':'event','identifiers':{'cio_id':"
        "'v2_user1'},'name':'Order Completed','id':'*','timestamp':"
        "1700000000,'attributes':{'orderId':'abc-123','revenue':49.99}}]");

    expect_items("null values, arrays and nested objects pass through",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'e','properties':{'n':null,'a':[1,'two',"
        "null,[3]],'o':{'p':{'q':false}},'A':1}}",
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'e','id':'*','timestamp':1700000000,'attributes':{'n':null,"
        "'a':[1,'two',null,[3]],'o':{'p':{'q':false}},'A':1}}]");

    expect_items("keys differing only in case are two attributes",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'e','properties':{'plan':1,'Plan':2}}",
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'e','id':'*','timestamp':1700000000,'attributes':{'plan':1,"
        "'Plan':2}}]");

    /* page */
    expect_items("R-06: page with a name, time from originalTimestamp",
        NGX_HTTP_CIO_CALL_PAGE,
        "{'context':{'traits':{'email':'test@rudderstack.com',"
        "'anonymousId':'12345'}},'type':'page','originalTimestamp':"
        "'2019-10-14T11:15:18.299Z','anonymousId':"
        "'c82cbdff-e5be-4009-ac78-cdeea09ab4b1','userId':'12345',"
        "'properties':{'path':'/test','referrer':'Rudder','search':'abc',"
        "'title':'Test Page','url':'www.rudderlabs.com'},'name':"
        "'ApplicationLoaded'}",
        "[{'type':'person','action':'page','identifiers':{'id':'12345'},"
        "'name':'ApplicationLoaded','id':'*','timestamp':1571051718,"
        "'attributes':{'path':'/test','referrer':'Rudder','search':'abc',"
        "'title':'Test Page','url':'www.rudderlabs.com','anonymous_id':"
        "'c82cbdff-e5be-4009-ac78-cdeea09ab4b1'}}]");

    expect_items("R-07 / S-09: page without a name is named by its url",
        NGX_HTTP_CIO_CALL_PAGE,
        "{'type':'page','userId':'abc123','anonymousId':'anonId1234',"
        "'messageId':'msg-0001','timestamp':'2024-01-15T10:00:00.000Z',"
        "'properties':{'property1':'this is a test','url':"
        "'https://example.com/page-one'}}",
        "[{'type':'person','action':'page','name':"
        "'https://example.com/page-one','id':'*','identifiers':{'id':"
        "'abc123'},'attributes':{'property1':'this is a test','url':"
        "'https://example.com/page-one','anonymous_id':'anonId1234'},"
        "'timestamp':1705312800}]");

    expect_call_error("R-08: page, known user, neither name nor url:"
                      " refused (RudderStack sends it nameless)",
        NGX_HTTP_CIO_CALL_PAGE,
        "{'type':'page','userId':'12345','properties':{'path':'/test'}}",
        "page needs a name or a url");

    expect_call_error("R-09: anonymous page without name or url",
        NGX_HTTP_CIO_CALL_PAGE,
        "{'type':'page','anonymousId':'c82cbdff'}",
        "page needs a name or a url");

    expect_items("page: name null and url a number: context.page.url",
        NGX_HTTP_CIO_CALL_PAGE,
        "{'userId':'u','name':null,'properties':{'url':5},'context':"
        "{'page':{'url':'https://c/'}}}",
        "[{'type':'person','action':'page','identifiers':{'id':'u'},"
        "'name':'https://c/','id':'*','timestamp':1700000000,"
        "'attributes':{'url':5}}]");

    /* screen */
    expect_items("R-13: screen X cut to 86 bytes, whole name 100",
        NGX_HTTP_CIO_CALL_SCREEN,
        "{'type':'screen','originalTimestamp':'2019-10-14T11:15:18.300Z',"
        "'anonymousId':'c82cbdff-e5be-4009-ac78-cdeea09ab4b1','event':"
        "'https://www.stoodi.com.br/exercicios/upe/2016/questao/"
        "gregorio-de-matos-poeta-baiano-que-viveu-no-seculo-xvi/',"
        "'properties':{'user_actual_role':'system_admin'}}",
        "[{'type':'person','action':'event','identifiers':{'anonymous_id':"
        "'c82cbdff-e5be-4009-ac78-cdeea09ab4b1'},'name':'Viewed https://"
        "www.stoodi.com.br/exercicios/upe/2016/questao/gregorio-de-matos-"
        "poeta-baiano-q Screen','id':'*','timestamp':1571051718,"
        "'attributes':{'user_actual_role':'system_admin'}}]");

    expect_items("V-04: screen named only by event",
        NGX_HTTP_CIO_CALL_SCREEN,
        "{'type':'screen','anonymousId':'c82cbdff','event':'Home Screen',"
        "'properties':{'plan':'enterprise'},'originalTimestamp':"
        "'2019-10-14T11:15:18.300Z'}",
        "[{'type':'person','action':'event','identifiers':{'anonymous_id':"
        "'c82cbdff'},'name':'Viewed Home Screen Screen','id':'*',"
        "'timestamp':1571051718,'attributes':{'plan':'enterprise'}}]");

    {
        ngx_http_cio_map_opts_t  o;

        o = opts(NGX_HTTP_CIO_CALL_SCREEN);
        o.screen_native = 1;

        expect_items_o("S-10: cio_screen_views native: person/screen",
            &o,
            "{'type':'screen','name':'Page One','anonymousId':"
            "'anonymous123','messageId':'msg-0001','timestamp':"
            "'2024-01-15T10:00:00.000Z','properties':{'property1':"
            "'this is a test','screen':'Page One'}}",
            "[{'type':'person','action':'screen','name':'Page One','id':'*',"
            "'identifiers':{'anonymous_id':'anonymous123'},'attributes':"
            "{'property1':'this is a test','screen':'Page One'},"
            "'timestamp':1705312800}]");

        expect_items_o("native screen without a name: Undefined", &o,
            "{'userId':'u'}",
            "[{'type':'person','action':'screen','name':'Undefined',"
            "'id':'*','identifiers':{'id':'u'},'attributes':{},"
            "'timestamp':1700000000}]");
    }

    expect_items("screen: name a number and properties.name empty:"
                 " Undefined",
        NGX_HTTP_CIO_CALL_SCREEN,
        "{'userId':'u','name':3,'properties':{'name':''}}",
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'Viewed Undefined Screen','id':'*','timestamp':1700000000,"
        "'attributes':{'name':''}}]");

    /* group */
    expect_items("R-23: group; traits.action names the object action and"
                 " leaves the attributes (docs/mapping.md §5.5)",
        NGX_HTTP_CIO_CALL_GROUP,
        "{'groupId':'group@1','traits':{'domainNames':'rudderstack.com',"
        "'email':'help@rudderstack.com','name':'rudderstack','action':"
        "'identify'},'type':'group','userId':'user@1'}",
        "[{'type':'object','action':'identify','attributes':{'name':"
        "'rudderstack','email':'help@rudderstack.com','domainNames':"
        "'rudderstack.com'},'identifiers':{'object_id':"
        "'group@1','object_type_id':'1'},'cio_relationships':"
        "[{'identifiers':{'id':'user@1'}}]}]");

    expect_items("R-24: numeric groupId as text, e-mail relationship, ISO"
                 " traits converted",
        NGX_HTTP_CIO_CALL_GROUP,
        "{'type':'group','traits':{'city':'Frankfurt','address':"
        "'Solmsstra\\u00dfe 83','maxNbJobBoards':2,'dateProTrialEnd':"
        "'2022-08-31T00:00:00+00:00','datetimeRegistration':"
        "'2020-07-01T10:23:41+00:00','isFake':true},'userId':"
        "'abc@xyz.com','groupId':306,'originalTimestamp':"
        "'2023-03-28T09:36:49.882Z'}",
        "[{'type':'object','action':'identify','attributes':{'city':"
        "'Frankfurt','address':'Solmsstra\\u00dfe 83','maxNbJobBoards':2,"
        "'dateProTrialEnd':1661904000,'datetimeRegistration':1593599021,"
        "'isFake':true},'identifiers':{'object_id':'306','object_type_id':"
        "'1'},'cio_relationships':[{'identifiers':{'email':"
        "'abc@xyz.com'}}]}]");

    expect_items("R-28: anonymous group, objectTypeId used and removed",
        NGX_HTTP_CIO_CALL_GROUP,
        "{'type':'group','groupId':'group1','anonymousId':'anonId',"
        "'traits':{'objectTypeId':'obj1','email':'abc@test.com','name':"
        "'rudder','address':{'city':'kolkata','country':'India'},"
        "'createdAt':'2014-05-21T15:54:20Z'}}",
        "[{'type':'object','action':'identify_anonymous','identifiers':"
        "{'object_id':'group1','object_type_id':'obj1'},'attributes':"
        "{'email':'abc@test.com','name':'rudder','address':{'city':"
        "'kolkata','country':'India'},'createdAt':1400687660},"
        "'cio_relationships':[{'identifiers':{'anonymous_id':"
        "'anonId'}}]}]");

    expect_items("S-15: objectAttributes stay nested (our contract: traits"
                 " are the attributes)",
        NGX_HTTP_CIO_CALL_GROUP,
        "{'type':'group','groupId':'grp123','anonymousId':'unknown_123',"
        "'traits':{'object_type_id':'1','objectAttributes':{'name':"
        "'Sales','created_at':'2024-01-15T10:00:00.000Z'}}}",
        "[{'type':'object','action':'identify_anonymous','identifiers':"
        "{'object_type_id':'1','object_id':'grp123'},'attributes':"
        "{'objectAttributes':{'name':'Sales','created_at':1705312800}},"
        "'cio_relationships':[{'identifiers':{'anonymous_id':"
        "'unknown_123'}}]}]");

    expect_items("group: object_type_id wins, a number is its text",
        NGX_HTTP_CIO_CALL_GROUP,
        "{'userId':'u','groupId':'g','traits':{'object_type_id':2,"
        "'objectTypeId':'9','n':1}}",
        "[{'type':'object','action':'identify','identifiers':"
        "{'object_type_id':'2','object_id':'g'},'attributes':{'n':1},"
        "'cio_relationships':[{'identifiers':{'id':'u'}}]}]");

    expect_items("group: an empty object_type_id is absent",
        NGX_HTTP_CIO_CALL_GROUP,
        "{'userId':'u','groupId':'g','traits':{'object_type_id':'',"
        "'objectTypeId':'2'}}",
        "[{'type':'object','action':'identify','identifiers':"
        "{'object_type_id':'2','object_id':'g'},'attributes':{},"
        "'cio_relationships':[{'identifiers':{'id':'u'}}]}]");

    expect_call_error("group: an object_type_id not UTF-8 refused",
        NGX_HTTP_CIO_CALL_GROUP,
        "{'userId':'u','groupId':'g','traits':{'object_type_id':"
        "'1\xe9'}}", "object_type_id is not valid UTF-8");

    expect_items("group: fractional groupId in its shortest text",
        NGX_HTTP_CIO_CALL_GROUP, "{'userId':'u','groupId':0.1}",
        "[{'type':'object','action':'identify','identifiers':"
        "{'object_type_id':'1','object_id':'0.1'},'attributes':{},"
        "'cio_relationships':[{'identifiers':{'id':'u'}}]}]");

    expect_call_error("group: groupId past 2^53 refused",
        NGX_HTTP_CIO_CALL_GROUP,
        "{'userId':'u','groupId':18014398509481988}",
        "groupId is a number too large to be exact");

    expect_call_error("group: no person to relate",
        NGX_HTTP_CIO_CALL_GROUP, "{'groupId':'g'}",
        "userId or anonymousId is required");

    expect_call_error("group: empty groupId",
        NGX_HTTP_CIO_CALL_GROUP, "{'userId':'u','groupId':''}",
        "groupId is required");

    {
        char  body[512];

        snprintf(body, sizeof(body), "{'userId':'u','groupId':'%0151d'}", 1);
        expect_call_error("group: groupId over 150 bytes",
            NGX_HTTP_CIO_CALL_GROUP, body, "groupId is longer than 150 bytes");
    }

    /* alias */
    expect_items("S-13: alias with cio_ userId", NGX_HTTP_CIO_CALL_ALIAS,
        "{'type':'alias','userId':'cio_123456','previousId':'def456'}",
        "[{'type':'person','action':'merge','primary':{'cio_id':'123456'},"
        "'secondary':{'id':'def456'}}]");

    expect_items("R-26: alias, e-mail userId", NGX_HTTP_CIO_CALL_ALIAS,
        "{'type':'alias','userId':'abc@test.com','previousId':'user1'}",
        "[{'type':'person','action':'merge','primary':{'email':"
        "'abc@test.com'},'secondary':{'id':'user1'}}]");

    expect_items("R-26: alias, both e-mails", NGX_HTTP_CIO_CALL_ALIAS,
        "{'type':'alias','userId':'abc@test.com','previousId':"
        "'user1@test.com'}",
        "[{'type':'person','action':'merge','primary':{'email':"
        "'abc@test.com'},'secondary':{'email':'user1@test.com'}}]");

    expect_call_error("V-01: alias without userId", NGX_HTTP_CIO_CALL_ALIAS,
        "{'type':'alias','previousId':'cio_v2_orphan_old'}",
        "alias needs userId and previousId");

    expect_call_error("alias with an object previousId",
        NGX_HTTP_CIO_CALL_ALIAS, "{'userId':'u','previousId':{}}",
        "alias needs userId and previousId");

    /* V-05: numeric ids everywhere */
    {
        ngx_http_cio_map_opts_t  o;

        o = opts(NGX_HTTP_CIO_CALL_BATCH);

        expect_calls("V-05: numeric ids in identify, track, alias, group",
            &o,
            "{'batch':[{'type':'identify','userId':432,'traits':{'email':"
            "'numeric-id@rudderstack.com','plan':'enterprise'}},"
            "{'type':'track','anonymousId':987654,'event':'Product Viewed',"
            "'properties':{'plan':'enterprise'}},{'type':'alias','userId':"
            "432,'previousId':306},{'type':'group','userId':432,'groupId':"
            "306,'traits':{'name':'numeric group'}}]}",
            "[[{'type':'person','action':'identify','identifiers':{'id':432},"
            "'attributes':{'email':'numeric-id@rudderstack.com','plan':"
            "'enterprise'}}],"
            "[{'type':'person','action':'event','identifiers':"
            "{'anonymous_id':'987654'},'name':'Product Viewed','id':'*',"
            "'timestamp':1700000000,'attributes':{'plan':'enterprise'}}],"
            "[{'type':'person','action':'merge','primary':{'id':432},"
            "'secondary':{'id':306}}],"
            "[{'type':'object','action':'identify','identifiers':"
            "{'object_id':'306','object_type_id':'1'},'attributes':{'name':"
            "'numeric group'},'cio_relationships':[{'identifiers':"
            "{'id':432}}]}]]");
    }
}


static void
test_device_peers(void)
{
    char                      *body, *p;
    int                        i;
    cJSON                     *it, *dattrs;
    ngx_http_cio_map_opts_t    o;

    expect_items("V-02: Application Installed: add_device with context"
                 " attributes, then the event",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'anonymousId':'7e32188a4dab669f','context':{'app':{'version':"
        "'1.0'},'device':{'token':'abcxyz','type':'android','model':"
        "'Android SDK built for x86'},'locale':'en-US','os':{'name':"
        "'Android','version':'9'}},'event':'Application Installed',"
        "'userId':'12345','originalTimestamp':'2020-01-09T10:01:53.558Z',"
        "'type':'track','properties':{'review_id':'r1','product_id':'p1',"
        "'rating':2}}",
        "[{'type':'person','action':'add_device','identifiers':{'id':"
        "'12345'},'device':{'token':'abcxyz','last_used':1578564113,"
        "'attributes':{'device_os':'Android','device_model':"
        "'Android SDK built for x86','app_version':'1.0','device_locale':"
        "'en-US','review_id':'r1','product_id':'p1','rating':2},"
        "'platform':'android'}},"
        "{'type':'person','action':'event','identifiers':{'id':'12345'},"
        "'name':'Application Installed','id':'*','timestamp':1578564113,"
        "'attributes':{'review_id':'r1','product_id':'p1','rating':2,"
        "'anonymous_id':'7e32188a4dab669f'}}]");

    expect_items("V-03: Application Uninstalled: delete_device, then the"
                 " event",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'context':{'device':{'token':'abcxyz','type':'android'}},"
        "'event':'Application Uninstalled','userId':'12345',"
        "'originalTimestamp':'2020-01-09T10:01:53.558Z','type':'track'}",
        "[{'type':'person','action':'delete_device','identifiers':{'id':"
        "'12345'},'device':{'token':'abcxyz'}},"
        "{'type':'person','action':'event','identifiers':{'id':'12345'},"
        "'name':'Application Uninstalled','id':'*','timestamp':1578564113,"
        "'attributes':{}}]");

    expect_items("S-11: Application Opened on ios, app_version",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'type':'track','event':'Application Opened','userId':'abc123',"
        "'timestamp':'2024-01-15T10:00:00.000Z','context':{'app':"
        "{'version':'1.23'},'device':{'token':'device_123','type':'ios'}},"
        "'properties':{}}",
        "[{'type':'person','action':'add_device','identifiers':{'id':"
        "'abc123'},'device':{'token':'device_123','platform':'ios',"
        "'last_used':1705312800,'attributes':{'app_version':'1.23'}}},"
        "{'type':'person','action':'event','identifiers':{'id':'abc123'},"
        "'name':'Application Opened','id':'*','timestamp':1705312800,"
        "'attributes':{}}]");

    expect_items("S-12: Device Deleted: delete_device, then the event",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'type':'track','event':'Device Deleted','userId':'abc123',"
        "'context':{'device':{'token':'device_123'}}}",
        "[{'type':'person','action':'delete_device','identifiers':{'id':"
        "'abc123'},'device':{'token':'device_123'}},"
        "{'type':'person','action':'event','identifiers':{'id':'abc123'},"
        "'name':'Device Deleted','id':'*','timestamp':1700000000,"
        "'attributes':{}}]");

    expect_items("Device Created or Updated, watchOS: ios, no type: no"
                 " platform",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'Device Created or Updated','context':"
        "{'device':{'token':'t','type':'WatchOS'}}}",
        "[{'type':'person','action':'add_device','identifiers':{'id':'u'},"
        "'device':{'token':'t','platform':'ios','last_used':1700000000,"
        "'attributes':{}}},{'type':'person','action':'event',"
        "'identifiers':{'id':'u'},'name':'Device Created or Updated',"
        "'id':'*','timestamp':1700000000,'attributes':{}}]");

    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'Application Opened','context':{'device':"
        "{'token':'t','type':'tvOS'}}}", NULL, NULL);
    ok(it && strcmp(item_str(cJSON_GetObjectItem(it, "device"), "platform"),
                    "ios") == 0, "tvOS is ios", NULL);
    cJSON_Delete(it);

    it = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'Application Opened','context':{'device':"
        "{'token':'t','type':'mobile'}}}", NULL, NULL);
    ok(it && strcmp(item_str(cJSON_GetObjectItem(it, "device"), "platform"),
                    "mobile") == 0, "R-17's mobile type passes lower-cased",
       NULL);
    cJSON_Delete(it);

    expect_items("R-18: Application Installed, anonymous, with a token:"
                 " only the event",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'context':{'device':{'token':'somel','type':'mobile'}},"
        "'type':'track','originalTimestamp':'2019-10-14T11:15:18.300Z',"
        "'anonymousId':'c82c','event':'Application Installed',"
        "'properties':{'user_actual_id':12345}}",
        "[{'type':'person','action':'event','identifiers':{'anonymous_id':"
        "'c82c'},'name':'Application Installed','id':'*','timestamp':"
        "1571051718,'attributes':{'user_actual_id':12345}}]");

    expect_items("R-17: Application Uninstalled, anonymous: only the event"
                 " (RudderStack errors)",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'context':{'device':{'token':'somel','type':'mobile'}},"
        "'type':'track','anonymousId':'c82c','event':"
        "'Application Uninstalled'}",
        "[{'type':'person','action':'event','identifiers':{'anonymous_id':"
        "'c82c'},'name':'Application Uninstalled','id':'*','timestamp':"
        "1700000000,'attributes':{}}]");

    expect_items("R-20: Application Opened without a token: the event,"
                 " timestamp with +05:30 wins over originalTimestamp",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'anonymousId':'5d72','context':{'device':{'type':'iOS'}},"
        "'event':'Application Opened','originalTimestamp':"
        "'2022-01-10T10:00:26.513Z','properties':{'from_background':false},"
        "'timestamp':'2022-01-10T20:39:03.955+05:30','type':'track',"
        "'userId':'e91e0378'}",
        "[{'type':'person','action':'event','identifiers':{'id':"
        "'e91e0378'},'name':'Application Opened','id':'*','timestamp':"
        "1641827343,'attributes':{'from_background':false,'anonymous_id':"
        "'5d72'}}]");

    expect_items("User Unsuppressed: person unsuppress",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u@x.io','event':'User Unsuppressed'}",
        "[{'type':'person','action':'unsuppress','identifiers':{'email':"
        "'u@x.io'}}]");

    expect_call_error("User Deleted of an anonymous visitor is refused",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'anonymousId':'a','event':'User Deleted'}",
        "\"User Deleted\" needs a userId");

    /* device attributes are attributes too: 300 at most */
    body = malloc(64 * 1024);
    p = body + sprintf(body, "{'userId':'u','event':'Application Opened',"
                       "'context':{'os':{'name':'iOS'},'device':{'token':"
                       "'t'}},'properties':{");
    for (i = 0; i < 300; i++) {
        p += sprintf(p, "%s'k%03d':%d", i ? "," : "", i, i);
    }
    sprintf(p, "}}");

    o = opts(NGX_HTTP_CIO_CALL_TRACK);
    it = first_item(NGX_HTTP_CIO_CALL_TRACK, body, &o, NULL);
    dattrs = cJSON_GetObjectItem(cJSON_GetObjectItem(it, "device"),
                                 "attributes");
    ok(it && cJSON_GetArraySize(dattrs) == 300
       && cJSON_GetObjectItem(dattrs, "device_os")
       && cJSON_GetObjectItem(dattrs, "k298")
       && cJSON_GetObjectItem(dattrs, "k299") == NULL,
       "device attributes: at most 300, the first kept", NULL);
    cJSON_Delete(it);
    free(body);
}


static void
test_limit_edges(void)
{
    int                        i;
    char                      *body, *p, detail[128];
    cJSON                     *it, *attrs, *v;
    size_t                     n;
    unsigned                   changes;
    ngx_http_cio_map_opts_t    o;
    ngx_http_cio_map_result_t  res;

    body = malloc(64 * 1024);

    /* exactly 100 bytes: kept, nothing counted */
    p = body + sprintf(body, "{'userId':'u','event':'");
    memset(p, 'a', 100);
    p += 100;
    sprintf(p, "'}");

    changes = 99;
    it = first_item(NGX_HTTP_CIO_CALL_TRACK, body, NULL, &changes);
    ok(it && strlen(item_str(it, "name")) == 100 && changes == 0,
       "event name of exactly 100 bytes is kept, no change counted", NULL);
    cJSON_Delete(it);

    /* a page name: 98 bytes then a 3-byte character */
    p = body + sprintf(body, "{'userId':'u','name':'");
    memset(p, 'p', 98);
    p += 98;
    sprintf(p, "\xe2\x82\xac'}");

    changes = 0;
    it = first_item(NGX_HTTP_CIO_CALL_PAGE, body, NULL, &changes);
    ok(it && strlen(item_str(it, "name")) == 98 && changes == 1,
       "page name cut before a 3-byte character", NULL);
    cJSON_Delete(it);

    /* screen X: 85 bytes then a 4-byte emoji → X cut to 85 */
    p = body + sprintf(body, "{'userId':'u','name':'");
    memset(p, 's', 85);
    p += 85;
    sprintf(p, "\xf0\x9f\x98\x80'}");

    it = first_item(NGX_HTTP_CIO_CALL_SCREEN, body, NULL, &changes);
    ok(it && strlen(item_str(it, "name")) == 99
       && strcmp(item_str(it, "name") + 92, " Screen") == 0,
       "screen X cut before a 4-byte character", item_str(it, "name"));
    cJSON_Delete(it);

    /* native screen names are cut to 100 too */
    o = opts(NGX_HTTP_CIO_CALL_SCREEN);
    o.screen_native = 1;
    p = body + sprintf(body, "{'userId':'u','name':'");
    memset(p, 'n', 140);
    p += 140;
    sprintf(p, "'}");

    it = first_item(NGX_HTTP_CIO_CALL_SCREEN, body, &o, NULL);
    ok(it && strlen(item_str(it, "name")) == 100,
       "native screen name cut to 100 bytes", NULL);
    cJSON_Delete(it);

    /* attribute name of exactly 150 bytes is kept */
    p = body + sprintf(body, "{'userId':'u','event':'e','properties':{'");
    memset(p, 'k', 150);
    p += 150;
    sprintf(p, "':1}}");

    changes = 0;
    it = first_item(NGX_HTTP_CIO_CALL_TRACK, body, NULL, &changes);
    attrs = cJSON_GetObjectItem(it, "attributes");
    ok(it && cJSON_GetArraySize(attrs) == 1 && changes == 0,
       "attribute name of exactly 150 bytes is kept", NULL);
    cJSON_Delete(it);

    /* values: 1000 kept; a 2-byte character across the limit; nested */
    p = body + sprintf(body, "{'userId':'u','event':'e','properties':"
                       "{'a':'");
    memset(p, 'a', 1000);
    p += 1000;
    p += sprintf(p, "','b':'");
    memset(p, 'b', 999);
    p += 999;
    p += sprintf(p, "\xc3\xa9','c':{'d':['");
    memset(p, 'c', 1200);
    p += 1200;
    sprintf(p, "']}}}");

    changes = 0;
    it = first_item(NGX_HTTP_CIO_CALL_TRACK, body, NULL, &changes);
    attrs = cJSON_GetObjectItem(it, "attributes");
    v = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(attrs,
                                                                   "c"),
                                               "d"), 0);
    snprintf(detail, sizeof(detail), "a %zu, b %zu, changes %u",
             strlen(item_str(attrs, "a")), strlen(item_str(attrs, "b")),
             changes);
    ok(it && strlen(item_str(attrs, "a")) == 1000
       && strlen(item_str(attrs, "b")) == 999
       && cJSON_IsString(v) && strlen(v->valuestring) == 1000
       && changes == 2,
       "values: 1000 bytes kept, cut at a UTF-8 boundary, nested too",
       detail);
    cJSON_Delete(it);

    /* 300 traits and an anonymousId: anonymous_id is one of the 300 */
    p = body + sprintf(body, "{'userId':'u','anonymousId':'a',"
                       "'traits':{");
    for (i = 0; i < 300; i++) {
        p += sprintf(p, "%s'k%03d':%d", i ? "," : "", i, i);
    }
    sprintf(p, ",'createdAt':'2020-01-01T00:00:00Z'}}");

    changes = 0;
    it = first_item(NGX_HTTP_CIO_CALL_IDENTIFY, body, NULL, &changes);
    attrs = cJSON_GetObjectItem(it, "attributes");
    snprintf(detail, sizeof(detail), "%d attributes, changes %u",
             cJSON_GetArraySize(attrs), changes);
    ok(it && cJSON_GetArraySize(attrs) == 300
       && cJSON_GetObjectItem(attrs, "anonymous_id")
       && cJSON_GetObjectItem(attrs, "k000")
       && cJSON_GetObjectItem(attrs, "k298")
       && cJSON_GetObjectItem(attrs, "k299") == NULL
       && cJSON_GetObjectItem(attrs, "created_at") == NULL
       && changes == 2,
       "300 attributes at most, anonymous_id included", detail);
    cJSON_Delete(it);

    /* 299 traits + createdAt: created_at replaces it, anonymous_id evicts */
    p = body + sprintf(body, "{'userId':'u','anonymousId':'a',"
                       "'traits':{'createdAt':'2020-01-01T00:00:00Z'");
    for (i = 0; i < 299; i++) {
        p += sprintf(p, ",'k%03d':%d", i, i);
    }
    sprintf(p, "}}");

    it = first_item(NGX_HTTP_CIO_CALL_IDENTIFY, body, NULL, NULL);
    attrs = cJSON_GetObjectItem(it, "attributes");
    ok(it && cJSON_GetArraySize(attrs) == 300
       && item_num(attrs, "created_at") == 1577836800
       && cJSON_GetObjectItem(attrs, "anonymous_id")
       && cJSON_GetObjectItem(attrs, "k298") == NULL,
       "created_at and anonymous_id keep their place within 300", NULL);
    cJSON_Delete(it);

    /* the request and batch-size limits follow the options */
    o = opts(NGX_HTTP_CIO_CALL_BATCH);
    o.max_batch_calls = 2;
    map("{'batch':[{'type':'track','userId':'u','event':'e'},"
        "{'type':'track','userId':'u','event':'e'}]}", &o, &res);
    ok(res.ncalls == 2 && res.error[0] == '\0',
       "max_batch_calls: exactly the cap is accepted", res.error);
    ngx_http_cio_map_result_free(&res);

    o.max_batch_calls = 0;
    map("{'batch':[{},{},{},{},{}]}", &o, &res);
    ok(res.ncalls == 5, "max_batch_calls 0: no cap", res.error);
    ngx_http_cio_map_result_free(&res);

    /* an item exactly at max_item_size passes, one byte less refuses */
    o = opts(NGX_HTTP_CIO_CALL_IDENTIFY);
    map("{'userId':'u','traits':{'a':'xxxxxxxxxx'}}", &o, &res);

    if (res.ncalls == 1 && res.calls[0].nitems == 1) {
        n = res.calls[0].item_len[0];
        ngx_http_cio_map_result_free(&res);

        o.max_item_size = n;
        map("{'userId':'u','traits':{'a':'xxxxxxxxxx'}}", &o, &res);
        ok(res.calls[0].nitems == 1, "an item of exactly max_item_size",
           res.calls[0].error);
        ngx_http_cio_map_result_free(&res);

        o.max_item_size = n - 1;
        map("{'userId':'u','traits':{'a':'xxxxxxxxxx'}}", &o, &res);
        ok(res.calls[0].nitems == 0 && res.calls[0].error[0],
           "an item one byte over max_item_size", NULL);
    }

    ngx_http_cio_map_result_free(&res);
    free(body);
}


static void
test_amplitude(void)
{
    char                       body[2048];
    cJSON                     *a, *b;
    ngx_http_cio_map_opts_t    o;
    ngx_http_cio_map_result_t  res;

    /*
     * the request @amplitude/analytics-node sent (as captured from the
     * SDK), received a moment after its last event: times more than a
     * year after the receipt would be impossible
     */
    o = opts(NGX_HTTP_CIO_CALL_AMPLITUDE);
    o.received_ms = 1795349891000LL;

    expect_calls("Amplitude: track, $identify, $groupidentify, setGroup"
                 " and revenue from the node SDK",
        &o,
        "{'api_key':'AMP_API_KEY_abc','options':{'min_id_length':1},'events':["
        "{'time':1704164645678,'insert_id':'ins-1','event_type':"
        "'Button Clicked','user_id':'user@example.com','ip':'203.0.113.7',"
        "'event_properties':{'color':'red'},'event_id':0,'library':"
        "'amplitude-node-ts/1.5.73'},"
        "{'time':1795349890172,'insert_id':'5fcfe52b','user_id':"
        "'user@example.com','device_id':'dev-1','event_type':'$identify',"
        "'user_properties':{'$set':{'plan':'pro'},'$add':{'logins':1},"
        "'$setOnce':{'first_seen':'2024-01-01'}},'event_id':1},"
        "{'time':1795349890173,'insert_id':'i3','user_id':"
        "'user@example.com','event_type':'$groupidentify',"
        "'group_properties':{'$set':{'tier':'gold'}},'groups':{'org':"
        "'acme'},'event_id':2},"
        "{'time':1795349890174,'user_id':'user@example.com','event_type':"
        "'$identify','user_properties':{'$set':{'org':'acme'}},'groups':"
        "{'org':'acme'}},"
        "{'time':1795349890175,'user_id':'user@example.com','event_type':"
        "'revenue_amount','event_properties':{'$productId':'sku-1',"
        "'$quantity':2,'$price':9.99}}],"
        "'options':{},'client_upload_time':'2026-11-22T12:18:10.472Z'}",
        "[[{'type':'person','action':'event','identifiers':{'email':"
        "'user@example.com'},'name':'Button Clicked','id':'*',"
        "'timestamp':1704164645,'attributes':{'color':'red'}}],"
        "[{'type':'person','action':'identify','identifiers':{'email':"
        "'user@example.com'},'attributes':{'first_seen':1704067200,"
        "'plan':'pro','anonymous_id':'dev-1'}}],"
        "[{'type':'object','action':'identify','identifiers':"
        "{'object_type_id':'1','object_id':'acme'},'attributes':{'tier':"
        "'gold'},'cio_relationships':[{'identifiers':{'email':"
        "'user@example.com'}}]}],"
        "[{'type':'person','action':'identify','identifiers':{'email':"
        "'user@example.com'},'attributes':{'org':'acme'}}],"
        "[{'type':'person','action':'event','identifiers':{'email':"
        "'user@example.com'},'name':'revenue_amount','id':'*',"
        "'timestamp':1795349890,'attributes':{'$productId':'sku-1',"
        "'$quantity':2,'$price':9.99}}]]");

    map("{'api_key':'AMP_KEY',"
        "'options':{'min_id_length':1},'writeKey':'other','events':["
        "{'event_type':'a','device_id':'d'},"
        "{'event_type':'$identify','device_id':'d'},"
        "{'event_type':'$groupidentify','device_id':'d','groups':"
        "{'t':'g'}},{'device_id':'d'}]}", &o, &res);
    ok(res.write_key && strcmp(res.write_key, "AMP_KEY") == 0,
       "Amplitude: the write key is api_key", res.write_key);
    ok(res.ncalls == 4 && res.calls[0].type == NGX_HTTP_CIO_CALL_TRACK
       && res.calls[1].type == NGX_HTTP_CIO_CALL_IDENTIFY
       && res.calls[2].type == NGX_HTTP_CIO_CALL_GROUP
       && res.calls[3].type == NGX_HTTP_CIO_CALL_UNKNOWN,
       "Amplitude: call types track, identify, group, unknown", NULL);
    ngx_http_cio_map_result_free(&res);

    ok(strcmp(ngx_http_cio_call_name(NGX_HTTP_CIO_CALL_AMPLITUDE),
              "amplitude") == 0
       && strcmp(ngx_http_cio_call_name(99), "unknown") == 0,
       "call names", NULL);

    o = opts(NGX_HTTP_CIO_CALL_AMPLITUDE);

    expect_calls("Amplitude: identity rules as Segment's, device_id is"
                 " anonymous_id",
        &o,
        "{'api_key':'k','options':{'min_id_length':1},'events':["
        "{'event_type':'e','device_id':'dev-1','time':1600000000000},"
        "{'event_type':'e','user_id':'cio_42','time':1600000000000},"
        "{'event_type':'e','user_id':42,'device_id':'d2','time':"
        "1600000000000},"
        "{'event_type':'e','user_id':'','device_id':'d3','time':"
        "1600000000000}]}",
        "[[{'type':'person','action':'event','identifiers':{'anonymous_id':"
        "'dev-1'},'name':'e','id':'*','timestamp':1600000000,'attributes':"
        "{}}],"
        "[{'type':'person','action':'event','identifiers':{'cio_id':'42'},"
        "'name':'e','id':'*','timestamp':1600000000,'attributes':{}}],"
        "[{'type':'person','action':'event','identifiers':{'id':42},"
        "'name':'e','id':'*','timestamp':1600000000,'attributes':"
        "{'anonymous_id':'d2'}}],"
        "[{'type':'person','action':'event','identifiers':{'anonymous_id':"
        "'d3'},'name':'e','id':'*','timestamp':1600000000,'attributes':"
        "{}}]]");

    expect_calls("Amplitude: user_properties and groups nested in the"
                 " event's attributes",
        &o,
        "{'api_key':'k',"
        "'options':{'min_id_length':1},"
        "'events':[{'event_type':'Play','user_id':'u',"
        "'event_properties':{'song':'x','groups':'mine'},"
        "'user_properties':{'$set':{'plan':'pro'}},'groups':{'org':"
        "['a','b']}},"
        "{'event_type':'Play','user_id':'u','event_properties':'bad',"
        "'user_properties':[1],'groups':'g'}]}",
        "[[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'Play','id':'*','timestamp':1700000000,'attributes':"
        "{'song':'x','groups':{'org':['a','b']},'user_properties':"
        "{'$set':{'plan':'pro'}}}}],"
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'Play','id':'*','timestamp':1700000000,'attributes':"
        "{}}]]");

    expect_calls("Amplitude $identify: plain properties; $set wins over"
                 " plain over $setOnce; other operators dropped; no"
                 " e-mail fallback",
        &o,
        "{'api_key':'k','options':{'min_id_length':1},'events':["
        "{'event_type':'$identify','user_id':'u','user_properties':"
        "{'plan':'free','age':3}},"
        "{'event_type':'$identify','user_id':'u','user_properties':"
        "{'$setOnce':{'a':1,'b':1,'c':1},'b':2,'c':2,'$set':{'c':3},"
        "'$unset':{'d':'-'},'$append':{'e':1}}},"
        "{'event_type':'$identify','device_id':'d','user_properties':"
        "{'$set':{'email':'x@y.io'}},'time':1600000000000},"
        "{'event_type':'$identify','user_id':'u','user_properties':7}]}",
        "[[{'type':'person','action':'identify','identifiers':{'id':'u'},"
        "'attributes':{'plan':'free','age':3}}],"
        "[{'type':'person','action':'identify','identifiers':{'id':'u'},"
        "'attributes':{'a':1,'b':2,'c':3}}],"
        "[{'type':'person','action':'identify','identifiers':"
        "{'anonymous_id':'d'},'attributes':{'email':'x@y.io'}}],"
        "[{'type':'person','action':'identify','identifiers':{'id':'u'},"
        "'attributes':{}}]]");

    expect_calls("Amplitude: Segment's special names are plain events",
        &o,
        "{'api_key':'k','options':{'min_id_length':1},'events':["
        "{'event_type':'User Deleted','user_id':'u'},"
        "{'event_type':'Application Installed','user_id':'u'}]}",
        "[[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'User Deleted','id':'*','timestamp':1700000000,"
        "'attributes':{}}],"
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'Application Installed','id':'*','timestamp':1700000000,"
        "'attributes':{}}]]");

    expect_calls("Amplitude: $groupidentify with a numeric group and an"
                 " anonymous device",
        &o,
        "{'api_key':'k',"
        "'options':{'min_id_length':1},"
        "'events':[{'event_type':'$groupidentify',"
        "'device_id':'d','groups':{'company':7},'group_properties':"
        "{'size':5}}]}",
        "[[{'type':'object','action':'identify_anonymous','identifiers':"
        "{'object_type_id':'1','object_id':'7'},'attributes':{'size':5},"
        "'cio_relationships':[{'identifiers':{'anonymous_id':'d'}}]}]]");

    snprintf(body, sizeof(body),
             "{'api_key':'k','options':{'min_id_length':1},'events':["
             "{'user_id':'u'},"
             "{'event_type':'','user_id':'u'},"
             "{'event_type':7,'user_id':'u'},"
             "{'event_type':'e'},"
             "{'event_type':'e','user_id':'','device_id':''},"
             "{'event_type':'e','user_id':null,'device_id':{}},"
             "5,"
             "{'event_type':'$groupidentify','user_id':'u','groups':"
             "{'a':'x','b':'y'}},"
             "{'event_type':'$groupidentify','user_id':'u','groups':"
             "{'a':['x','y']}},"
             "{'event_type':'$groupidentify','user_id':'u'},"
             "{'event_type':'$groupidentify','user_id':'u','groups':"
             "{'a':''}},"
             "{'event_type':'e','user_id':'%0151d'},"
             "{'event_type':'e','device_id':'%0151d'},"
             "{'event_type':'$groupidentify','user_id':'u','groups':"
             "{'a':'%0151d'}},"
             "{'event_type':'e','user_id':1e300}]}", 1, 1, 1);

    expect_calls("Amplitude: per-event errors", &o, body,
        "[{'error':'event_type is required'},"
        "{'error':'event_type is required'},"
        "{'error':'event_type is required'},"
        "{'error':'user_id or device_id is required'},"
        "{'error':'user_id or device_id is required'},"
        "{'error':'user_id or device_id is required'},"
        "{'error':'event must be a JSON object'},"
        "{'error':'unsupported event_type'},"
        "{'error':'unsupported event_type'},"
        "{'error':'unsupported event_type'},"
        "{'error':'unsupported event_type'},"
        "{'error':'user_id is longer than 150 bytes'},"
        "{'error':'device_id is longer than 150 bytes'},"
        "{'error':'groups is longer than 150 bytes'},"
        "{'error':'user_id is a number too large to be exact'}]");

    expect_request_error("Amplitude: invalid JSON",
        NGX_HTTP_CIO_CALL_AMPLITUDE, "{'api_key':", 11, "invalid JSON");
    expect_request_error("Amplitude: not an object",
        NGX_HTTP_CIO_CALL_AMPLITUDE, "[]", 2, "body must be a JSON object");
    expect_request_error("Amplitude: no api_key",
        NGX_HTTP_CIO_CALL_AMPLITUDE, "{'events':[{}]}", 15,
        "api_key is missing");
    expect_request_error("Amplitude: empty api_key",
        NGX_HTTP_CIO_CALL_AMPLITUDE, "{'api_key':'','events':[{}]}", 28,
        "api_key is missing");
    expect_request_error("Amplitude: numeric api_key",
        NGX_HTTP_CIO_CALL_AMPLITUDE, "{'api_key':5,'events':[{}]}", 27,
        "api_key is missing");
    expect_request_error("Amplitude: no events",
        NGX_HTTP_CIO_CALL_AMPLITUDE, "{'api_key':'k'}", 15,
        "events must be a non-empty array");
    expect_request_error("Amplitude: events an object",
        NGX_HTTP_CIO_CALL_AMPLITUDE, "{'api_key':'k','events':{'a':1}}", 32,
        "events must be a non-empty array");
    expect_request_error("Amplitude: events empty",
        NGX_HTTP_CIO_CALL_AMPLITUDE, "{'api_key':'k','events':[]}", 27,
        "events must be a non-empty array");
    expect_request_error("Amplitude: more events than max_batch_calls",
        NGX_HTTP_CIO_CALL_AMPLITUDE,
        "{'api_key':'k','events':[{},{},{},{}]}", 38,
        "too many events in batch (max 3)");

    /* insert_id seeds the dedupe id, as messageId does */
    a = first_item(NGX_HTTP_CIO_CALL_AMPLITUDE,
        "{'api_key':'k',"
        "'options':{'min_id_length':1},"
        "'events':[{'event_type':'e','user_id':'u',"
        "'insert_id':'ins-1','time':1700000000000}]}", &o, NULL);
    b = first_item(NGX_HTTP_CIO_CALL_AMPLITUDE,
        "{'api_key':'k',"
        "'options':{'min_id_length':1},"
        "'events':[{'event_type':'e','user_id':'u',"
        "'insert_id':'ins-1','time':1700000000000,'event_properties':"
        "{'x':1}}]}", &o, NULL);
    ok(a && b && strcmp(item_str(a, "id"), item_str(b, "id")) == 0
       && strncmp(item_str(a, "id"), "01HF7YAT00", 10) == 0,
       "Amplitude: the same insert_id gives the same id", item_str(a, "id"));
    cJSON_Delete(b);

    b = first_item(NGX_HTTP_CIO_CALL_AMPLITUDE,
        "{'api_key':'k',"
        "'options':{'min_id_length':1},"
        "'events':[{'event_type':'e','user_id':'u',"
        "'insert_id':'ins-2','time':1700000000000}]}", &o, NULL);
    ok(a && b && strcmp(item_str(a, "id"), item_str(b, "id")) != 0,
       "Amplitude: another insert_id gives another id", NULL);
    cJSON_Delete(a);
    cJSON_Delete(b);

    /* Amplitude dedupes an insert_id per device */
    a = first_item(NGX_HTTP_CIO_CALL_AMPLITUDE,
        "{'api_key':'k','events':[{'event_type':'Buy','device_id':"
        "'device-A','insert_id':'order-1','time':1700000000000}]}", &o,
        NULL);
    b = first_item(NGX_HTTP_CIO_CALL_AMPLITUDE,
        "{'api_key':'k','events':[{'event_type':'Buy','device_id':"
        "'device-B','insert_id':'order-1','time':1700000000000}]}", &o,
        NULL);
    ok(a && b && strcmp(item_str(a, "id"), item_str(b, "id")) != 0,
       "Amplitude: the same insert_id from another device, another id",
       NULL);
    cJSON_Delete(b);

    b = first_item(NGX_HTTP_CIO_CALL_AMPLITUDE,
        "{'api_key':'k','events':[{'event_type':'Buy','device_id':"
        "'device-A','insert_id':'order-1','time':1700000000000,"
        "'user_id':'someone'}]}", &o, NULL);
    ok(a && b && strcmp(item_str(a, "id"), item_str(b, "id")) == 0,
       "Amplitude: the same insert_id and device, the same id", NULL);
    cJSON_Delete(a);
    cJSON_Delete(b);

    a = first_item(NGX_HTTP_CIO_CALL_AMPLITUDE,
        "{'api_key':'k',"
        "'options':{'min_id_length':1},"
        "'events':[{'event_type':'e','user_id':'u',"
        "'time':1700000000000}],'client_upload_time':"
        "'2026-11-22T12:18:10.472Z'}", &o, NULL);
    b = first_item(NGX_HTTP_CIO_CALL_AMPLITUDE,
        "{'api_key':'k',"
        "'options':{'min_id_length':1},"
        "'events':[{'event_type':'e','user_id':'u',"
        "'time':1700000000000}],'client_upload_time':"
        "'2026-11-22T12:18:11.000Z'}", &o, NULL);
    ok(a && b && strcmp(item_str(a, "id"), item_str(b, "id")) == 0,
       "Amplitude: no insert_id, a resend gets the same id", NULL);
    cJSON_Delete(a);
    cJSON_Delete(b);
}


static void
test_filters(void)
{
    const char                *allow[] = { "Order Completed", "A" };
    const char                *deny[] = { "Spam", "Viewed Home Screen",
                                          "Home", "Application Opened" };
    const char                *consent[] = { "C0003", "ads" };
    ngx_http_cio_map_opts_t    o;
    ngx_http_cio_map_result_t  res;

    o = opts(NGX_HTTP_CIO_CALL_BATCH);
    o.events_allow = allow;
    o.nevents_allow = 2;

    expect_calls("allow list: only listed track names; other call types"
                 " pass; names are case-sensitive",
        &o,
        "{'batch':[{'type':'track','userId':'u','event':'Order Completed'},"
        "{'type':'track','userId':'u','event':'Signed Up'},"
        "{'type':'track','userId':'u','event':'order completed'},"
        "{'type':'identify','userId':'u'},"
        "{'type':'page','userId':'u','name':'Home'},"
        "{'type':'screen','userId':'u','name':'Home'},"
        "{'type':'group','userId':'u','groupId':'g'},"
        "{'type':'alias','userId':'u','previousId':'p'},"
        "{'type':'track','event':'Signed Up'}]}",
        "[[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'Order Completed','id':'*','timestamp':1700000000,"
        "'attributes':{}}],"
        "'filtered','filtered',"
        "[{'type':'person','action':'identify','identifiers':{'id':'u'},"
        "'attributes':{}}],"
        "[{'type':'person','action':'page','identifiers':{'id':'u'},"
        "'name':'Home','id':'*','timestamp':1700000000,'attributes':{}}],"
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'Viewed Home Screen','id':'*','timestamp':1700000000,"
        "'attributes':{}}],"
        "[{'type':'object','action':'identify','identifiers':"
        "{'object_type_id':'1','object_id':'g'},'attributes':{},"
        "'cio_relationships':[{'identifiers':{'id':'u'}}]}],"
        "[{'type':'person','action':'merge','primary':{'id':'u'},"
        "'secondary':{'id':'p'}}],"
        "{'error':'userId or anonymousId is required'}]");

    expect_calls("allow list: a deletion, a suppression are no events to"
                 " it",
        &o,
        "{'batch':[{'type':'track','userId':'u','event':'User Deleted'},"
        "{'type':'track','userId':'u','event':'User Suppressed'},"
        "{'type':'track','userId':'u','event':'Object Deleted',"
        "'properties':{'objectId':'g'}},"
        "{'type':'track','anonymousId':'a','event':'Application Opened'}]}",
        "[[{'type':'person','identifiers':{'id':'u'},'action':'delete'}],"
        "[{'type':'person','identifiers':{'id':'u'},'action':'suppress'}],"
        "[{'type':'object','action':'delete','identifiers':"
        "{'object_type_id':'1','object_id':'g'}}],'filtered']");

    map("{'batch':[{'type':'track','userId':'u','event':'A'},"
        "{'type':'track','userId':'u','event':'B'},"
        "{'type':'track','userId':'u','event':'C'}]}", &o, &res);
    ok(res.nfiltered == 2 && res.calls[1].filtered && res.calls[2].filtered
       && !res.calls[0].filtered,
       "nfiltered counts the filtered calls", NULL);
    ngx_http_cio_map_result_free(&res);

    o = opts(NGX_HTTP_CIO_CALL_BATCH);
    o.events_deny = deny;
    o.nevents_deny = 4;

    expect_calls("deny list: listed track names dropped, device items"
                 " too; screens and pages are not named events",
        &o,
        "{'batch':[{'type':'track','userId':'u','event':'Spam'},"
        "{'type':'track','userId':'u','event':'Ham'},"
        "{'type':'screen','userId':'u','name':'Home'},"
        "{'type':'page','userId':'u','name':'Spam'},"
        "{'type':'track','userId':'u','event':'Application Opened',"
        "'context':{'device':{'token':'t'}}}]}",
        "['filtered',"
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'Ham','id':'*','timestamp':1700000000,'attributes':{}}],"
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'Viewed Home Screen','id':'*','timestamp':1700000000,"
        "'attributes':{}}],"
        "[{'type':'person','action':'page','identifiers':{'id':'u'},"
        "'name':'Spam','id':'*','timestamp':1700000000,'attributes':{}}],"
        "'filtered']");

    o = opts(NGX_HTTP_CIO_CALL_TRACK);
    o.events_deny = deny;
    o.nevents_deny = 4;

    map("{'userId':'u','event':'Spam'}", &o, &res);
    ok(res.ncalls == 1 && res.calls[0].filtered
       && res.calls[0].nitems == 0 && res.calls[0].error[0] == '\0'
       && res.nfiltered == 1,
       "a single call filtered: no item, no error, counted", NULL);
    ngx_http_cio_map_result_free(&res);

    expect_call_error("an invalid call is refused, not filtered",
        NGX_HTTP_CIO_CALL_TRACK, "{'event':'Spam'}",
        "userId or anonymousId is required");

    o = opts(NGX_HTTP_CIO_CALL_TRACK);
    o.events_deny = deny;
    o.nevents_deny = 4;
    map("{'event':'Spam'}", &o, &res);
    ok(res.ncalls == 1 && !res.calls[0].filtered && res.nfiltered == 0
       && strcmp(res.calls[0].error, "userId or anonymousId is required")
          == 0,
       "a denied name on an invalid call: refused, not filtered", NULL);
    ngx_http_cio_map_result_free(&res);

    /* allow and deny together: both apply */
    o = opts(NGX_HTTP_CIO_CALL_BATCH);
    o.events_allow = allow;
    o.nevents_allow = 2;
    o.events_deny = allow + 1;
    o.nevents_deny = 1;

    expect_calls("allow and deny together: denied even when allowed", &o,
        "{'batch':[{'type':'track','userId':'u','event':'A'},"
        "{'type':'track','userId':'u','event':'Order Completed'}]}",
        "['filtered',[{'type':'person','action':'event','identifiers':"
        "{'id':'u'},'name':'Order Completed','id':'*','timestamp':"
        "1700000000,'attributes':{}}]]");

    /* consent */
    o = opts(NGX_HTTP_CIO_CALL_BATCH);
    o.consent_deny = consent;
    o.nconsent_deny = 2;

    expect_calls("consent: a denied consent id filters any call type;"
                 " batch-level context counts; allowed ids do not",
        &o,
        "{'context':{'consentManagement':{'deniedConsentIds':['C0003']}},"
        "'batch':[{'type':'identify','userId':'u'},"
        "{'type':'track','userId':'u','event':'e','context':"
        "{'consentManagement':{'deniedConsentIds':['C0001'],"
        "'allowedConsentIds':['C0003']}}},"
        "{'type':'track','userId':'u','event':'e','context':"
        "{'consentManagement':{'deniedConsentIds':['C0001','ads']}}},"
        "{'type':'group','userId':'u','groupId':'g','context':"
        "{'consentManagement':{'deniedConsentIds':'ads'}}},"
        "{'type':'page','userId':'u','name':'p','context':"
        "{'consentManagement':{'deniedConsentIds':[3,null,'ADS']}}}]}",
        "['filtered',"
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'e','id':'*','timestamp':1700000000,'attributes':{}}],"
        "'filtered',"
        "[{'type':'object','action':'identify','identifiers':"
        "{'object_type_id':'1','object_id':'g'},'attributes':{},"
        "'cio_relationships':[{'identifiers':{'id':'u'}}]}],"
        "[{'type':'person','action':'page','identifiers':{'id':'u'},"
        "'name':'p','id':'*','timestamp':1700000000,'attributes':{}}]]");

    o = opts(NGX_HTTP_CIO_CALL_IDENTIFY);
    expect_items_o("no consent_deny configured: nothing is filtered", &o,
        "{'userId':'u','context':{'consentManagement':{'deniedConsentIds':"
        "['C0003']}}}",
        "[{'type':'person','action':'identify','identifiers':{'id':'u'},"
        "'attributes':{}}]");

    /* Amplitude: event_type is the name; $identify is not an event */
    o = opts(NGX_HTTP_CIO_CALL_AMPLITUDE);
    o.events_allow = allow;
    o.nevents_allow = 2;

    map("{'api_key':'k',"
        "'options':{'min_id_length':1},"
        "'events':[{'event_type':'A','user_id':'u'},"
        "{'event_type':'B','user_id':'u'},"
        "{'event_type':'$identify','user_id':'u'},"
        "{'event_type':'$groupidentify','user_id':'u','groups':"
        "{'t':'g'}}]}", &o, &res);
    ok(res.ncalls == 4 && !res.calls[0].filtered && res.calls[1].filtered
       && !res.calls[2].filtered && res.calls[2].nitems == 1
       && !res.calls[3].filtered && res.calls[3].nitems == 1
       && res.nfiltered == 1,
       "Amplitude: allow list on event_type, identify and group pass",
       NULL);
    ngx_http_cio_map_result_free(&res);
}


static void
test_client_ip(void)
{
    char                       *x;
    size_t                      i;
    ngx_http_cio_map_opts_t     o;
    ngx_http_cio_map_result_t   r1;

    static const struct {
        int          route;
        const char  *body;
    } cases[] = {
        { NGX_HTTP_CIO_CALL_TRACK,
          "{'userId':'u','event':'e','context':{'ip':'10.0.0.1'}}" },
        { NGX_HTTP_CIO_CALL_IDENTIFY,
          "{'userId':'u','traits':{'a':1},'context':{'ip':'10.0.0.1'}}" },
        { NGX_HTTP_CIO_CALL_PAGE,
          "{'anonymousId':'a','name':'p','context':{'ip':'10.0.0.1'}}" },
        { NGX_HTTP_CIO_CALL_GROUP,
          "{'userId':'u','groupId':'g','context':{'ip':'10.0.0.1'}}" },
        { NGX_HTTP_CIO_CALL_AMPLITUDE,
          "{'api_key':'k',"
          "'options':{'min_id_length':1},"
          "'events':[{'event_type':'e','user_id':'u',"
          "'ip':'10.0.0.1'}]}" },
        { 0, NULL }
    };

    /*
     * Neither peer destination puts the client address in what it sends
     * to Customer.io, so neither do we.
     */
    for (i = 0; cases[i].body; i++) {
        o = opts(cases[i].route);
        map(cases[i].body, &o, &r1);

        x = r1.ncalls ? items_of(&r1, 0) : NULL;

        ok(x && r1.calls[0].nitems == 1 && strstr(x, "10.0.0") == NULL,
           "the client address is not sent to Customer.io", x);

        free(x);
        ngx_http_cio_map_result_free(&r1);
    }
}


static void
test_dedupe(void)
{
    cJSON                    *a, *b;
    ngx_http_cio_map_opts_t   o;

    /* a resend has another sentAt and arrives later: the id stays */
    o = opts(NGX_HTTP_CIO_CALL_TRACK);
    a = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'e','messageId':'m',"
        "'timestamp':'2023-11-14T22:13:00Z',"
        "'sentAt':'2023-11-14T22:13:10Z'}", &o, NULL);
    o.received_ms += 60123;
    b = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'e','messageId':'m',"
        "'timestamp':'2023-11-14T22:13:00Z',"
        "'sentAt':'2023-11-14T22:14:10.007Z'}", &o, NULL);
    ok(a && b && strcmp(item_str(a, "id"), item_str(b, "id")) == 0
       && item_num(a, "timestamp") == 1699999990
       && item_num(b, "timestamp") == 1699999990,
       "a resend with a new sentAt keeps the id; time is corrected",
       item_str(b, "id"));
    ok(a && ulid_ms(item_str(a, "id")) == 1699999980000LL,
       "the id's time part is the call's own time", item_str(a, "id"));
    cJSON_Delete(a);
    cJSON_Delete(b);

    o = opts(NGX_HTTP_CIO_CALL_TRACK);
    a = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'e','timestamp':'2023-11-14T22:13:00Z',"
        "'sentAt':'2023-11-14T22:13:10Z','properties':{'x':1}}", &o, NULL);
    o.received_ms += 5000;
    b = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'e','timestamp':'2023-11-14T22:13:00Z',"
        "'sentAt':'2023-11-14T22:13:15Z','properties':{'x':1}}", &o, NULL);
    ok(a && b && strcmp(item_str(a, "id"), item_str(b, "id")) == 0,
       "no messageId: sentAt is not part of the hashed event", NULL);
    cJSON_Delete(a);
    cJSON_Delete(b);
}


static void
test_utf8(void)
{
    size_t     i;
    cJSON     *it, *v;
    unsigned   changes;
    char       body[256];

    static const struct {
        const char  *in;       /* raw bytes in a property value */
        const char  *want;     /* what Customer.io gets */
        unsigned     bad;
        const char  *name;
    } cases[] = {
        { "caf\xc3\xa9", "caf\xc3\xa9", 0, "valid 2-byte UTF-8 is kept" },
        { "\xf0\x9f\x8e\x89!", "\xf0\x9f\x8e\x89!", 0,
          "valid 4-byte UTF-8 is kept" },
        { "caf\xe9", "caf\xef\xbf\xbd", 1, "a Latin-1 byte becomes U+FFFD" },
        { "\xff\xfe", "\xef\xbf\xbd\xef\xbf\xbd", 2,
          "each invalid byte becomes U+FFFD" },
        { "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd", 2,
          "an overlong sequence is refused" },
        { "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 3,
          "a UTF-16 surrogate is refused" },
        { "\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
          "\xef\xbf\xbd", 4, "a code point past U+10FFFF is refused" },
        { "a\xe2\x82", "a\xef\xbf\xbd\xef\xbf\xbd", 2,
          "a truncated sequence is refused" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(body, sizeof(body),
                 "{\"userId\":\"u\",\"event\":\"e\",\"properties\":"
                 "{\"k\":\"%s\"}}", cases[i].in);

        changes = 0;
        it = first_item(NGX_HTTP_CIO_CALL_TRACK, body, NULL, &changes);
        v = cJSON_GetObjectItem(cJSON_GetObjectItem(it, "attributes"), "k");

        ok(it && cJSON_IsString(v) && strcmp(v->valuestring, cases[i].want)
           == 0 && changes == cases[i].bad, cases[i].name,
           cJSON_IsString(v) ? v->valuestring : "no value");
        cJSON_Delete(it);
    }
}


/* docs/mapping.md §3.1 and §4: times and ids decided in the reviews */
static void
test_contract_time(void)
{
    size_t                    i;
    cJSON                    *a, *b;
    unsigned                  changes;
    long long                 t;
    ngx_http_cio_map_opts_t   o;

    static const struct {
        const char  *body;
        double       want;       /* item timestamp */
        unsigned     changes;
        const char  *name;
    } cases[] = {
        { "{'userId':'u','event':'e','timestamp':'1969-12-31T23:59:59Z'}",
          1700000000, 1, "a time before 1970 is impossible: receive time,"
          " counted" },
        { "{'userId':'u','event':'e','timestamp':'2026-01-01T00:00:00Z'}",
          1700000000, 1, "a time over a year after receipt: receive time,"
          " counted" },
        { "{'userId':'u','event':'e','timestamp':'2024-11-01T00:00:00Z'}",
          1730419200, 0, "a time within a year after receipt is kept" },
        { "{'userId':'u','event':'e','timestamp':'0001-01-01T00:00:00Z'}",
          1700000000, 1, "year 0001: receive time, counted" },
        { "{'userId':'u','event':'e','timestamp':'9999-12-31T00:00:00Z'}",
          1700000000, 1, "year 9999: receive time, counted" },
        { "{'userId':'u','event':'e','timestamp':-5000}",
          1700000000, 1, "a negative number: receive time, counted" },
        { "{'userId':'u','event':'e','timestamp':1600000000}",
          1600000000, 0, "a number below 10^11 is unix seconds" },
        { "{'userId':'u','event':'e','timestamp':1600000000.75}",
          1600000000, 0, "unix seconds with a fraction" },
        { "{'userId':'u','event':'e','timestamp':1600000000999}",
          1600000000, 0, "a number from 10^11 on is unix milliseconds" },
        { "{'userId':'u','event':'e','timestamp':1e300}",
          1700000000, 1, "a number past any calendar: receive time,"
          " counted" },
        { "{'userId':'u','event':'e','timestamp':'2023-11-14T22:13:00Z',"
          "'sentAt':'0001-01-01T00:00:00Z'}",
          1700000000, 1, "sentAt 0001 would correct to the year 4049:"
          " receive time, counted" },
        { "{'userId':'u','event':'e','timestamp':'0001-01-01T00:00:00Z',"
          "'sentAt':'2023-11-14T22:13:00Z'}",
          1700000000, 1, "a correction to before 1970: receive time,"
          " counted" },
        { "{'userId':'u','event':'e','timestamp':'2030-01-01T00:00:00Z',"
          "'sentAt':'2030-01-01T00:00:30Z'}",
          1700000000 - 30, 0, "a client clock years ahead is still"
          " corrected by sentAt" },
        { "{'userId':'u','event':'e','timestamp':1699999990,"
          "'sentAt':1700000000000}",
          1699999990, 0, "sentAt and timestamp as numbers, by magnitude" },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        changes = 0;
        a = first_item(NGX_HTTP_CIO_CALL_TRACK, cases[i].body, NULL,
                       &changes);
        ok(a && item_num(a, "timestamp") == cases[i].want
           && changes == cases[i].changes, cases[i].name,
           a ? item_str(a, "id") : "no item");
        cJSON_Delete(a);
    }

    /* an attribute is not an event time: a birthday before 1970 stays */
    a = first_item(NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'userId':'u','traits':{'born':'1960-01-01'}}", NULL, &changes);
    ok(a && item_num(cJSON_GetObjectItem(a, "attributes"), "born")
            == -315619200 && changes == 0,
       "an attribute date before 1970 becomes negative seconds", NULL);
    cJSON_Delete(a);

    /* a resend without any time, 0.3 s later: the same id */
    for (i = 0; i < 2; i++) {
        const char  *body = i ? "{'userId':'u','event':'Retry'}"
                              : "{'userId':'u','event':'Retry',"
                                "'messageId':'m1'}";

        o = opts(NGX_HTTP_CIO_CALL_TRACK);
        a = first_item(NGX_HTTP_CIO_CALL_TRACK, body, &o, NULL);
        o.received_ms += 300;
        b = first_item(NGX_HTTP_CIO_CALL_TRACK, body, &o, NULL);
        o.received_ms += 86400000;
        cJSON_Delete(b);
        b = first_item(NGX_HTTP_CIO_CALL_TRACK, body, &o, NULL);

        t = a ? ulid_ms(item_str(a, "id")) : 0;

        ok(a && b && strcmp(item_str(a, "id"), item_str(b, "id")) == 0
           && t >= 1577836800000LL && t < 1609545600000LL
           && item_num(a, "timestamp") == 1700000000,
           i ? "no messageId, no time: a resend has the same id"
             : "messageId, no time: a resend has the same id, its time"
               " part not the receipt's",
           a ? item_str(a, "id") : NULL);
        cJSON_Delete(a);
        cJSON_Delete(b);
    }

    /* an impossible stated time gives no time part either */
    o = opts(NGX_HTTP_CIO_CALL_TRACK);
    a = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'e','messageId':'m','timestamp':-1000}",
        &o, NULL);
    o.received_ms += 1000;
    b = first_item(NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'e','messageId':'m','timestamp':-1000}",
        &o, NULL);
    ok(a && b && strcmp(item_str(a, "id"), item_str(b, "id")) == 0,
       "an impossible stated time: the id does not follow the receipt",
       NULL);
    cJSON_Delete(a);
    cJSON_Delete(b);
}


/* docs/mapping.md §8: Segment's and RudderStack's integrations flags */
static void
test_contract_integrations(void)
{
    ngx_http_cio_map_opts_t  o;

    o = opts(NGX_HTTP_CIO_CALL_BATCH);

    expect_calls("integrations: per call, per batch, the call's own first,"
                 " keys ignoring case and spaces", &o,
        "{'integrations':{'All':false},'batch':["
        "{'type':'track','userId':'u','event':'a'},"
        "{'type':'track','userId':'u','event':'b',"
        "'integrations':{'Customer.io':true}},"
        "{'type':'track','userId':'u','event':'c',"
        "'integrations':{'All':true}},"
        "{'type':'identify','userId':'u',"
        "'integrations':{'All':true,'customer IO':false}},"
        "{'type':'page','userId':'u','name':'p',"
        "'integrations':{'CUSTOMERIO':false}},"
        "{'type':'track','userId':'u','event':'f',"
        "'integrations':{'Customer.io Data Pipelines':false}},"
        "{'type':'track','userId':'u','event':'g',"
        "'integrations':{'customer.io (actions)':true}},"
        "{'type':'track','userId':'u','event':'h',"
        "'integrations':{'Mixpanel':false,'customerio':{'x':1}}},"
        "{'type':'track','event':'i','integrations':{'All':true}}"
        "]}",
        "['filtered',"
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'b','id':'*','timestamp':1700000000,'attributes':{}}],"
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'c','id':'*','timestamp':1700000000,'attributes':{}}],"
        "'filtered','filtered','filtered',"
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'g','id':'*','timestamp':1700000000,'attributes':{}}],"
        "[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'h','id':'*','timestamp':1700000000,'attributes':{}}],"
        "{'error':'userId or anonymousId is required'}]");

    o = opts(NGX_HTTP_CIO_CALL_TRACK);

    expect_calls("integrations: a single call with Customer.io false is"
                 " filtered", &o,
        "{'userId':'u','event':'e','integrations':{'Customer.io':false}}",
        "['filtered']");
    expect_calls("integrations: All false, other destination true: filtered",
        &o,
        "{'userId':'u','event':'e','integrations':{'All':false,"
        "'Amplitude':true}}",
        "['filtered']");
    expect_calls("integrations: another destination false: delivered", &o,
        "{'userId':'u','event':'e','integrations':{'Amplitude':false}}",
        "[[{'type':'person','action':'event','identifiers':{'id':'u'},"
        "'name':'e','id':'*','timestamp':1700000000,'attributes':{}}]]");
}


/* docs/mapping.md §5.9: Segment's deletion events act on the object */
static void
test_contract_deletions(void)
{
    expect_items("Object Deleted: object / delete, objectId first, the"
                 " event not sent", NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'Object Deleted','groupId':'g',"
        "'properties':{'objectId':'acme','object_type_id':'2'}}",
        "[{'type':'object','action':'delete','identifiers':"
        "{'object_type_id':'2','object_id':'acme'}}]");
    expect_items("Object Deleted: groupId, numeric, type 1, no person"
                 " needed", NGX_HTTP_CIO_CALL_TRACK,
        "{'event':'Object Deleted','groupId':42}",
        "[{'type':'object','action':'delete','identifiers':"
        "{'object_type_id':'1','object_id':'42'}}]");
    expect_call_error("Object Deleted without an object is refused",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'Object Deleted','properties':{}}",
        "\"Object Deleted\" needs an objectId or groupId");
    expect_items("Relationship Deleted: object / delete_relationships for"
                 " the person, context.groupId first",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'cio_9','event':'Relationship Deleted','groupId':'x',"
        "'context':{'groupId':'acme'},'properties':{'objectTypeId':3}}",
        "[{'type':'object','action':'delete_relationships','identifiers':"
        "{'object_type_id':'3','object_id':'acme'},'cio_relationships':"
        "[{'identifiers':{'cio_id':'9'}}]}]");
    expect_items("Relationship Deleted: an anonymous person",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'anonymousId':'a1','event':'Relationship Deleted','groupId':'g'}",
        "[{'type':'object','action':'delete_relationships','identifiers':"
        "{'object_type_id':'1','object_id':'g'},'cio_relationships':"
        "[{'identifiers':{'anonymous_id':'a1'}}]}]");
    expect_call_error("Relationship Deleted without a person is refused",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'event':'Relationship Deleted','groupId':'g'}",
        "userId or anonymousId is required");
    expect_call_error("anonymous User Deleted stays a 400",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'anonymousId':'a1','event':'User Deleted'}",
        "\"User Deleted\" needs a userId");
}


/* docs/mapping.md §2, §3.3, §5.1, §5.5: the second review's decisions */
static void
test_contract_people(void)
{
    unsigned  changes;
    cJSON    *it;

    expect_items("created_at wins over createdAt", NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'userId':'u','traits':{'createdAt':'2020-01-01T00:00:00Z',"
        "'created_at':'2021-01-01T00:00:00Z'}}",
        "[{'type':'person','action':'identify','identifiers':{'id':'u'},"
        "'attributes':{'created_at':1609459200}}]");

    changes = 0;
    it = first_item(NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'userId':'u','traits':{'created_at':'','plan':'x'}}", NULL,
        &changes);
    ok(it && cJSON_GetObjectItem(cJSON_GetObjectItem(it, "attributes"),
                                 "created_at") == NULL
       && changes == 1, "an empty created_at is dropped, counted", NULL);
    cJSON_Delete(it);

    changes = 0;
    it = first_item(NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'userId':'u','traits':{'created_at':null,"
        "'createdAt':'2020-01-01T00:00:00Z'}}", NULL, &changes);
    ok(it && item_num(cJSON_GetObjectItem(it, "attributes"), "created_at")
            == 1577836800 && changes == 1,
       "a null created_at is dropped, counted; createdAt then counts",
       NULL);
    cJSON_Delete(it);

    expect_items("a userId of just cio_ is absent: the e-mail identifies",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'userId':'cio_','traits':{'email':'a@b.co'}}",
        "[{'type':'person','action':'identify','identifiers':"
        "{'email':'a@b.co'},'attributes':{'email':'a@b.co'}}]");
    expect_call_error("alias with a userId of just cio_ is refused",
        NGX_HTTP_CIO_CALL_ALIAS, "{'userId':'cio_','previousId':'p'}",
        "alias needs userId and previousId");
    expect_call_error("a User Deleted with userId cio_ is anonymous: 400",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'cio_','anonymousId':'a','event':'User Deleted'}",
        "\"User Deleted\" needs a userId");

    expect_call_error("the all-zero anonymousId is no identifier",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'anonymousId':'00000000-0000-0000-0000-000000000000',"
        "'event':'e'}", "userId or anonymousId is required");
    expect_call_error("a numeric anonymousId 0 is a placeholder too",
        NGX_HTTP_CIO_CALL_PAGE, "{'anonymousId':0,'name':'p'}",
        "userId or anonymousId is required");
    expect_items("the all-zero anonymousId is not merged into a person",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'userId':'u','anonymousId':'00000000-0000-0000-0000-000000000000',"
        "'traits':{}}",
        "[{'type':'person','action':'identify','identifiers':{'id':'u'},"
        "'attributes':{}}]");
    expect_items("a numeric anonymousId is text", NGX_HTTP_CIO_CALL_TRACK,
        "{'anonymousId':1234567,'event':'e'}",
        "[{'type':'person','action':'event','identifiers':"
        "{'anonymous_id':'1234567'},'name':'e','id':'*',"
        "'timestamp':1700000000,'attributes':{}}]");

    expect_items("identify with a groupId relates the person to the object",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'userId':'u','groupId':'acme','traits':{'plan':'pro',"
        "'objectTypeId':'2','relationshipAttributes':{'role':'admin'}}}",
        "[{'type':'person','action':'identify','identifiers':{'id':'u'},"
        "'attributes':{'plan':'pro'},'cio_relationships':[{'identifiers':"
        "{'object_type_id':'2','object_id':'acme'},"
        "'relationship_attributes':{'role':'admin'}}]}]");
    expect_items("identify with context.groupId", NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'userId':'u','context':{'groupId':7},'traits':{}}",
        "[{'type':'person','action':'identify','identifiers':{'id':'u'},"
        "'attributes':{},'cio_relationships':[{'identifiers':"
        "{'object_type_id':'1','object_id':'7'}}]}]");

    expect_items("group traits.action delete: object / delete",
        NGX_HTTP_CIO_CALL_GROUP,
        "{'userId':'u','groupId':'g','traits':{'action':'delete','a':1}}",
        "[{'type':'object','action':'delete','identifiers':"
        "{'object_type_id':'1','object_id':'g'}}]");
    expect_items("group traits.action add_relationships, with"
                 " relationshipAttributes", NGX_HTTP_CIO_CALL_GROUP,
        "{'userId':'u','groupId':'g','traits':{'action':'add_relationships',"
        "'relationshipAttributes':{'role':'x'}}}",
        "[{'type':'object','action':'add_relationships','identifiers':"
        "{'object_type_id':'1','object_id':'g'},'cio_relationships':"
        "[{'identifiers':{'id':'u'},'relationship_attributes':"
        "{'role':'x'}}]}]");
    expect_items("group traits.action that is no object action stays an"
                 " attribute", NGX_HTTP_CIO_CALL_GROUP,
        "{'userId':'u','groupId':'g','traits':{'action':'upgrade'}}",
        "[{'type':'object','action':'identify','identifiers':"
        "{'object_type_id':'1','object_id':'g'},'attributes':"
        "{'action':'upgrade'},'cio_relationships':[{'identifiers':"
        "{'id':'u'}}]}]");
    expect_items("group relationshipAttributes leave the attributes",
        NGX_HTTP_CIO_CALL_GROUP,
        "{'anonymousId':'a','groupId':'g','traits':{'n':1,"
        "'relationshipAttributes':{'role':'x'}}}",
        "[{'type':'object','action':'identify_anonymous','identifiers':"
        "{'object_type_id':'1','object_id':'g'},'attributes':{'n':1},"
        "'cio_relationships':[{'identifiers':{'anonymous_id':'a'},"
        "'relationship_attributes':{'role':'x'}}]}]");
}


/* docs/mapping.md §5.10: Amplitude's own id rules and missing api_key */
static void
test_contract_amplitude(void)
{
    int                        rc;
    ngx_http_cio_map_opts_t    o;
    ngx_http_cio_map_result_t  res;

    o = opts(NGX_HTTP_CIO_CALL_AMPLITUDE);

    expect_calls("Amplitude id rules: min_id_length 5 by default, refused"
                 " values ignoring case, invalid events by index", &o,
        "{'api_key':'k','events':["
        "{'event_type':'e','user_id':'user-1'},"
        "{'event_type':'e','user_id':'abcd'},"
        "{'event_type':'e','device_id':'Anonymous'},"
        "{'event_type':'e','user_id':'NULL','device_id':'device-1'},"
        "{'event_type':'e','device_id':"
        "'00000000-0000-0000-0000-000000000000'},"
        "{'event_type':'e','user_id':'user-2','device_id':-1},"
        "{'event_type':'e','user_id':12345}"
        "]}",
        "[[{'type':'person','action':'event','identifiers':{'id':'user-1'},"
        "'name':'e','id':'*','timestamp':1700000000,'attributes':{}}],"
        "{'error':'user_id is invalid'},"
        "{'error':'device_id is invalid'},"
        "{'error':'user_id is invalid'},"
        "{'error':'device_id is invalid'},"
        "{'error':'device_id is invalid'},"
        "[{'type':'person','action':'event','identifiers':{'id':12345},"
        "'name':'e','id':'*','timestamp':1700000000,'attributes':{}}]]");

    expect_calls("Amplitude id rules: options.min_id_length from the"
                 " request", &o,
        "{'api_key':'k','options':{'min_id_length':2},'events':["
        "{'event_type':'e','user_id':'ab'},"
        "{'event_type':'e','user_id':'a'}]}",
        "[[{'type':'person','action':'event','identifiers':{'id':'ab'},"
        "'name':'e','id':'*','timestamp':1700000000,'attributes':{}}],"
        "{'error':'user_id is invalid'}]");

    memset(&res, 0, sizeof(res));
    rc = map("{'events':[{'event_type':'e','user_id':'user-1'}]}", &o,
             &res);
    ok(rc == -1 && res.missing_field != NULL
       && strcmp(res.missing_field, "api_key") == 0,
       "Amplitude without api_key: missing_field api_key", res.error);
    ngx_http_cio_map_result_free(&res);

    rc = map("{'api_key':'k','events':[{'event_type':'e','user_id':'u-1'}]}",
             &o, &res);
    ok(rc == 0 && res.missing_field == NULL,
       "Amplitude with api_key: no missing_field", res.error);
    ngx_http_cio_map_result_free(&res);
}


/* a body of n nested objects or arrays under properties.a */
static char *
nested(const char *call_head, int n)
{
    int     i;
    char   *b, *p;
    size_t  len;

    len = strlen(call_head) + 7 * (size_t) n + 64;
    b = malloc(len);
    p = b + sprintf(b, "%s", call_head);

    for (i = 0; i < n; i++) {
        *p++ = (i % 2) ? '[' : '{';
        if (i % 2 == 0) {
            p += sprintf(p, "'k':");
        }
    }

    p += sprintf(p, "1");

    for (i = n - 1; i >= 0; i--) {
        *p++ = (i % 2) ? ']' : '}';
    }

    sprintf(p, "}}");

    return b;
}


/* docs/mapping.md §7.4 and §7.6: nesting and \u0000 escapes */
static void
test_contract_hostile(void)
{
    int                        rc;
    char                      *b, *x;
    ngx_http_cio_map_opts_t    o;
    ngx_http_cio_map_result_t  res;

    b = nested("{'userId':'u','event':'e','properties':{'a':", 32);
    o = opts(NGX_HTTP_CIO_CALL_TRACK);
    rc = map(b, &o, &res);
    ok(rc == 0 && res.calls[0].nitems == 1,
       "properties nested 32 levels are accepted", res.calls[0].error);
    ngx_http_cio_map_result_free(&res);
    free(b);

    b = nested("{'userId':'u','event':'e','properties':{'a':", 33);
    expect_call_error("properties nested 33 levels are refused",
        NGX_HTTP_CIO_CALL_TRACK, b, "properties nest deeper than 32 levels");
    free(b);

    b = nested("{'userId':'u','event':'e','properties':{'a':", 997);
    expect_call_error("properties nested 997 levels are refused",
        NGX_HTTP_CIO_CALL_TRACK, b, "properties nest deeper than 32 levels");
    free(b);

    b = nested("{'userId':'u','traits':{'a':", 40);
    expect_call_error("traits nested 40 levels are refused",
        NGX_HTTP_CIO_CALL_IDENTIFY, b, "traits nest deeper than 32 levels");
    free(b);

    expect_call_error("a \\u0000 in userId is refused, never cut",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'ab\\u0000cd','event':'e'}",
        "userId contains a \\u0000 escape");
    expect_call_error("a \\u0000 in the identifying e-mail is refused",
        NGX_HTTP_CIO_CALL_IDENTIFY,
        "{'traits':{'email':'victim@x.com\\u0000evil'}}",
        "traits.email contains a \\u0000 escape");
    expect_call_error("a \\u0000 in anonymousId is refused",
        NGX_HTTP_CIO_CALL_PAGE,
        "{'anonymousId':'a\\u0000b','name':'p'}",
        "anonymousId contains a \\u0000 escape");
    expect_call_error("a \\u0000 in an event name is refused",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'Sign\\u0000up'}",
        "event contains a \\u0000 escape");
    expect_call_error("a \\u0000 in a property key is refused",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'e','properties':{'x':{'a\\u0000b':1}}}",
        "a key contains a \\u0000 escape");
    expect_call_error("a \\u0000 in previousId is refused",
        NGX_HTTP_CIO_CALL_ALIAS,
        "{'userId':'u','previousId':'p\\u0000q'}",
        "previousId contains a \\u0000 escape");
    expect_call_error("a \\u0000 in groupId is refused",
        NGX_HTTP_CIO_CALL_GROUP,
        "{'userId':'u','groupId':'g\\u0000h'}",
        "groupId contains a \\u0000 escape");
    expect_call_error("a \\u0000 in the context url that names a page",
        NGX_HTTP_CIO_CALL_PAGE,
        "{'userId':'u','context':{'page':{'url':'https://a\\u0000b'}}}",
        "context.page.url contains a \\u0000 escape");
    expect_call_error("a device token that is not UTF-8",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'Application Opened','context':"
        "{'device':{'token':'tok\\ud83d','type':'ios'}}}",
        "context.device.token is not valid UTF-8");
    expect_call_error("a \\u0000 in a device token beside an e-mail",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u','event':'Application Installed','context':"
        "{'traits':{'email':'a@b.co'},'device':{'token':'tok\\u0000evil',"
        "'type':'ios'}}}",
        "context.device.token contains a \\u0000 escape");

    o = opts(NGX_HTTP_CIO_CALL_TRACK);
    rc = map("{'userId':'u','event':'e','properties':{'v':'x\\u0000y'}}",
             &o, &res);
    x = (rc == 0 && res.calls[0].nitems == 1) ? res.calls[0].item[0] : NULL;
    ok(x && strstr(x, "\"v\":\"x\\u0000y\"") != NULL
       && strstr(x, "u0001") == NULL,
       "a \\u0000 in a value is forwarded intact", x);
    ngx_http_cio_map_result_free(&res);

    rc = map("{'userId':'u','event':'e','writeKey':'KEY\\u0000junk'}", &o,
             &res);
    ok(rc == 0 && res.write_key && strcmp(res.write_key, "KEY") != 0
       && strncmp(res.write_key, "KEY", 3) == 0 && strlen(res.write_key) > 3,
       "a writeKey with \\u0000 is not cut to the key before it",
       res.write_key);
    ngx_http_cio_map_result_free(&res);

    expect_items("an escaped backslash before u0000 is no NUL",
        NGX_HTTP_CIO_CALL_IDENTIFY, "{'userId':'ab\\\\u0000'}",
        "[{'type':'person','action':'identify','identifiers':"
        "{'id':'ab\\\\u0000'},'attributes':{}}]");

    expect_request_error("a body with both \\u0000 and \\u0001 is refused",
        NGX_HTTP_CIO_CALL_TRACK,
        "{'userId':'u\\u0000','event':'e\\u0001'}", 38,
        "\\u0000 in a string of a body that also has \\u0001");

    o = opts(NGX_HTTP_CIO_CALL_AMPLITUDE);
    rc = map("{'api_key':'k','events':[{'event_type':'e','user_id':"
             "'user-1\\u0000x'},{'event_type':'e','user_id':'user-2'}]}",
             &o, &res);
    ok(rc == 0 && res.ncalls == 2 && res.calls[0].nitems == 0
       && strcmp(res.calls[0].error, "user_id contains a \\u0000 escape")
          == 0
       && res.calls[1].nitems == 1,
       "Amplitude: a \\u0000 in user_id is refused by name, the other"
       " event kept", res.ncalls ? res.calls[0].error : res.error);
    ngx_http_cio_map_result_free(&res);
}


/* cJSON's allocations while a case maps: every byte asked for, in all */
static size_t  hook_bytes;

static void *
hook_malloc(size_t n)
{
    hook_bytes += n;
    return malloc(n);
}


/* a cJSON malloc() that fails once hook_left allocations were made */
static long  hook_left;

static void *
hook_failing_malloc(size_t n)
{
    if (hook_left-- <= 0) {
        errno = ENOMEM;
        return NULL;
    }

    return malloc(n);
}


/* every item of a result, one after the other, or NULL */
static char *
all_items(ngx_http_cio_map_result_t *res)
{
    char    *out;
    int      k;
    size_t   i, len, at;

    len = 1;

    for (i = 0; i < res->ncalls; i++) {
        for (k = 0; k < res->calls[i].nitems; k++) {
            len += res->calls[i].item_len[k] + 1;
        }
    }

    out = malloc(len);
    at = 0;

    for (i = 0; out != NULL && i < res->ncalls; i++) {
        for (k = 0; k < res->calls[i].nitems; k++) {
            memcpy(out + at, res->calls[i].item[k], res->calls[i].item_len[k]);
            at += res->calls[i].item_len[k];
            out[at++] = '\n';
        }
    }

    if (out != NULL) {
        out[at] = '\0';
    }

    return out;
}


/*
 * Out of memory at every allocation of a tree-path mapping in turn: the
 * mapper says so (a 500, which the sender sends again), never blames the
 * input (a 400 or a call in "rejected", which it would drop), and never
 * sends an item it could not make whole.
 */
static void
test_out_of_memory(void)
{
    int                        b, rc, bad;
    long                       n;
    char                      *want, *got, detail[256];
    cJSON_Hooks                hooks;
    ngx_http_cio_map_opts_t    o;
    ngx_http_cio_map_result_t  res;

    static const struct {
        int          route;
        const char  *body;
    } bodies[] = {
        { NGX_HTTP_CIO_CALL_BATCH,
          "{'context':{'traits':{'plan':'x'}},'batch':["
          "{'type':'identify','anonymousId':'a1','traits':{'email':"
          "'a@x.co','createdAt':'2020-01-01T00:00:00Z','tags':[1,'t']}},"
          "{'type':'track','userId':'u','event':'Application Installed',"
          "'context':{'device':{'token':'tk','type':'ios'},'os':{'name':"
          "'iOS'}},'properties':{'k':{'n':[1,2]},'d':'2021-01-01'}},"
          "{'type':'page','userId':'u','name':'Home'},"
          "{'type':'screen','anonymousId':'a2','name':'Cart'},"
          "{'type':'group','userId':'u','groupId':'g','traits':{'name':"
          "'A','relationshipAttributes':{'role':'r'}}},"
          "{'type':'alias','userId':'u','previousId':'p'},"
          "{'type':'track','userId':'u','event':'Object Deleted',"
          "'properties':{'objectId':'o1'}}]}" },
        { NGX_HTTP_CIO_CALL_AMPLITUDE,
          "{'api_key':'k','events':[{'event_type':'e','user_id':'user1',"
          "'insert_id':'i1','time':1700000000000,'event_properties':"
          "{'a':[1,{'b':2}]},'user_properties':{'c':3},'groups':"
          "{'org':'acme'}},{'event_type':'$identify','device_id':'dev-1',"
          "'user_properties':{'$set':{'plan':'pro'}}}]}" }
    };

    hooks.malloc_fn = hook_failing_malloc;
    hooks.free_fn = free;
    bad = 0;
    detail[0] = '\0';

    for (b = 0; b < 2 && !bad; b++) {
        o = opts(bodies[b].route);
        want = NULL;

        if (map(bodies[b].body, &o, &res) == 0) {
            want = all_items(&res);
        }

        ngx_http_cio_map_result_free(&res);

        for (n = 0; n < 2000 && !bad && want != NULL; n++) {
            hook_left = n;
            cJSON_InitHooks(&hooks);
            rc = map(bodies[b].body, &o, &res);
            cJSON_InitHooks(NULL);

            if (!ngx_http_cio_map_out_of_memory(&res)) {
                got = (rc == 0) ? all_items(&res) : NULL;

                if (got == NULL || strcmp(got, want) != 0) {
                    bad = 1;
                    snprintf(detail, sizeof(detail),
                             "body %d, allocation %ld: %s", b, n,
                             rc ? res.error : (got ? got : "(none)"));
                }

                free(got);
            }

            ngx_http_cio_map_result_free(&res);
        }

        ok(want != NULL && !bad, "out of memory is never the input's "
           "fault, nor an item sent short", detail);
        free(want);
    }
}


/* the first call's first item as the mapper wrote it, or its error */
static char *
item_text(ngx_http_cio_map_result_t *res)
{
    if (res->ncalls == 0 || res->calls[0].nitems == 0) {
        return strdup(res->ncalls ? res->calls[0].error : res->error);
    }

    return strndup(res->calls[0].item[0], res->calls[0].item_len[0]);
}


/* {"locale":"fr","x":[0,0,...]}: n + 1 zeros */
static char *
zeros_context(size_t n)
{
    char    *ctx, *p;
    size_t   i;

    ctx = malloc(32 + 2 * n);
    p = ctx + sprintf(ctx, "{\"locale\":\"fr\",\"x\":[0");

    for (i = 0; i < n; i++) {
        p += sprintf(p, ",0");
    }

    strcpy(p, "]}");

    return ctx;
}


/* a body of n calls of call (printf'd with the index) and a batch context */
static char *
batch_body(size_t n, const char *call, const char *context)
{
    char    *b, *p;
    size_t   i, len;

    len = 64 + strlen(context) + n * (strlen(call) + 16);
    b = malloc(len);
    p = b + sprintf(b, "{\"context\":%s,\"batch\":[", context);

    for (i = 0; i < n; i++) {
        p += sprintf(p, call, (int) i);
        *p++ = (i + 1 < n) ? ',' : ']';
    }

    strcpy(p, "}");

    return b;
}


/* a batch's context and integrations: read, not copied into every call */
static void
test_batch_shared(void)
{
    int                        good;
    char                      *ctx, *body, *p, *got;
    size_t                     i;
    cJSON_Hooks                hooks;
    ngx_http_cio_map_opts_t    o;
    ngx_http_cio_map_result_t  res;

    o = opts(NGX_HTTP_CIO_CALL_BATCH);

    /* 28 KB of context, 2500 calls without messageId: the tree maps them */
    ctx = zeros_context(14000);
    body = batch_body(2500, "{\"type\":\"track\",\"userId\":\"u%d\","
                      "\"event\":\"e\"}", ctx);

    hook_bytes = 0;
    hooks.malloc_fn = hook_malloc;
    hooks.free_fn = free;
    cJSON_InitHooks(&hooks);

    good = (map(body, &o, &res) == 0 && res.ncalls == 2500);

    cJSON_InitHooks(NULL);

    for (i = 0; good && i < 2500; i++) {
        good = (res.calls[i].nitems == 1 && res.calls[i].error[0] == '\0');
    }

    ok(good, "a batch context of 28 KB and 2500 calls: each mapped",
       res.ncalls ? res.calls[0].error : res.error);
    ok(hook_bytes < 64 * 1024 * 1024,
       "and cJSON allocated less than 64 MB for them (not the context "
       "once per call)", NULL);
    ngx_http_cio_map_result_free(&res);
    free(body);

    /* 36 KB: more than a call may be, which every call would carry */
    free(ctx);
    ctx = zeros_context(18000);
    body = batch_body(1, "{\"type\":\"track\",\"userId\":\"u%d\","
                      "\"event\":\"e\"}", ctx);
    expect_request_error("a batch context over 32768 bytes: refused",
        NGX_HTTP_CIO_CALL_BATCH, body, strlen(body),
        "batch context is larger than 32768 bytes");
    free(body);

    body = batch_body(1, "{\"type\":\"track\",\"userId\":\"u%d\","
                      "\"event\":\"e\"}", "{}");
    p = malloc(strlen(body) + strlen(ctx) + 32);
    sprintf(p, "{\"integrations\":%s,%s", ctx, body + 1);
    expect_request_error("batch integrations over 32768 bytes: refused",
        NGX_HTTP_CIO_CALL_BATCH, p, strlen(p),
        "batch integrations is larger than 32768 bytes");
    free(p);
    free(body);
    free(ctx);

    /* the call's own context keys win, the batch's fill in the rest */
    map("{'context':{'traits':{'email':'b@x','plan':'batch'},"
        "'groupId':'g-batch'},'batch':["
        "{'type':'identify','anonymousId':'a1','messageId':'m1'},"
        "{'type':'identify','anonymousId':'a2','messageId':'m2',"
        "'context':{'traits':{'email':'own@x'}}},"
        "{'type':'identify','anonymousId':'a3','context':7}]}", &o, &res);

    if (res.ncalls == 3) {
        got = items_of(&res, 0);
        ok(strstr(got, "\"email\":\"b@x\"") && strstr(got, "\"plan\"")
           && strstr(got, "g-batch"),
           "batch context: traits and groupId for a call without them", got);
        free(got);
        got = items_of(&res, 1);
        ok(strstr(got, "own@x") && !strstr(got, "\"plan\""),
           "batch context: the call's own traits win, whole", got);
        free(got);
        got = items_of(&res, 2);
        ok(strstr(got, "\"email\":\"b@x\"") != NULL,
           "batch context: a call's context that is no object is the "
           "batch's", got);
        free(got);

    } else {
        ok(0, "batch context: three calls", res.error);
    }

    ngx_http_cio_map_result_free(&res);

    /* below 2^53 a numeric id is exact, and written so (§2) */
    o = opts(NGX_HTTP_CIO_CALL_TRACK);
    map("{\"userId\":9007199254740989,\"event\":\"e\",\"messageId\":\"m\"}",
        &o, &res);
    got = item_text(&res);
    ok(strstr(got, "\"identifiers\":{\"id\":9007199254740989}") != NULL,
       "a numeric userId just below 2^53 keeps every digit", got);
    free(got);
    ngx_http_cio_map_result_free(&res);

    map("{\"userId\":-0,\"event\":\"e\",\"messageId\":\"m\"}", &o, &res);
    got = item_text(&res);
    ok(strstr(got, "\"identifiers\":{\"id\":-0}") != NULL,
       "a userId of -0 is written as cJSON 1.7.15 wrote it, by both paths",
       got);
    free(got);
    ngx_http_cio_map_result_free(&res);
    o = opts(NGX_HTTP_CIO_CALL_BATCH);

    /* two page views known only by their batch's context: two ids (§4) */
    {
        char  *a, *b;

        map("{'context':{'page':{'url':'http://a/'}},'batch':["
            "{'type':'page','userId':'u1'}]}", &o, &res);
        a = item_text(&res);
        ngx_http_cio_map_result_free(&res);
        map("{'context':{'page':{'url':'http://b/'}},'batch':["
            "{'type':'page','userId':'u1'}]}", &o, &res);
        b = item_text(&res);
        ngx_http_cio_map_result_free(&res);

        ok(strstr(a, "http://a/") && strstr(b, "http://b/")
           && strstr(a, ",\"id\":\"") && strstr(b, ",\"id\":\"")
           && strncmp(strstr(a, ",\"id\":\""), strstr(b, ",\"id\":\""), 34)
              != 0,
           "batch context: calls without messageId that differ only in "
           "it get different ids", a);
        free(a);
        free(b);
    }

    /* raw control bytes print 6 times as long: the paths agree */
    ctx = malloc(8100);
    p = ctx + sprintf(ctx, "{\"x\":\"");
    memset(p, '\x02', 8000);
    strcpy(p + 8000, "\"}");
    body = batch_body(1, "{\"type\":\"track\",\"userId\":\"u%d\","
                      "\"event\":\"e\",\"messageId\":\"m\"}", ctx);
    expect_request_error("a batch context of 8000 control bytes: refused "
        "by both paths", NGX_HTTP_CIO_CALL_BATCH, body, strlen(body),
        "batch context is larger than 32768 bytes");
    free(body);
    free(ctx);

    /* a known person's anonymousId that is not UTF-8 names nobody */
    o = opts(NGX_HTTP_CIO_CALL_TRACK);
    map("{\"userId\":\"u\",\"anonymousId\":\"a\xe9\",\"event\":\"e\","
        "\"messageId\":\"m\"}", &o, &res);
    got = item_text(&res);
    ok(strstr(got, "\"attributes\":{}") != NULL && res.changes == 1,
       "an anonymousId that is not UTF-8 is no anonymous_id attribute",
       got);
    free(got);
    ngx_http_cio_map_result_free(&res);
    o = opts(NGX_HTTP_CIO_CALL_BATCH);

    /* a NUL key in the batch's context is in every call */
    map("{\"context\":{\"a\\u0000b\":1},\"batch\":["
        "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\"},"
        "{\"type\":\"track\",\"userId\":\"v\",\"event\":\"e\","
        "\"messageId\":\"m\"}]}", &o, &res);
    ok(res.ncalls == 2
       && strcmp(res.calls[0].error, "a key contains a \\u0000 escape") == 0
       && strcmp(res.calls[1].error, "a key contains a \\u0000 escape") == 0,
       "batch context: a \\u0000 in one of its keys refuses every call",
       res.ncalls ? res.calls[0].error : res.error);
    ngx_http_cio_map_result_free(&res);
}


static void
run_all(void)
{
    test_identity();
    test_track();
    test_page_screen();
    test_group_alias();
    test_devices();
    test_limits();
    test_batch();
    test_batch_shared();
    test_identity_edges();
    test_lone_surrogates();
    test_repeated_keys();
    test_out_of_memory();
    test_time_edges();
    test_peer_calls();
    test_device_peers();
    test_limit_edges();
    test_amplitude();
    test_utf8();
    test_filters();
    test_client_ip();
    test_dedupe();
    test_contract_time();
    test_contract_integrations();
    test_contract_deletions();
    test_contract_people();
    test_contract_amplitude();
    test_contract_hostile();
}


int
main(void)
{
    run_all();
    printf("fast path first: %d passed, %d failed; the fast path mapped "
           "%d bodies the same as the tree, declined %d\n", passed, failed,
           fast_mapped, fast_declined);

    tree_only = 1;
    run_all();
    printf("tree only: %d passed, %d failed in all\n", passed, failed);

    ngx_http_cio_map_release();

    return failed ? 1 : 0;
}
