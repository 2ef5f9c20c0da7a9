/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * Segment / RudderStack calls and Amplitude events to Customer.io Track
 * API v2 items, as docs/mapping.md promises.  No nginx
 * headers: the unit tests and the fuzzer link this file with cJSON alone.
 *
 * The client address (context.ip) is deliberately not written into any
 * item: neither Segment's nor RudderStack's Customer.io destination puts
 * context.ip (or RudderStack's request_ip) anywhere in what it sends
 * (docs/mapping.md §10), and the v2
 * items have no context for it.
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <math.h>

#include <cjson/cJSON.h>

#include "ngx_http_cio_map.h"
#include "ngx_http_cio_map_fast.h"



/* 2^53: from it on, a JSON integer may have lost digits in a double */
#define NGX_HTTP_CIO_MAX_EXACT       9007199254740992.0


/* events are at most this far after their receipt (docs/mapping.md §3.1) */
#define NGX_HTTP_CIO_MAP_FUTURE_MS   (366LL * 24 * 3600 * 1000)

/* a number below this is unix seconds, from it on milliseconds (§3.1) */
#define NGX_HTTP_CIO_MAP_MS_FROM     100000000000.0

/* dedupe ids of calls without a time: inside 2020 (§4) */
#define NGX_HTTP_CIO_MAP_ID_EPOCH    1577836800000LL
#define NGX_HTTP_CIO_MAP_ID_SPAN     (366LL * 24 * 3600 * 1000)


#define NGX_HTTP_CIO_MAP_MEMO        16


/* a member of a batch-level object, as looked up once */
typedef struct {
    const cJSON                    *o;
    const char                     *k;
    const cJSON                    *v;
} ngx_http_cio_map_memo_t;


typedef struct {
    const ngx_http_cio_map_opts_t  *opts;
    ngx_http_cio_map_result_t      *res;
    const cJSON                    *batch_sent_at;
    const cJSON                    *batch_integrations;

    /*
     * The body had \u0000 escapes, parsed as \u0001 (which the body did
     * not otherwise contain): a 0x01 byte in a string is a NUL (§7.6).
     */
    unsigned                        nul:1;
    int                             min_id_length;

    /* Amplitude events: no Segment special names, Amplitude field names */
    unsigned                        amplitude:1;
    const char                     *user_field;
    const char                     *anon_field;

    /*
     * A batch's context is read where a call lacks the key (§6), not
     * copied into every call: a large one would cost its size once per
     * call.  What is read of it, and of its integrations, is looked up
     * once per batch.
     */
    const cJSON                    *batch_context;
    ngx_http_cio_map_memo_t         memo[NGX_HTTP_CIO_MAP_MEMO];
    int                             nmemo;
    int                             batch_cio;       /* -2: not read */
    int                             batch_deep;      /* -1: not read */
    int                             batch_nul;       /* -1: not read */
    char                            batch_digest[27];    /* a ULID's */
} ngx_http_cio_map_ctx_t;


static cJSON *ngx_http_cio_map_parse(ngx_http_cio_map_ctx_t *ctx,
    const char *body, size_t len);
static int ngx_http_cio_map_strict(const char *body, size_t len);
static int ngx_http_cio_map_surrogates(const char *body, size_t *len,
    char **copy);
static const char *ngx_http_cio_map_strict_number(const char *p,
    const char *end);
static int ngx_http_cio_map_nul_scan(const char *body, size_t len,
    char **copy);
static int ngx_http_cio_map_check(ngx_http_cio_map_ctx_t *ctx,
    const cJSON *call, char *err);
static const cJSON *ngx_http_cio_map_context(ngx_http_cio_map_ctx_t *ctx,
    const cJSON *call, const char *a, const char *b);
static const cJSON *ngx_http_cio_map_memo(ngx_http_cio_map_ctx_t *ctx,
    const cJSON *o, const char *k);
static int ngx_http_cio_map_id_text(const char *s, const char *field,
    char *err);
static int ngx_http_cio_map_utf8_valid(const char *s);
static int ngx_http_cio_map_deep(const cJSON *v, int left);
static const char *ngx_http_cio_map_twice(const cJSON *o, const char **keys);
static const cJSON *ngx_http_cio_map_email(ngx_http_cio_map_ctx_t *ctx,
    const cJSON *call, int context, char *err);
static int ngx_http_cio_map_nul_key(const cJSON *v);
static void ngx_http_cio_map_nul_restore(char *s);
static int ngx_http_cio_map_intg_cio(const cJSON *intg);
static int ngx_http_cio_map_shared(ngx_http_cio_map_ctx_t *ctx,
    const cJSON *o, const char *what, char *digest);
static char *ngx_http_cio_map_canon(ngx_http_cio_map_ctx_t *ctx,
    cJSON *call);
static int ngx_http_cio_map_batch(ngx_http_cio_map_ctx_t *ctx, cJSON *root);
static int ngx_http_cio_map_amplitude(ngx_http_cio_map_ctx_t *ctx,
    cJSON *root);
static void ngx_http_cio_map_amplitude_event(ngx_http_cio_map_ctx_t *ctx,
    const cJSON *ev, ngx_http_cio_map_call_t *out);
static void ngx_http_cio_map_insert_id(cJSON *call, const cJSON *ev,
    const char *iid);
static int ngx_http_cio_map_amplitude_id(ngx_http_cio_map_ctx_t *ctx,
    const cJSON *v);
static cJSON *ngx_http_cio_map_amplitude_props(const cJSON *up);
static void ngx_http_cio_map_call(ngx_http_cio_map_ctx_t *ctx, cJSON *call,
    int type, ngx_http_cio_map_call_t *out);
static int ngx_http_cio_map_action(ngx_http_cio_map_ctx_t *ctx,
    const char *name);
static int ngx_http_cio_map_filtered(ngx_http_cio_map_ctx_t *ctx,
    const cJSON *call, int type);
static int ngx_http_cio_map_integrations(ngx_http_cio_map_ctx_t *ctx,
    const cJSON *call);
static int ngx_http_cio_map_identify(ngx_http_cio_map_ctx_t *ctx,
    cJSON *call, cJSON *item, char *err);
static cJSON *ngx_http_cio_map_relationship(ngx_http_cio_map_ctx_t *ctx,
    const cJSON *traits, const cJSON *gid, char *err);
static int ngx_http_cio_map_track(ngx_http_cio_map_ctx_t *ctx,
    cJSON *call, cJSON **items, char *err);
static cJSON *ngx_http_cio_map_device(ngx_http_cio_map_ctx_t *ctx,
    cJSON *call, cJSON *attrs, int add, const char *token_s);
static int ngx_http_cio_map_page(ngx_http_cio_map_ctx_t *ctx, cJSON *call,
    cJSON *item, char *err);
static int ngx_http_cio_map_screen(ngx_http_cio_map_ctx_t *ctx,
    cJSON *call, cJSON *item, char *err);
static int ngx_http_cio_map_group(ngx_http_cio_map_ctx_t *ctx, cJSON *call,
    cJSON *item, char *err);
static int ngx_http_cio_map_deleted(ngx_http_cio_map_ctx_t *ctx,
    cJSON *call, cJSON *item, const char *name, char *err);
static cJSON *ngx_http_cio_map_object(const cJSON *src, const cJSON *id,
    const char *field, char *err);
static int ngx_http_cio_map_present(const cJSON *v);
static int ngx_http_cio_map_user(const cJSON *v);
static int ngx_http_cio_map_alias(cJSON *call, cJSON *item, char *err);
static cJSON *ngx_http_cio_map_identity(ngx_http_cio_map_ctx_t *ctx,
    cJSON *call, int identify, int *known, char *err);
static cJSON *ngx_http_cio_map_resolve(const cJSON *v, const char *field,
    char *err);
static int ngx_http_cio_map_num_id(const cJSON *v, char *buf, size_t size);
static void ngx_http_cio_map_anonymous(ngx_http_cio_map_ctx_t *ctx,
    cJSON *call, cJSON *attrs, int known);
static void ngx_http_cio_map_put(ngx_http_cio_map_ctx_t *ctx, cJSON *attrs,
    const char *name, cJSON *v);
static void ngx_http_cio_map_replace(cJSON *o, const char *name,
    const cJSON *v);
static void ngx_http_cio_map_event(ngx_http_cio_map_ctx_t *ctx,
    cJSON *call, cJSON *item, const char *action, const char *name,
    cJSON *attrs, int known);
static cJSON *ngx_http_cio_map_attrs(ngx_http_cio_map_ctx_t *ctx,
    const cJSON *src);
static void ngx_http_cio_map_values(ngx_http_cio_map_ctx_t *ctx, cJSON *v,
    int depth);
static int64_t ngx_http_cio_map_time(ngx_http_cio_map_ctx_t *ctx,
    cJSON *call, int64_t *own, int count);
static int ngx_http_cio_map_parse_time(const cJSON *v, int64_t *ms);
static int ngx_http_cio_map_alloc_calls(ngx_http_cio_map_ctx_t *ctx,
    const cJSON *list, const char *name, const char *unit);
static char *ngx_http_cio_map_utf8(ngx_http_cio_map_ctx_t *ctx, char *s);
static size_t ngx_http_cio_map_utf8_len(const unsigned char *p);
static char *ngx_http_cio_map_cut(const char *s, size_t max, size_t *len);
static const cJSON *ngx_http_cio_map_get(const cJSON *o, const char *k);
static const cJSON *ngx_http_cio_map_path(const cJSON *o, const char *a,
    const char *b);
static const char *ngx_http_cio_map_str(const cJSON *v);


static const char  *ngx_http_cio_call_names[] = {
    "unknown", "identify", "track", "page", "screen", "group", "alias",
    "batch", "amplitude"
};


const char *
ngx_http_cio_call_name(int type)
{
    if (type < 0 || type > NGX_HTTP_CIO_CALL_AMPLITUDE) {
        type = 0;
    }

    return ngx_http_cio_call_names[type];
}


/*
 * Whether a cJSON allocation failed while the current call was mapped.
 * cJSON adds nothing when it cannot copy a key, and the mapper would
 * send an item without it (identifiers, attributes) and lose what it
 * meant to add: the call fails instead (a 500 to the sender, who sends
 * it again), and what could not be added is freed.  malloc() sets errno
 * to ENOMEM for the cJSON objects that could not be made.  One mapping
 * at a time per process (a worker's event loop, a test).
 */
static int  ngx_http_cio_map_failed;


static void
ngx_http_cio_map_add(cJSON *o, const char *k, cJSON *v)
{
    if (v == NULL) {
        return;
    }

    if (o == NULL || !cJSON_AddItemToObject(o, k, v)) {
        cJSON_Delete(v);
        ngx_http_cio_map_failed = 1;
    }
}


static void
ngx_http_cio_map_add_elt(cJSON *a, cJSON *v)
{
    if (v == NULL) {
        return;
    }

    if (a == NULL || !cJSON_AddItemToArray(a, v)) {
        cJSON_Delete(v);
        ngx_http_cio_map_failed = 1;
    }
}


static void
ngx_http_cio_map_add_str(cJSON *o, const char *k, const char *v)
{
    if (v != NULL && cJSON_AddStringToObject(o, k, v) == NULL) {
        ngx_http_cio_map_failed = 1;
    }
}


static void
ngx_http_cio_map_add_num(cJSON *o, const char *k, double v)
{
    if (cJSON_AddNumberToObject(o, k, v) == NULL) {
        ngx_http_cio_map_failed = 1;
    }
}


/*
 * The common calls take the one-pass fast path (ngx_http_cio_map_fast.c);
 * whatever it does not handle, it declines, and the tree below maps it.
 */

int
ngx_http_cio_map_request(const char *body, size_t len,
    const ngx_http_cio_map_opts_t *opts, ngx_http_cio_map_result_t *res)
{
    int  rc;

    rc = ngx_http_cio_map_fast(body, len, opts, res);

    if (rc != NGX_HTTP_CIO_MAP_DECLINED) {
        return rc;
    }

    return ngx_http_cio_map_tree(body, len, opts, res);
}


int
ngx_http_cio_map_tree(const char *body, size_t len,
    const ngx_http_cio_map_opts_t *opts, ngx_http_cio_map_result_t *res)
{
    int                      rc;
    cJSON                   *root;
    const cJSON             *wk;
    ngx_http_cio_map_ctx_t   ctx;

    memset(res, 0, sizeof(ngx_http_cio_map_result_t));

    ngx_http_cio_map_failed = 0;
    errno = 0;

    memset(&ctx, 0, sizeof(ngx_http_cio_map_ctx_t));
    ctx.opts = opts;
    ctx.res = res;
    ctx.batch_cio = -2;
    ctx.batch_deep = -1;
    ctx.batch_nul = -1;
    ctx.user_field = "userId";
    ctx.anon_field = "anonymousId";

    root = ngx_http_cio_map_parse(&ctx, body, len);
    if (root == NULL) {
        return -1;
    }

    if (!cJSON_IsObject(root)) {
        snprintf(res->error, sizeof(res->error),
                 "body must be a JSON object");
        cJSON_Delete(root);
        return -1;
    }

    if (opts->route == NGX_HTTP_CIO_CALL_AMPLITUDE) {
        rc = ngx_http_cio_map_amplitude(&ctx, root);
        cJSON_Delete(root);
        return rc;
    }

    /* a key with a \u0000 escape keeps its 0x01: it matches no key */
    wk = ngx_http_cio_map_get(root, "writeKey");

    if (cJSON_IsString(wk)) {
        res->write_key = strdup(wk->valuestring);
    }

    if (opts->route == NGX_HTTP_CIO_CALL_BATCH) {
        rc = ngx_http_cio_map_batch(&ctx, root);
        cJSON_Delete(root);
        return rc;
    }

    res->calls = calloc(1, sizeof(ngx_http_cio_map_call_t));
    if (res->calls == NULL) {
        snprintf(res->error, sizeof(res->error), NGX_HTTP_CIO_MAP_NOMEM);
        cJSON_Delete(root);
        return -1;
    }

    res->ncalls = 1;
    ngx_http_cio_map_call(&ctx, root, opts->route, &res->calls[0]);

    cJSON_Delete(root);

    return 0;
}


/*
 * The body as a tree, or NULL with the error set.  cJSON reads strings as
 * C strings, so a raw NUL inside one would silently cut an id short and
 * name another person; JSON has no raw NUL anywhere anyway.
 */

static cJSON *
ngx_http_cio_map_parse(ngx_http_cio_map_ctx_t *ctx, const char *body,
    size_t len)
{
    int          rc, nomem;
    char        *fixed, *copy;
    cJSON       *root;
    const char  *end;

    if (memchr(body, '\0', len) != NULL
        || ngx_http_cio_map_strict(body, len) != 0)
    {
        snprintf(ctx->res->error, sizeof(ctx->res->error), "invalid JSON");
        return NULL;
    }

    fixed = NULL;
    copy = NULL;

    rc = ngx_http_cio_map_surrogates(body, &len, &fixed);

    if (rc == 0) {
        body = (fixed != NULL) ? fixed : body;
        rc = ngx_http_cio_map_nul_scan(body, len, &copy);
    }

    if (rc < 0) {
        snprintf(ctx->res->error, sizeof(ctx->res->error), "%s",
                 (rc == -1) ? "\\u0000 in a string of a body that also "
                              "has \\u0001"
                            : NGX_HTTP_CIO_MAP_NOMEM);
        free(fixed);
        return NULL;
    }

    if (rc == 1) {
        ctx->nul = 1;
        body = copy;
    }

    /* a parse that fails for want of memory is no fault of the body's */
    errno = 0;
    end = NULL;
    root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    nomem = (root == NULL && errno == ENOMEM);

    if (root != NULL && end != NULL) {
        while (end < body + len
               && (*end == ' ' || *end == '\t' || *end == '\r'
                   || *end == '\n' || *end == '\0'))
        {
            end++;
        }

        if (end != body + len) {
            cJSON_Delete(root);
            root = NULL;
        }
    }

    free(copy);
    free(fixed);

    if (root == NULL) {
        snprintf(ctx->res->error, sizeof(ctx->res->error), "%s",
                 nomem ? NGX_HTTP_CIO_MAP_NOMEM : "invalid JSON");
    }

    return root;
}


/*
 * What cJSON reads more leniently than JSON, refused before it reads it:
 * a number such as 01, 1., .5 or +1 (a userId 01 would become the person
 * "1"), and control bytes between tokens, which it skips as whitespace.
 * The one-pass mapper refuses the same and leaves the answer to the tree.
 * Strings are only skipped (cJSON checks their escapes), and so are
 * brackets, commas, colons and literals (it checks those exactly); a
 * UTF-8 byte order mark at the start stays allowed, as cJSON skips it.
 */

static int
ngx_http_cio_map_strict(const char *body, size_t len)
{
    const char  *p, *end;

    p = body;
    end = body + len;

    if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0) {
        p += 3;
    }

    while (p < end) {

        switch (*p) {

        case '"':
            for (p++; p < end && *p != '"'; p++) {
                if (*p == '\\' && p + 1 < end) {
                    p++;
                }
            }

            p = (p < end) ? p + 1 : end;
            break;

        case ' ': case '\t': case '\n': case '\r':
        case '{': case '}': case '[': case ']': case ',': case ':':
            p++;
            break;

        case '-': case '+': case '.':
        case '0': case '1': case '2': case '3': case '4':
        case '5': case '6': case '7': case '8': case '9':
            p = ngx_http_cio_map_strict_number(p, end);

            if (p == NULL) {
                return -1;
            }

            break;

        default:
            if (*p < 'a' || *p > 'z') {
                return -1;
            }

            while (p < end && *p >= 'a' && *p <= 'z') {
                p++;
            }
        }
    }

    return 0;
}


/* the end of an RFC 8259 number at p, or NULL if what is there is not */

static const char *
ngx_http_cio_map_strict_number(const char *p, const char *end)
{
    if (*p == '-') {
        p++;
    }

    if (p >= end || *p < '0' || *p > '9') {
        return NULL;
    }

    if (*p++ != '0') {
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < end && *p == '.') {
        if (++p >= end || *p < '0' || *p > '9') {
            return NULL;
        }

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }

        if (p >= end || *p < '0' || *p > '9') {
            return NULL;
        }

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    /* what cJSON would read on as part of the number: 01, 1.2.3, 1e5e */
    if (p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == '+'
                    || *p == '-' || *p == 'e' || *p == 'E'))
    {
        return NULL;
    }

    return p;
}


/*
 * A \uD800 to \uDFFF escape that is not half of a pair stands for no
 * character: JavaScript writes one when it cuts a string inside an emoji.
 * cJSON refuses a body with one, which would lose every call of a batch
 * for one cut title; in a copy (*copy, *len its length) it becomes the
 * three bytes that would encode the surrogate, which the mapper repairs
 * as any bytes that are not UTF-8 (docs/mapping.md §7.5): U+FFFD in a
 * value or a key, a refusal in an identifier.  0 (*copy set when there was
 * one), -2 (no memory).
 */

static int
ngx_http_cio_map_surrogates(const char *body, size_t *len, char **copy)
{
    char        *q;
    unsigned     cp, lo;
    const char  *p, *end, *from;

    end = body + *len;
    from = body;
    q = NULL;

    for (p = body; (p = memchr(p, '\\', end - p)) != NULL; /* void */) {

        if (end - p < 6 || p[1] != 'u' || ngx_http_cio_map_hex4(p + 2, &cp)
            || cp < 0xd800 || cp > 0xdfff)
        {
            if (end - p < 2) {
                break;
            }

            p += 2;
            continue;
        }

        if (cp <= 0xdbff && end - p >= 12 && p[6] == '\\' && p[7] == 'u'
            && ngx_http_cio_map_hex4(p + 8, &lo) == 0
            && lo >= 0xdc00 && lo <= 0xdfff)
        {
            p += 12;
            continue;
        }

        if (q == NULL) {
            *copy = malloc(*len + 1);
            if (*copy == NULL) {
                return -2;
            }

            q = *copy;
        }

        memcpy(q, from, p - from);
        q += p - from;
        *q++ = (char) 0xed;
        *q++ = (char) (0x80 | ((cp >> 6) & 0x3f));
        *q++ = (char) (0x80 | (cp & 0x3f));

        p += 6;
        from = p;
    }

    if (q != NULL) {
        memcpy(q, from, end - from);
        q += end - from;
        *q = '\0';
        *len = q - *copy;
    }

    return 0;
}


/* the four hex digits of a \u escape at p, which has four bytes */

int
ngx_http_cio_map_hex4(const char *p, unsigned *cp)
{
    int  i;

    *cp = 0;

    for (i = 0; i < 4; i++) {
        if (p[i] >= '0' && p[i] <= '9') {
            *cp = *cp * 16 + (p[i] - '0');

        } else if ((p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'f') {
            *cp = *cp * 16 + ((p[i] | 0x20) - 'a' + 10);

        } else {
            return -1;
        }
    }

    return 0;
}


/*
 * cJSON turns a \u0000 escape into a NUL inside a C string, which would
 * silently end an id, a name or a key there (docs/mapping.md §7.6).  The
 * escapes are parsed as \u0001 instead, in a copy, when the body has no
 * 0x01 of its own (raw or escaped): a 0x01 in a parsed string then means
 * a NUL, refused where it names someone or something and written back as
 * \u0000 in values.  Returns 0 (no escape), 1 (*copy to parse), -1 (a
 * body with both, refused), -2 (no memory).
 */

static int
ngx_http_cio_map_nul_scan(const char *body, size_t len, char **copy)
{
    int          nul, one;
    size_t       i;
    const char  *p;

    nul = 0;
    one = (memchr(body, '\x01', len) != NULL);

    for (p = body; (p = memchr(p, '\\', body + len - p)) != NULL; p += 2) {
        if (body + len - p < 6) {
            break;
        }

        if (p[1] == 'u' && p[2] == '0' && p[3] == '0' && p[4] == '0'
            && (p[5] == '0' || p[5] == '1'))
        {
            nul |= (p[5] == '0');
            one |= (p[5] == '1');
        }
    }

    if (!nul) {
        return 0;
    }

    if (one) {
        return -1;
    }

    *copy = malloc(len + 1);
    if (*copy == NULL) {
        return -2;
    }

    memcpy(*copy, body, len);
    (*copy)[len] = '\0';

    for (i = 0; i + 5 < len; i++) {
        if ((*copy)[i] != '\\') {
            continue;
        }

        if (memcmp(*copy + i + 1, "u0000", 5) == 0) {
            (*copy)[i + 5] = '1';
        }

        i++;
    }

    return 1;
}


/*
 * A call's structure checked before it is mapped: no key and no field
 * that names someone or something with a NUL in it (§7.6), and properties
 * and traits nested at most NGX_HTTP_CIO_MAP_MAX_NESTING deep (§7.4).
 * 0, or -1 with err set.
 */

static int
ngx_http_cio_map_check(ngx_http_cio_map_ctx_t *ctx, const cJSON *call,
    char *err)
{
    int           i, deep;
    const char   *s;
    const cJSON  *v;

    static const struct {
        const char  *a, *b;       /* call[a] or call[a][b] */
        const char  *name;        /* as the sender wrote it */
        const char  *amplitude;
    } named[] = {
        { "userId", NULL, "userId", "user_id" },
        { "anonymousId", NULL, "anonymousId", "device_id" },
        { "previousId", NULL, "previousId", NULL },
        { "groupId", NULL, "groupId", "groups" },
        { "event", NULL, "event", "event_type" },
        { "name", NULL, "name", NULL },
        { "traits", "email", "traits.email", NULL },
        { "traits", "object_type_id", "traits.object_type_id", NULL },
        { "traits", "objectTypeId", "traits.objectTypeId", NULL },
        { "traits", "action", "traits.action", NULL },
        { "properties", "url", "properties.url", NULL },
        { "properties", "name", "properties.name", NULL },
        { "properties", "objectId", "properties.objectId", NULL },
        { "properties", "object_type_id", "properties.object_type_id",
          NULL },
        { "properties", "objectTypeId", "properties.objectTypeId", NULL },
        { "context", "groupId", "context.groupId", NULL },
        { NULL, NULL, NULL, NULL }
    };

    /* the keys of a call the one-pass mapper reads: it declines these */
    static const char  *once[] = {
        "type", "name", "event", "userId", "traits", "sentAt", "context",
        "groupId", "writeKey", "timestamp", "messageId", "properties",
        "previousId", "anonymousId", "integrations", "originalTimestamp",
        NULL
    };

    s = ctx->amplitude ? NULL : ngx_http_cio_map_twice(call, once);

    if (s != NULL) {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, "%s appears twice", s);
        return -1;
    }

    for (i = 0; i < 3; i++) {
        v = (i == 0) ? ngx_http_cio_map_get(call, "properties")
            : (i == 1) ? ngx_http_cio_map_get(call, "traits")
            : ngx_http_cio_map_context(ctx, call, "traits", NULL);

        if (i == 2 && v != NULL
            && v == ngx_http_cio_map_memo(ctx, ctx->batch_context, "traits"))
        {
            /* the batch's, checked once */
            if (ctx->batch_deep == -1) {
                ctx->batch_deep = ngx_http_cio_map_deep(v,
                                                NGX_HTTP_CIO_MAP_MAX_NESTING);
            }

            deep = ctx->batch_deep;

        } else {
            deep = ngx_http_cio_map_deep(v, NGX_HTTP_CIO_MAP_MAX_NESTING);
        }

        if (deep) {
            snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN,
                     "%s nest deeper than %d levels",
                     (i == 0) ? "properties" : "traits",
                     NGX_HTTP_CIO_MAP_MAX_NESTING);
            return -1;
        }
    }

    if (!ctx->nul) {
        return 0;
    }

    /* a batch's context is every call's: a NUL key in it refuses them all */
    if (ctx->batch_nul == -1) {
        ctx->batch_nul = ngx_http_cio_map_nul_key(ctx->batch_context);
    }

    if (ctx->batch_nul || ngx_http_cio_map_nul_key(call)) {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN,
                 "a key contains a \\u0000 escape");
        return -1;
    }

    for (i = 0; named[i].a; i++) {
        if (strcmp(named[i].a, "context") == 0) {
            v = ngx_http_cio_map_context(ctx, call, named[i].b, NULL);

        } else {
            v = ngx_http_cio_map_get(call, named[i].a);

            if (named[i].b) {
                v = ngx_http_cio_map_get(v, named[i].b);
            }
        }

        s = ngx_http_cio_map_str(v);

        if (s == NULL && v != NULL && named[i].b == NULL) {
            /* an Amplitude group: {"type": "name"} */
            v = cJSON_IsObject(v) ? v->child : NULL;
            s = ngx_http_cio_map_str(v);
        }

        if (s != NULL && strchr(s, '\x01') != NULL) {
            snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN,
                     "%s contains a \\u0000 escape",
                     (ctx->amplitude && named[i].amplitude)
                     ? named[i].amplitude : named[i].name);
            return -1;
        }
    }

    /* the context's: an e-mail, a device (a page's url: map_page) */
    for (i = 0; i < 2; i++) {
        s = ngx_http_cio_map_str(ngx_http_cio_map_context(ctx, call,
                                            i ? "device" : "traits",
                                            i ? "token" : "email"));

        if (s != NULL && strchr(s, '\x01') != NULL) {
            snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, "%s contains a \\u0000 "
                     "escape", i ? "context.device.token" : "an identifier");
            return -1;
        }
    }

    return 0;
}


/*
 * The first of keys (NULL-ended) that the object o holds twice, or NULL.
 * cJSON keeps both and finds the first; JSON.parse and Go, the peers'
 * parsers, keep the last: a body read one way by a proxy that checks it
 * and another way here must not name another person (docs/mapping.md
 * §7.8).  Each listed key is compared with the rest of o once at most.
 */

static const char *
ngx_http_cio_map_twice(const cJSON *o, const char **keys)
{
    int           i;
    const cJSON  *e, *f;

    if (!cJSON_IsObject(o)) {
        return NULL;
    }

    for (e = o->child; e != NULL; e = e->next) {
        for (i = 0; keys[i] != NULL; i++) {
            if (strcmp(e->string, keys[i]) == 0) {
                break;
            }
        }

        if (keys[i] == NULL) {
            continue;
        }

        for (f = e->next; f != NULL; f = f->next) {
            if (strcmp(f->string, e->string) == 0) {
                return e->string;
            }
        }
    }

    return NULL;
}


/* whether v has an object or array more than left levels below it */

static int
ngx_http_cio_map_deep(const cJSON *v, int left)
{
    const cJSON  *e;

    if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) {
        return 0;
    }

    if (left < 0) {
        return 1;
    }

    cJSON_ArrayForEach(e, v) {
        if (ngx_http_cio_map_deep(e, left - 1)) {
            return 1;
        }
    }

    return 0;
}


/* whether any key in v, at any depth, holds a NUL (parsed as 0x01) */

static int
ngx_http_cio_map_nul_key(const cJSON *v)
{
    const cJSON  *e;

    cJSON_ArrayForEach(e, v) {
        if ((e->string != NULL && strchr(e->string, '\x01') != NULL)
            || ngx_http_cio_map_nul_key(e))
        {
            return 1;
        }
    }

    return 0;
}


/*
 * Values keep a NUL: cJSON printed each as \u0001, which the body did not
 * otherwise contain, so each becomes \u0000 again in place.
 */

static void
ngx_http_cio_map_nul_restore(char *s)
{
    for ( /* void */ ; *s; s++) {
        if (*s != '\\') {
            continue;
        }

        if (strncmp(s + 1, "u0001", 5) == 0) {
            s[5] = '0';
        }

        if (*++s == '\0') {
            break;
        }
    }
}


/*
 * The calls of a batch, or the events of an Amplitude body: a non-empty
 * array within max_batch_calls.  Returns how many, with res->calls
 * allocated for them, or -1 with res->error set.
 */

static int
ngx_http_cio_map_alloc_calls(ngx_http_cio_map_ctx_t *ctx, const cJSON *list,
    const char *name, const char *unit)
{
    int                         n;
    ngx_http_cio_map_result_t  *res;

    res = ctx->res;
    n = cJSON_GetArraySize(list);

    if (!cJSON_IsArray(list) || n == 0) {
        snprintf(res->error, sizeof(res->error),
                 "%s must be a non-empty array", name);
        return -1;
    }

    if (ctx->opts->max_batch_calls
        && (size_t) n > ctx->opts->max_batch_calls)
    {
        res->too_many = 1;
        snprintf(res->error, sizeof(res->error),
                 "too many %s in batch (max %zu)", unit,
                 ctx->opts->max_batch_calls);
        return -1;
    }

    res->calls = calloc(n, sizeof(ngx_http_cio_map_call_t));
    if (res->calls == NULL) {
        snprintf(res->error, sizeof(res->error), NGX_HTTP_CIO_MAP_NOMEM);
        return -1;
    }

    res->ncalls = n;

    return n;
}


/*
 * A batch's context or integrations: 0, or -1 when it is too large; the
 * digest of its text into digest, if any.
 */

static int
ngx_http_cio_map_shared(ngx_http_cio_map_ctx_t *ctx, const cJSON *o,
    const char *what, char *digest)
{
    char    *s;
    size_t   n;

    if (!cJSON_IsObject(o)) {
        return 0;
    }

    s = cJSON_PrintUnformatted(o);

    if (s == NULL) {
        snprintf(ctx->res->error, sizeof(ctx->res->error),
                 NGX_HTTP_CIO_MAP_NOMEM);
        return -1;
    }

    n = strlen(s);

    if (digest != NULL) {
        ngx_http_cio_map_ulid(0, s, n, digest);
    }

    free(s);

    if (n > NGX_HTTP_CIO_MAP_MAX_SHARED) {
        snprintf(ctx->res->error, sizeof(ctx->res->error),
                 "batch %s is larger than %d bytes", what,
                 NGX_HTTP_CIO_MAP_MAX_SHARED);
        return -1;
    }

    return 0;
}


/* {"batch":[call,...], "sentAt", "context", "integrations"} */

static int
ngx_http_cio_map_batch(ngx_http_cio_map_ctx_t *ctx, cJSON *root)
{
    int                         type, i, n;
    cJSON                      *batch, *call, *t, *ctxo, *intg;
    const char                 *s;
    ngx_http_cio_map_result_t  *res;

    static const char  *once[] = {
        "batch", "context", "integrations", "sentAt", "writeKey", NULL
    };

    res = ctx->res;

    s = ngx_http_cio_map_twice(root, once);

    if (s != NULL) {
        snprintf(res->error, sizeof(res->error), "%s appears twice", s);
        return -1;
    }

    ctxo = cJSON_GetObjectItemCaseSensitive(root, "context");
    intg = cJSON_GetObjectItemCaseSensitive(root, "integrations");

    /* every call carries them: no larger than a call may be (§6) */
    if (ngx_http_cio_map_shared(ctx, ctxo, "context", ctx->batch_digest)
        != 0
        || ngx_http_cio_map_shared(ctx, intg, "integrations", NULL) != 0)
    {
        return -1;
    }

    batch = cJSON_GetObjectItemCaseSensitive(root, "batch");
    n = ngx_http_cio_map_alloc_calls(ctx, batch, "batch", "calls");

    if (n < 0) {
        return -1;
    }

    ctx->batch_sent_at = ngx_http_cio_map_get(root, "sentAt");
    ctx->batch_context = cJSON_IsObject(ctxo) ? ctxo : NULL;
    ctx->batch_integrations = cJSON_IsObject(intg) ? intg : NULL;

    i = 0;

    cJSON_ArrayForEach(call, batch) {

        if (!cJSON_IsObject(call)) {
            snprintf(res->calls[i].error, NGX_HTTP_CIO_MAP_ERRLEN,
                     "call must be a JSON object");
            i++;
            continue;
        }

        t = cJSON_GetObjectItemCaseSensitive(call, "type");
        type = NGX_HTTP_CIO_CALL_UNKNOWN;

        if (cJSON_IsString(t)) {
            for (type = NGX_HTTP_CIO_CALL_IDENTIFY;
                 type < NGX_HTTP_CIO_CALL_BATCH;
                 type++)
            {
                if (strcasecmp(t->valuestring,
                               ngx_http_cio_call_names[type])
                    == 0)
                {
                    break;
                }
            }

            if (type == NGX_HTTP_CIO_CALL_BATCH) {
                type = NGX_HTTP_CIO_CALL_UNKNOWN;
            }
        }

        if (type == NGX_HTTP_CIO_CALL_UNKNOWN) {
            snprintf(res->calls[i].error, NGX_HTTP_CIO_MAP_ERRLEN,
                     "call type is missing or unknown");
            i++;
            continue;
        }

        ngx_http_cio_map_call(ctx, call, type, &res->calls[i]);
        i++;
    }

    return 0;
}


/*
 * Amplitude HTTP V2 and Batch bodies: {"api_key", "events":[...],
 * "options"}.  Each event is turned into the Segment-shaped call it
 * stands for (docs/mapping.md §5.10) and mapped like one, so identity, time,
 * dedupe ids, limits and filters are the same code.
 */

static int
ngx_http_cio_map_amplitude(ngx_http_cio_map_ctx_t *ctx, cJSON *root)
{
    int                         i, n;
    const char                 *s;
    const cJSON                *key, *events, *ev, *v;
    ngx_http_cio_map_result_t  *res;

    static const char  *once[] = { "api_key", "events", NULL };

    res = ctx->res;

    s = ngx_http_cio_map_twice(root, once);

    if (s != NULL) {
        snprintf(res->error, sizeof(res->error), "%s appears twice", s);
        return -1;
    }

    key = ngx_http_cio_map_get(root, "api_key");

    if (!cJSON_IsString(key) || key->valuestring[0] == '\0') {
        snprintf(res->error, sizeof(res->error), "api_key is missing");
        res->missing_field = "api_key";
        return -1;
    }

    res->write_key = strdup(key->valuestring);
    if (res->write_key == NULL) {
        snprintf(res->error, sizeof(res->error), NGX_HTTP_CIO_MAP_NOMEM);
        return -1;
    }

    events = ngx_http_cio_map_get(root, "events");
    n = ngx_http_cio_map_alloc_calls(ctx, events, "events", "events");

    if (n < 0) {
        return -1;
    }

    ctx->amplitude = 1;
    ctx->user_field = "user_id";
    ctx->anon_field = "device_id";

    /* Amplitude's own default, which the request's options may change */
    v = ngx_http_cio_map_path(root, "options", "min_id_length");
    ctx->min_id_length = (cJSON_IsNumber(v) && v->valuedouble >= 1
                          && v->valuedouble <= 1024)
                         ? (int) v->valuedouble : 5;

    i = 0;

    cJSON_ArrayForEach(ev, events) {
        ngx_http_cio_map_amplitude_event(ctx, ev, &res->calls[i]);
        i++;
    }

    return 0;
}


static void
ngx_http_cio_map_amplitude_event(ngx_http_cio_map_ctx_t *ctx,
    const cJSON *ev, ngx_http_cio_map_call_t *out)
{
    int           i, type;
    cJSON        *call, *props;
    const char   *name, *s;
    const cJSON  *v, *groups, *g;

    static const struct {
        const char  *from;
        const char  *to;
    } copies[] = {
        { "user_id", "userId" },
        { "device_id", "anonymousId" },
        { "time", "timestamp" },
        { NULL, NULL }
    };

    static const char  *once[] = {
        "user_id", "device_id", "event_type", "insert_id", "time",
        "event_properties", "user_properties", "groups", NULL
    };

    if (!cJSON_IsObject(ev)) {
        snprintf(out->error, NGX_HTTP_CIO_MAP_ERRLEN,
                 "event must be a JSON object");
        return;
    }

    s = ngx_http_cio_map_twice(ev, once);

    if (s != NULL) {
        snprintf(out->error, NGX_HTTP_CIO_MAP_ERRLEN, "%s appears twice", s);
        return;
    }

    name = ngx_http_cio_map_str(ngx_http_cio_map_get(ev, "event_type"));

    if (name == NULL || name[0] == '\0') {
        snprintf(out->error, NGX_HTTP_CIO_MAP_ERRLEN,
                 "event_type is required");
        return;
    }

    for (i = 0; i < 2; i++) {
        s = i ? "device_id" : "user_id";

        if (!ngx_http_cio_map_amplitude_id(ctx, ngx_http_cio_map_get(ev, s))) {
            snprintf(out->error, NGX_HTTP_CIO_MAP_ERRLEN, "%s is invalid", s);
            return;
        }
    }

    call = cJSON_CreateObject();
    if (call == NULL) {
        snprintf(out->error, NGX_HTTP_CIO_MAP_ERRLEN, NGX_HTTP_CIO_MAP_NOMEM);
        return;
    }

    for (i = 0; copies[i].from; i++) {
        v = ngx_http_cio_map_get(ev, copies[i].from);

        if (v != NULL) {
            ngx_http_cio_map_add(call, copies[i].to, cJSON_Duplicate(v, 1));
        }
    }

    /*
     * insert_id is Amplitude's dedupe key, as messageId is Segment's, but
     * per device: the same insert_id from two devices is two events
     */
    s = ngx_http_cio_map_str(ngx_http_cio_map_get(ev, "insert_id"));

    if (s != NULL && s[0] != '\0') {
        ngx_http_cio_map_insert_id(call, ev, s);
    }

    if (strcmp(name, "$identify") == 0) {
        type = NGX_HTTP_CIO_CALL_IDENTIFY;
        ngx_http_cio_map_add(call, "traits",
           ngx_http_cio_map_amplitude_props(
               ngx_http_cio_map_get(ev, "user_properties")));

    } else if (strcmp(name, "$groupidentify") == 0) {

        /*
         * One group type naming one group is a Customer.io object; several
         * types, or a list of groups, have no single object to update.
         */
        groups = ngx_http_cio_map_get(ev, "groups");
        g = cJSON_IsObject(groups) ? groups->child : NULL;

        if (g == NULL || g->next != NULL
            || !((cJSON_IsString(g) && g->valuestring[0] != '\0')
                 || cJSON_IsNumber(g)))
        {
            snprintf(out->error, NGX_HTTP_CIO_MAP_ERRLEN,
                     "unsupported event_type");
            out->type = NGX_HTTP_CIO_CALL_GROUP;
            cJSON_Delete(call);
            return;
        }

        type = NGX_HTTP_CIO_CALL_GROUP;
        ngx_http_cio_map_add(call, "groupId", cJSON_Duplicate(g, 1));
        ngx_http_cio_map_add(call, "traits",
           ngx_http_cio_map_amplitude_props(
               ngx_http_cio_map_get(ev, "group_properties")));

    } else {
        type = NGX_HTTP_CIO_CALL_TRACK;
        ngx_http_cio_map_add_str(call, "event", name);

        v = ngx_http_cio_map_get(ev, "event_properties");
        props = cJSON_IsObject(v) ? cJSON_Duplicate(v, 1)
                                  : cJSON_CreateObject();

        /* the spec's nested objects replace same-named event properties */
        v = ngx_http_cio_map_get(ev, "user_properties");

        if (cJSON_IsObject(v)) {
            ngx_http_cio_map_replace(props, "user_properties", v);
        }

        v = ngx_http_cio_map_get(ev, "groups");

        if (cJSON_IsObject(v)) {
            ngx_http_cio_map_replace(props, "groups", v);
        }

        ngx_http_cio_map_add(call, "properties", props);
    }

    ngx_http_cio_map_call(ctx, call, type, out);

    cJSON_Delete(call);
}


/*
 * Amplitude's id rules (docs/mapping.md §5.10): an id shorter than
 * min_id_length or one of the values Amplitude refuses makes the event
 * invalid.  0 for such an id; an absent or empty one is for the identity
 * rules to judge.
 */

/*
 * The dedupe seed of an Amplitude event: its insert_id and its device_id
 * (its user_id without one), as Amplitude dedupes, apart by a byte no
 * id of either holds.
 */

static void
ngx_http_cio_map_insert_id(cJSON *call, const cJSON *ev, const char *iid)
{
    char          num[64], *seed;
    size_t        n;
    const char   *dev;
    const cJSON  *v;

    v = ngx_http_cio_map_get(ev, "device_id");

    if (!cJSON_IsString(v) && !cJSON_IsNumber(v)) {
        v = ngx_http_cio_map_get(ev, "user_id");
    }

    dev = "";

    if (cJSON_IsString(v)) {
        dev = v->valuestring;

    } else if (cJSON_IsNumber(v)
               && ngx_http_cio_map_num_id(v, num, sizeof(num)) == 0)
    {
        dev = num;
    }

    n = strlen(iid) + 1 + strlen(dev) + 1;

    seed = malloc(n);
    if (seed == NULL) {
        ngx_http_cio_map_failed = 1;
        return;
    }

    snprintf(seed, n, "%s\x1f%s", iid, dev);
    ngx_http_cio_map_add_str(call, "messageId", seed);
    free(seed);
}


static int
ngx_http_cio_map_amplitude_id(ngx_http_cio_map_ctx_t *ctx, const cJSON *v)
{
    int          i;
    char         num[64];
    const char  *s;

    static const char  *refused[] = {
        "anonymous", "nil", "none", "null", "n/a", "na", "undefined",
        "unknown", "<unknown>", "0", "-1",
        "00000000-0000-0000-0000-000000000000", NULL
    };

    if (cJSON_IsNumber(v)) {
        if (ngx_http_cio_map_num_id(v, num, sizeof(num)) != 0) {
            return 1;   /* refused by the identity rules, more precisely */
        }

        s = num;

    } else if (cJSON_IsString(v) && v->valuestring[0] != '\0') {
        s = v->valuestring;

    } else {
        return 1;
    }

    if (strlen(s) < (size_t) ctx->min_id_length) {
        return 0;
    }

    for (i = 0; refused[i]; i++) {
        if (strcasecmp(s, refused[i]) == 0) {
            return 0;
        }
    }

    return 1;
}


/*
 * Amplitude user (or group) properties as plain attributes.  Customer.io
 * only sets attributes, so $setOnce, the plain keys and $set are applied
 * in that order (a later one wins a shared key); $add, $append, $unset and
 * the other operators have no Customer.io equivalent and are dropped.
 */

static cJSON *
ngx_http_cio_map_amplitude_props(const cJSON *up)
{
    cJSON        *traits;
    const cJSON  *e, *op;

    traits = cJSON_CreateObject();

    if (traits == NULL || !cJSON_IsObject(up)) {
        return traits;
    }

    op = ngx_http_cio_map_get(up, "$setOnce");

    if (!cJSON_IsObject(op)) {
        op = NULL;
    }

    cJSON_ArrayForEach(e, op) {
        ngx_http_cio_map_replace(traits, e->string, e);
    }

    cJSON_ArrayForEach(e, up) {
        if (e->string != NULL && e->string[0] != '$') {
            ngx_http_cio_map_replace(traits, e->string, e);
        }
    }

    op = ngx_http_cio_map_get(up, "$set");

    if (!cJSON_IsObject(op)) {
        op = NULL;
    }

    cJSON_ArrayForEach(e, op) {
        ngx_http_cio_map_replace(traits, e->string, e);
    }

    return traits;
}


int
ngx_http_cio_map_out_of_memory(const ngx_http_cio_map_result_t *res)
{
    size_t  i;

    if (strcmp(res->error, NGX_HTTP_CIO_MAP_NOMEM) == 0) {
        return 1;
    }

    for (i = 0; i < res->ncalls; i++) {
        if (res->calls[i].error[0] == 'o'
            && strcmp(res->calls[i].error, NGX_HTTP_CIO_MAP_NOMEM) == 0)
        {
            return 1;
        }
    }

    return 0;
}


void
ngx_http_cio_map_result_free(ngx_http_cio_map_result_t *res)
{
    size_t  i;
    int     j;

    for (i = 0; i < res->ncalls; i++) {
        for (j = 0; j < res->calls[i].nitems; j++) {
            free(res->calls[i].item[j]);
        }
    }

    free(res->calls);
    free(res->write_key);

    res->calls = NULL;
    res->write_key = NULL;
    res->ncalls = 0;
}


static void
ngx_http_cio_map_call(ngx_http_cio_map_ctx_t *ctx, cJSON *call, int type,
    ngx_http_cio_map_call_t *out)
{
    int     i, n, rc;
    char   *s;
    cJSON  *items[NGX_HTTP_CIO_MAP_MAX_ITEMS];

    out->type = type;

    items[0] = cJSON_CreateObject();
    items[1] = NULL;

    if (items[0] == NULL) {
        snprintf(out->error, NGX_HTTP_CIO_MAP_ERRLEN, NGX_HTTP_CIO_MAP_NOMEM);
        return;
    }

    if (ngx_http_cio_map_check(ctx, call, out->error) != 0) {
        type = -1;
    }

    switch (type) {

    case -1:
        rc = -1;
        break;

    case NGX_HTTP_CIO_CALL_IDENTIFY:
        rc = ngx_http_cio_map_identify(ctx, call, items[0], out->error);
        break;

    case NGX_HTTP_CIO_CALL_TRACK:
        rc = ngx_http_cio_map_track(ctx, call, items, out->error);
        break;

    case NGX_HTTP_CIO_CALL_PAGE:
        rc = ngx_http_cio_map_page(ctx, call, items[0], out->error);
        break;

    case NGX_HTTP_CIO_CALL_SCREEN:
        rc = ngx_http_cio_map_screen(ctx, call, items[0], out->error);
        break;

    case NGX_HTTP_CIO_CALL_GROUP:
        rc = ngx_http_cio_map_group(ctx, call, items[0], out->error);
        break;

    case NGX_HTTP_CIO_CALL_ALIAS:
        rc = ngx_http_cio_map_alias(call, items[0], out->error);
        break;

    default:
        snprintf(out->error, NGX_HTTP_CIO_MAP_ERRLEN,
                 "call type is missing or unknown");
        rc = -1;
    }

    if (ngx_http_cio_map_failed || errno == ENOMEM) {
        snprintf(out->error, NGX_HTTP_CIO_MAP_ERRLEN,
                 NGX_HTTP_CIO_MAP_NOMEM);
        ngx_http_cio_map_failed = 0;
        errno = 0;
        rc = -1;
    }

    /* only a valid call is filtered: an invalid one is still refused */
    if (rc == 0 && ngx_http_cio_map_filtered(ctx, call, type)) {
        out->filtered = 1;
        ctx->res->nfiltered++;
        cJSON_Delete(items[0]);
        cJSON_Delete(items[1]);
        return;
    }

    n = (items[1] != NULL) ? 2 : 1;

    for (i = 0; rc == 0 && i < n; i++) {
        s = cJSON_PrintUnformatted(items[i]);

        if (s != NULL) {
            s = ngx_http_cio_map_utf8(ctx, s);
        }

        if (s != NULL && ctx->nul) {
            ngx_http_cio_map_nul_restore(s);
        }

        if (s == NULL) {
            snprintf(out->error, NGX_HTTP_CIO_MAP_ERRLEN,
                     NGX_HTTP_CIO_MAP_NOMEM);
            rc = -1;
            break;
        }

        if (ctx->opts->max_item_size
            && strlen(s) > ctx->opts->max_item_size)
        {
            snprintf(out->error, NGX_HTTP_CIO_MAP_ERRLEN,
                     "event is larger than %zu bytes after mapping",
                     ctx->opts->max_item_size);
            free(s);
            rc = -1;
            break;
        }

        out->item[i] = s;
        out->item_len[i] = strlen(s);
        out->nitems = i + 1;
    }

    if (rc != 0) {
        for (i = 0; i < out->nitems; i++) {
            free(out->item[i]);
            out->item[i] = NULL;
        }

        out->nitems = 0;

        if (out->error[0] == '\0') {
            snprintf(out->error, NGX_HTTP_CIO_MAP_ERRLEN, "invalid call");
        }
    }

    cJSON_Delete(items[0]);
    cJSON_Delete(items[1]);
}


/*
 * Whether a track call's name is one that acts on a person or an object
 * instead of recording an event (§5.7, §5.9).  The device names are not:
 * they record their event as well, and an allow list is there to drop
 * such events (Application Opened, at every start of an app).
 */

static int
ngx_http_cio_map_action(ngx_http_cio_map_ctx_t *ctx, const char *name)
{
    static const char  *names[] = {
        "Object Deleted", "Relationship Deleted", "User Deleted",
        "User Suppressed", "User Unsuppressed"
    };

    return !ctx->amplitude
           && ngx_http_cio_map_listed(name, names,
                                      sizeof(names) / sizeof(names[0]));
}


/*
 * The operator's filters.  Event names are matched, exactly and case-
 * sensitively, on event calls only (Segment / RudderStack track, Amplitude
 * event_type), as RudderStack's event filtering does: an allow list of a
 * few event names must not silently drop every page view, screen view and
 * profile update, and "Viewed X Screen" is our name, not the sender's.
 * Nor a deletion or a suppression (ngx_http_cio_map_action()): those
 * are no events to Customer.io; a deny list that names one drops it.
 * Consent denial covers every call type: it is about the person.
 */

static int
ngx_http_cio_map_filtered(ngx_http_cio_map_ctx_t *ctx, const cJSON *call,
    int type)
{
    const char                     *name, *id;
    const cJSON                    *denied, *e;
    const ngx_http_cio_map_opts_t  *opts;

    opts = ctx->opts;

    if (!ctx->amplitude && ngx_http_cio_map_integrations(ctx, call) == 0) {
        return 1;
    }

    if (type == NGX_HTTP_CIO_CALL_TRACK) {
        name = ngx_http_cio_map_str(ngx_http_cio_map_get(call, "event"));

        if (name != NULL) {
            if (opts->nevents_allow
                && !ngx_http_cio_map_listed(name, opts->events_allow,
                                            opts->nevents_allow)
                && !ngx_http_cio_map_action(ctx, name))
            {
                return 1;
            }

            if (ngx_http_cio_map_listed(name, opts->events_deny,
                                        opts->nevents_deny))
            {
                return 1;
            }
        }
    }

    if (opts->nconsent_deny == 0) {
        return 0;
    }

    denied = ngx_http_cio_map_context(ctx, call, "consentManagement",
                                      "deniedConsentIds");

    if (!cJSON_IsArray(denied)) {
        return 0;
    }

    cJSON_ArrayForEach(e, denied) {
        id = ngx_http_cio_map_str(e);

        if (id != NULL
            && ngx_http_cio_map_listed(id, opts->consent_deny,
                                       opts->nconsent_deny))
        {
            return 1;
        }
    }

    return 0;
}


/*
 * Segment's and RudderStack's per-destination switches: 0 when the call
 * must not reach Customer.io.  The Customer.io key decides when present,
 * else "All"; the call's own flags are read before its batch's
 * (docs/mapping.md §8).
 */

static int
ngx_http_cio_map_integrations(ngx_http_cio_map_ctx_t *ctx,
    const cJSON *call)
{
    int           rc;
    const cJSON  *own, *all;

    own = ngx_http_cio_map_get(call, "integrations");

    rc = ngx_http_cio_map_intg_cio(own);

    if (rc != -1) {
        return rc;
    }

    /* the batch's, the same for every call: read once */
    if (ctx->batch_cio == -2) {
        ctx->batch_cio = ngx_http_cio_map_intg_cio(ctx->batch_integrations);
    }

    if (ctx->batch_cio != -1) {
        return ctx->batch_cio;
    }

    all = ngx_http_cio_map_get(own, "All");

    if (all == NULL) {
        all = ngx_http_cio_map_memo(ctx, ctx->batch_integrations, "All");
    }

    return (all != NULL) ? !cJSON_IsFalse(all) : 1;
}


/* the first key of integrations naming Customer.io: 1, 0 if false, -1 */

static int
ngx_http_cio_map_intg_cio(const cJSON *intg)
{
    const cJSON  *e;

    if (!cJSON_IsObject(intg)) {
        return -1;
    }

    cJSON_ArrayForEach(e, intg) {
        if (e->string != NULL && ngx_http_cio_map_is_cio(e->string)) {
            return !cJSON_IsFalse(e);
        }
    }

    return -1;
}


/* an integrations key naming Customer.io, ignoring case and spaces */

int
ngx_http_cio_map_is_cio(const char *key)
{
    char    buf[32];
    size_t  i, n;

    static const char  *names[] = {
        "customer.io",                    /* Segment */
        "customer.iodatapipelines",
        "customer.io(actions)",
        "customerio",                     /* RudderStack: CUSTOMERIO, */
        NULL                              /* Customer IO, customerio */
    };

    n = 0;

    for (i = 0; key[i] != '\0'; i++) {
        if (key[i] == ' ') {
            continue;
        }

        if (n == sizeof(buf) - 1) {
            return 0;
        }

        buf[n++] = (char) ((key[i] >= 'A' && key[i] <= 'Z')
                           ? key[i] - 'A' + 'a' : key[i]);
    }

    buf[n] = '\0';

    for (i = 0; names[i]; i++) {
        if (strcmp(buf, names[i]) == 0) {
            return 1;
        }
    }

    return 0;
}


int
ngx_http_cio_map_listed(const char *name, const char **list, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (list[i] != NULL && strcmp(name, list[i]) == 0) {
            return 1;
        }
    }

    return 0;
}


static int
ngx_http_cio_map_identify(ngx_http_cio_map_ctx_t *ctx, cJSON *call,
    cJSON *item, char *err)
{
    int          known, i;
    cJSON       *ids, *attrs, *rels;
    int64_t      ms;
    const cJSON *traits, *created, *gid;

    ids = ngx_http_cio_map_identity(ctx, call, 1, &known, err);
    if (ids == NULL) {
        return -1;
    }

    traits = ngx_http_cio_map_get(call, "traits");

    if (!cJSON_IsObject(traits)) {
        traits = ngx_http_cio_map_context(ctx, call, "traits", NULL);
    }

    /* Segment's person action relates the person to a group it names */
    gid = ngx_http_cio_map_get(call, "groupId");

    if (!ngx_http_cio_map_present(gid)) {
        gid = ngx_http_cio_map_context(ctx, call, "groupId", NULL);
    }

    rels = NULL;

    if (ngx_http_cio_map_present(gid)) {
        rels = ngx_http_cio_map_relationship(ctx, traits, gid, err);
        if (rels == NULL) {
            cJSON_Delete(ids);
            return -1;
        }
    }

    attrs = ngx_http_cio_map_attrs(ctx, cJSON_IsObject(traits) ? traits
                                                                : NULL);

    if (rels != NULL) {
        cJSON_DeleteItemFromObjectCaseSensitive(attrs, "object_type_id");
        cJSON_DeleteItemFromObjectCaseSensitive(attrs, "objectTypeId");
        cJSON_DeleteItemFromObjectCaseSensitive(attrs,
                                                "relationshipAttributes");
    }

    /*
     * created_at, else createdAt, becomes created_at in seconds: it is
     * Customer.io's own name, so it wins; an empty one is no date
     * (docs/mapping.md §3.3).
     */
    for (i = 0; i < 2; i++) {
        created = ngx_http_cio_map_get(attrs, i ? "createdAt" : "created_at");

        if (cJSON_IsNull(created)
            || (cJSON_IsString(created) && created->valuestring[0] == '\0'))
        {
            cJSON_DeleteItemFromObjectCaseSensitive(attrs, created->string);
            ctx->res->changes++;
        }
    }

    created = ngx_http_cio_map_get(attrs, "created_at");

    if (created == NULL) {
        created = ngx_http_cio_map_get(attrs, "createdAt");
    }

    if (created != NULL
        && ngx_http_cio_map_parse_time(created, &ms) == 0 && ms >= 0)
    {
        cJSON_DeleteItemFromObjectCaseSensitive(attrs, "createdAt");
        ngx_http_cio_map_put(ctx, attrs, "created_at",
                             cJSON_CreateNumber((double) (ms / 1000)));
    }

    ngx_http_cio_map_anonymous(ctx, call, attrs, known);

    ngx_http_cio_map_add_str(item, "type", "person");
    ngx_http_cio_map_add(item, "identifiers", ids);
    ngx_http_cio_map_add_str(item, "action", "identify");
    ngx_http_cio_map_add(item, "attributes", attrs);

    if (rels != NULL) {
        ngx_http_cio_map_add(item, "cio_relationships", rels);
    }

    return 0;
}


/*
 * [{"identifiers": <the object>, "relationship_attributes": ...}] for an
 * identify that names a group (docs/mapping.md §5.1).
 */

static cJSON *
ngx_http_cio_map_relationship(ngx_http_cio_map_ctx_t *ctx,
    const cJSON *traits, const cJSON *gid, char *err)
{
    cJSON        *obj, *rels, *rel;
    const cJSON  *ra;

    obj = ngx_http_cio_map_object(traits, gid, "groupId", err);
    if (obj == NULL) {
        return NULL;
    }

    rels = cJSON_CreateArray();
    rel = cJSON_CreateObject();
    ngx_http_cio_map_add(rel, "identifiers", obj);

    ra = ngx_http_cio_map_get(traits, "relationshipAttributes");

    if (cJSON_IsObject(ra)) {
        ngx_http_cio_map_add(rel, "relationship_attributes",
                             ngx_http_cio_map_attrs(ctx, ra));
    }

    ngx_http_cio_map_add_elt(rels, rel);

    return rels;
}


static int
ngx_http_cio_map_track(ngx_http_cio_map_ctx_t *ctx, cJSON *call,
    cJSON **items, char *err)
{
    int           known, add, del, i;
    char         *token_s;
    cJSON        *ids, *attrs, *device;
    size_t        n;
    const char   *name, *action;
    const cJSON  *props, *token;

    static const char  *adds[] = {
        "Application Installed", "Application Opened",
        "Device Created or Updated", NULL
    };
    static const char  *dels[] = {
        "Application Uninstalled", "Device Deleted", NULL
    };

    name = ngx_http_cio_map_str(ngx_http_cio_map_get(call, "event"));

    if (name == NULL || name[0] == '\0') {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, "event is required");
        return -1;
    }

    if (!ctx->amplitude
        && (strcmp(name, "Object Deleted") == 0
            || strcmp(name, "Relationship Deleted") == 0))
    {
        return ngx_http_cio_map_deleted(ctx, call, items[0], name, err);
    }

    ids = ngx_http_cio_map_identity(ctx, call, 0, &known, err);
    if (ids == NULL) {
        return -1;
    }

    /*
     * The person-level and device special events are Segment-spec
     * semantics; an Amplitude event_type is always just an event.
     */

    action = NULL;

    if (ctx->amplitude) {
        /* void */

    } else if (strcmp(name, "User Deleted") == 0) {
        action = "delete";

    } else if (strcmp(name, "User Suppressed") == 0) {
        action = "suppress";

    } else if (strcmp(name, "User Unsuppressed") == 0) {
        action = "unsuppress";
    }

    if (action != NULL) {
        if (!known) {
            cJSON_Delete(ids);
            snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN,
                     "\"%s\" needs a userId", name);
            return -1;
        }

        ngx_http_cio_map_add_str(items[0], "type", "person");
        ngx_http_cio_map_add(items[0], "identifiers", ids);
        ngx_http_cio_map_add_str(items[0], "action", action);
        return 0;
    }

    props = ngx_http_cio_map_get(call, "properties");
    attrs = ngx_http_cio_map_attrs(ctx, cJSON_IsObject(props) ? props
                                                              : NULL);

    add = 0;
    del = 0;

    if (!ctx->amplitude) {
        for (i = 0; adds[i]; i++) {
            add |= (strcmp(name, adds[i]) == 0);
        }

        for (n = 0; n < ctx->opts->ndevice_events; n++) {
            add |= (strcmp(name, ctx->opts->device_events[n]) == 0);
        }

        for (i = 0; dels[i]; i++) {
            del |= (strcmp(name, dels[i]) == 0);
        }
    }

    token = ngx_http_cio_map_context(ctx, call, "device", NULL);
    token = ngx_http_cio_map_get(token, "token");
    token_s = (char *) ngx_http_cio_map_str(token);

    if ((add || del) && known && token_s != NULL && token_s[0] != '\0') {

        /* a token names a device as an id names a person: never changed */
        if (!ngx_http_cio_map_utf8_valid(token_s)) {
            snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN,
                     "context.device.token is not valid UTF-8");
            cJSON_Delete(ids);
            cJSON_Delete(attrs);
            return -1;
        }

        device = ngx_http_cio_map_device(ctx, call, attrs, add, token_s);

        ngx_http_cio_map_add_str(items[0], "type", "person");
        ngx_http_cio_map_add(items[0], "identifiers",
                             cJSON_Duplicate(ids, 1));
        ngx_http_cio_map_add_str(items[0], "action",
                                 add ? "add_device" : "delete_device");
        ngx_http_cio_map_add(items[0], "device", device);

        items[1] = cJSON_CreateObject();

        ngx_http_cio_map_add_str(items[1], "type", "person");
        ngx_http_cio_map_add(items[1], "identifiers", ids);
        ngx_http_cio_map_event(ctx, call, items[1], "event", name, attrs,
                               known);
        return 0;
    }

    ngx_http_cio_map_add_str(items[0], "type", "person");
    ngx_http_cio_map_add(items[0], "identifiers", ids);
    ngx_http_cio_map_event(ctx, call, items[0], "event", name, attrs, known);

    return 0;
}


/*
 * The device of an add_device or delete_device item: the token, and for
 * add_device the platform, last use and attributes (docs/mapping.md §5.8).
 */

static cJSON *
ngx_http_cio_map_device(ngx_http_cio_map_ctx_t *ctx, cJSON *call,
    cJSON *attrs, int add, const char *token_s)
{
    int           i;
    cJSON        *device, *dattrs;
    int64_t       ms;
    const char   *type, *s;
    const cJSON  *e;

    device = cJSON_CreateObject();
    ngx_http_cio_map_add_str(device, "token", token_s);

    if (add) {
        type = ngx_http_cio_map_str(
                   ngx_http_cio_map_context(ctx, call, "device", "type"));

        if (type != NULL) {
            char  buf[64];

            snprintf(buf, sizeof(buf), "%s", type);

            for (i = 0; buf[i]; i++) {
                if (buf[i] >= 'A' && buf[i] <= 'Z') {
                    buf[i] = (char) (buf[i] - 'A' + 'a');
                }
            }

            if (strcmp(buf, "ios") == 0 || strcmp(buf, "ipados") == 0
                || strcmp(buf, "watchos") == 0
                || strcmp(buf, "tvos") == 0)
            {
                snprintf(buf, sizeof(buf), "ios");
            }

            ngx_http_cio_map_add_str(device, "platform", buf);
        }

        ms = ngx_http_cio_map_time(ctx, call, NULL, 0);
        ngx_http_cio_map_add_num(device, "last_used",
                                 (double) (ms / 1000));

        dattrs = cJSON_CreateObject();

        s = ngx_http_cio_map_str(ngx_http_cio_map_context(ctx, call,
                                                          "os", "name"));
        if (s) {
            ngx_http_cio_map_add_str(dattrs, "device_os", s);
        }

        s = ngx_http_cio_map_str(ngx_http_cio_map_context(ctx, call,
                                                          "device", "model"));
        if (s) {
            ngx_http_cio_map_add_str(dattrs, "device_model", s);
        }

        s = ngx_http_cio_map_str(ngx_http_cio_map_context(ctx, call,
                                                          "app", "version"));
        if (s) {
            ngx_http_cio_map_add_str(dattrs, "app_version", s);
        }

        s = ngx_http_cio_map_str(ngx_http_cio_map_context(ctx, call,
                                                          "locale", NULL));
        if (s) {
            ngx_http_cio_map_add_str(dattrs, "device_locale", s);
        }

        /* properties win over the context fields; 300 at most */
        cJSON_ArrayForEach(e, attrs) {
            if (cJSON_GetObjectItemCaseSensitive(dattrs, e->string)
                == NULL
                && cJSON_GetArraySize(dattrs)
                   >= NGX_HTTP_CIO_MAP_MAX_ATTRS)
            {
                ctx->res->changes++;
                continue;
            }

            ngx_http_cio_map_replace(dattrs, e->string, e);
        }

        ngx_http_cio_map_add(device, "attributes", dattrs);
    }

    return device;
}


static int
ngx_http_cio_map_page(ngx_http_cio_map_ctx_t *ctx, cJSON *call,
    cJSON *item, char *err)
{
    int           known;
    cJSON        *ids, *attrs;
    const char   *name;
    const cJSON  *props;

    props = ngx_http_cio_map_get(call, "properties");

    name = ngx_http_cio_map_str(ngx_http_cio_map_get(call, "name"));

    if (name == NULL || name[0] == '\0') {
        name = ngx_http_cio_map_str(ngx_http_cio_map_get(props, "url"));
    }

    if (name == NULL || name[0] == '\0') {
        name = ngx_http_cio_map_str(ngx_http_cio_map_context(ctx, call,
                                                             "page", "url"));

        /* the others were checked with every name (§7.6) */
        if (ctx->nul && name != NULL && strchr(name, '\x01') != NULL) {
            snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN,
                     "context.page.url contains a \\u0000 escape");
            return -1;
        }
    }

    if (name == NULL || name[0] == '\0') {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, "page needs a name or a url");
        return -1;
    }

    ids = ngx_http_cio_map_identity(ctx, call, 0, &known, err);
    if (ids == NULL) {
        return -1;
    }

    attrs = ngx_http_cio_map_attrs(ctx, cJSON_IsObject(props) ? props
                                                              : NULL);

    ngx_http_cio_map_add_str(item, "type", "person");
    ngx_http_cio_map_add(item, "identifiers", ids);
    ngx_http_cio_map_event(ctx, call, item, "page", name, attrs, known);

    return 0;
}


static int
ngx_http_cio_map_screen(ngx_http_cio_map_ctx_t *ctx, cJSON *call,
    cJSON *item, char *err)
{
    int           known;
    char          buf[NGX_HTTP_CIO_MAP_MAX_NAME * 2 + 32], *x;
    cJSON        *ids, *attrs;
    size_t        len, max;
    const char   *name;
    const cJSON  *props;

    props = ngx_http_cio_map_get(call, "properties");

    name = ngx_http_cio_map_str(ngx_http_cio_map_get(call, "name"));

    if (name == NULL || name[0] == '\0') {
        name = ngx_http_cio_map_str(ngx_http_cio_map_get(props, "name"));
    }

    if (name == NULL || name[0] == '\0') {
        name = ngx_http_cio_map_str(ngx_http_cio_map_get(call, "event"));
    }

    if (name == NULL || name[0] == '\0') {
        name = ctx->opts->screen_native ? NULL : "Undefined";
    }

    ids = ngx_http_cio_map_identity(ctx, call, 0, &known, err);
    if (ids == NULL) {
        return -1;
    }

    attrs = ngx_http_cio_map_attrs(ctx, cJSON_IsObject(props) ? props
                                                              : NULL);

    ngx_http_cio_map_add_str(item, "type", "person");
    ngx_http_cio_map_add(item, "identifiers", ids);

    if (ctx->opts->screen_native) {
        ngx_http_cio_map_event(ctx, call, item, "screen",
                               name ? name : "Undefined", attrs, known);
        return 0;
    }

    /* the whole "Viewed X Screen" fits the limit: X is what gets cut */
    max = NGX_HTTP_CIO_MAP_MAX_NAME - (sizeof("Viewed  Screen") - 1);

    x = ngx_http_cio_map_cut(name, max, &len);
    if (x == NULL) {
        cJSON_Delete(attrs);
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, NGX_HTTP_CIO_MAP_NOMEM);
        return -1;
    }

    if (len < strlen(name)) {
        ctx->res->changes++;
    }

    snprintf(buf, sizeof(buf), "Viewed %s Screen", x);
    free(x);

    ngx_http_cio_map_event(ctx, call, item, "event", buf, attrs, known);

    return 0;
}


static int
ngx_http_cio_map_group(ngx_http_cio_map_ctx_t *ctx, cJSON *call,
    cJSON *item, char *err)
{
    int           known, i;
    cJSON        *ids, *obj, *attrs, *rels, *rel;
    const char   *action, *a;
    const cJSON  *gid, *traits, *ra;

    static const char  *actions[] = {
        "identify", "identify_anonymous", "delete", "add_relationships",
        "delete_relationships", NULL
    };

    gid = ngx_http_cio_map_get(call, "groupId");

    if (!ngx_http_cio_map_present(gid)) {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, "groupId is required");
        return -1;
    }

    traits = ngx_http_cio_map_get(call, "traits");

    /* an Amplitude $groupidentify names its group in "groups" */
    obj = ngx_http_cio_map_object(traits, gid,
                                  ctx->amplitude ? "groups" : "groupId", err);
    if (obj == NULL) {
        return -1;
    }

    ids = ngx_http_cio_map_identity(ctx, call, 0, &known, err);
    if (ids == NULL) {
        cJSON_Delete(obj);
        return -1;
    }

    /* RudderStack's traits.action names the object action (§5.5) */
    action = known ? "identify" : "identify_anonymous";
    a = ctx->amplitude ? NULL
                       : ngx_http_cio_map_str(ngx_http_cio_map_get(traits,
                                                                  "action"));

    for (i = 0; a != NULL && actions[i]; i++) {
        if (strcmp(a, actions[i]) == 0) {
            action = actions[i];
            break;
        }
    }

    attrs = ngx_http_cio_map_attrs(ctx, cJSON_IsObject(traits) ? traits
                                                               : NULL);
    cJSON_DeleteItemFromObjectCaseSensitive(attrs, "object_type_id");
    cJSON_DeleteItemFromObjectCaseSensitive(attrs, "objectTypeId");
    cJSON_DeleteItemFromObjectCaseSensitive(attrs, "relationshipAttributes");

    if (a != NULL && actions[i] != NULL) {
        cJSON_DeleteItemFromObjectCaseSensitive(attrs, "action");
    }

    rels = cJSON_CreateArray();
    rel = cJSON_CreateObject();
    ngx_http_cio_map_add(rel, "identifiers", ids);

    ra = ngx_http_cio_map_get(traits, "relationshipAttributes");

    if (cJSON_IsObject(ra)) {
        ngx_http_cio_map_add(rel, "relationship_attributes",
                             ngx_http_cio_map_attrs(ctx, ra));
    }

    ngx_http_cio_map_add_elt(rels, rel);

    ngx_http_cio_map_add_str(item, "type", "object");
    ngx_http_cio_map_add(item, "identifiers", obj);
    ngx_http_cio_map_add_str(item, "action", action);

    /* a deletion names the object only; relationship changes no attributes */
    if (strcmp(action, "delete") == 0) {
        cJSON_Delete(attrs);
        cJSON_Delete(rels);
        return 0;
    }

    if (strstr(action, "relationships") != NULL) {
        cJSON_Delete(attrs);

    } else {
        ngx_http_cio_map_add(item, "attributes", attrs);
    }

    ngx_http_cio_map_add(item, "cio_relationships", rels);

    return 0;
}


/*
 * Segment's reserved "Object Deleted" and "Relationship Deleted" track
 * events act on the object, as Segment's Customer.io destination does;
 * the event itself is not sent (docs/mapping.md §5.9).
 */

static int
ngx_http_cio_map_deleted(ngx_http_cio_map_ctx_t *ctx, cJSON *call,
    cJSON *item, const char *name, char *err)
{
    int           i, known, rel;
    cJSON        *obj, *ids, *rels, *r;
    const cJSON  *props, *v, *from[3];

    static const char  *fields[2][3] = {
        { "properties.objectId", "groupId", "context.groupId" },
        { "context.groupId", "groupId", "properties.objectId" }
    };

    rel = (name[0] == 'R');
    props = ngx_http_cio_map_get(call, "properties");

    from[0] = ngx_http_cio_map_get(props, "objectId");
    from[1] = ngx_http_cio_map_get(call, "groupId");
    from[2] = ngx_http_cio_map_context(ctx, call, "groupId", NULL);

    if (rel) {
        v = from[0];
        from[0] = from[2];
        from[2] = v;
    }

    for (i = 0; i < 3; i++) {
        if (ngx_http_cio_map_present(from[i])) {
            break;
        }
    }

    if (i == 3) {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN,
                 "\"%s\" needs an objectId or groupId", name);
        return -1;
    }

    obj = ngx_http_cio_map_object(props, from[i], fields[rel][i], err);
    if (obj == NULL) {
        return -1;
    }

    ngx_http_cio_map_add_str(item, "type", "object");
    ngx_http_cio_map_add(item, "identifiers", obj);

    if (!rel) {
        ngx_http_cio_map_add_str(item, "action", "delete");
        return 0;
    }

    ids = ngx_http_cio_map_identity(ctx, call, 0, &known, err);
    if (ids == NULL) {
        return -1;
    }

    rels = cJSON_CreateArray();
    r = cJSON_CreateObject();
    ngx_http_cio_map_add(r, "identifiers", ids);
    ngx_http_cio_map_add_elt(rels, r);

    ngx_http_cio_map_add_str(item, "action", "delete_relationships");
    ngx_http_cio_map_add(item, "cio_relationships", rels);

    return 0;
}


/*
 * An object's identifiers: {object_type_id, object_id}, the type from
 * src's object_type_id, else objectTypeId, else "1".  Both are strings in
 * v2; a number is the same id as text.
 */

static cJSON *
ngx_http_cio_map_object(const cJSON *src, const cJSON *id,
    const char *field, char *err)
{
    char          num[64], tnum[64];
    cJSON        *obj;
    const char   *oid, *otype;
    const cJSON  *t;

    if (cJSON_IsNumber(id)) {
        if (ngx_http_cio_map_num_id(id, num, sizeof(num)) != 0) {
            snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN,
                     "%s is a number too large to be exact", field);
            return NULL;
        }

        oid = num;

    } else {
        oid = ngx_http_cio_map_str(id);
    }

    if (oid == NULL || oid[0] == '\0') {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, "%s is required", field);
        return NULL;
    }

    if (ngx_http_cio_map_id_text(oid, field, err) != 0) {
        return NULL;
    }

    t = ngx_http_cio_map_get(src, "object_type_id");

    /* an empty one is absent, as the JavaScript peers' || has it */
    if (!((cJSON_IsString(t) && t->valuestring[0] != '\0')
          || cJSON_IsNumber(t)))
    {
        t = ngx_http_cio_map_get(src, "objectTypeId");
    }

    otype = ngx_http_cio_map_str(t);

    if (cJSON_IsNumber(t)
        && ngx_http_cio_map_num_id(t, tnum, sizeof(tnum)) == 0)
    {
        otype = tnum;
    }

    if (otype != NULL && otype[0] == '\0') {
        otype = NULL;
    }

    /* it names the object as much as its id does */
    if (otype != NULL
        && ngx_http_cio_map_id_text(otype, "object_type_id", err) != 0)
    {
        return NULL;
    }

    obj = cJSON_CreateObject();
    if (obj == NULL) {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, NGX_HTTP_CIO_MAP_NOMEM);
        return NULL;
    }

    ngx_http_cio_map_add_str(obj, "object_type_id", otype ? otype : "1");
    ngx_http_cio_map_add_str(obj, "object_id", oid);

    return obj;
}


/* a usable id value: a number, or a non-empty string */

static int
ngx_http_cio_map_present(const cJSON *v)
{
    return cJSON_IsNumber(v)
           || (cJSON_IsString(v) && v->valuestring[0] != '\0');
}


static int
ngx_http_cio_map_alias(cJSON *call, cJSON *item, char *err)
{
    cJSON        *primary, *secondary;
    const cJSON  *user, *prev;

    user = ngx_http_cio_map_get(call, "userId");
    prev = ngx_http_cio_map_get(call, "previousId");

    if (!ngx_http_cio_map_user(user) || !ngx_http_cio_map_user(prev)) {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN,
                 "alias needs userId and previousId");
        return -1;
    }

    primary = ngx_http_cio_map_resolve(user, "userId", err);
    if (primary == NULL) {
        return -1;
    }

    secondary = ngx_http_cio_map_resolve(prev, "previousId", err);
    if (secondary == NULL) {
        cJSON_Delete(primary);
        return -1;
    }

    ngx_http_cio_map_add_str(item, "type", "person");
    ngx_http_cio_map_add_str(item, "action", "merge");
    ngx_http_cio_map_add(item, "primary", primary);
    ngx_http_cio_map_add(item, "secondary", secondary);

    return 0;
}


/*
 * The e-mail an identify without a userId names its person by: traits'
 * (context 0) or the context's traits' (context 1, the call's own
 * context, else its batch's); err set when the object that holds it, or
 * the context that holds that, holds it twice (§7.8).
 */

static const cJSON *
ngx_http_cio_map_email(ngx_http_cio_map_ctx_t *ctx, const cJSON *call,
    int context, char *err)
{
    const char   *what;
    const cJSON  *c, *t;

    static const char  *traits[] = { "traits", NULL };
    static const char  *email[] = { "email", NULL };

    what = NULL;

    if (!context) {
        t = ngx_http_cio_map_get(call, "traits");

    } else {
        c = ngx_http_cio_map_get(call, "context");

        if (ngx_http_cio_map_get(c, "traits") == NULL) {
            c = ctx->batch_context;
        }

        what = ngx_http_cio_map_twice(c, traits) ? "context.traits" : NULL;
        t = ngx_http_cio_map_context(ctx, call, "traits", NULL);
    }

    if (what == NULL && ngx_http_cio_map_twice(t, email) != NULL) {
        what = context ? "context.traits.email" : "traits.email";
    }

    if (what != NULL) {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, "%s appears twice", what);
        return NULL;
    }

    return ngx_http_cio_map_get(t, "email");
}


/*
 * userId, else (Segment identify only) traits.email then
 * context.traits.email, else anonymousId.  *known says whether a person,
 * not an anonymous visitor, was named.  Amplitude events arrive here with
 * user_id and device_id in those places; their identity is user_id, else
 * device_id, with no e-mail fallback (docs/mapping.md §2, §5.10).
 */

static cJSON *
ngx_http_cio_map_identity(ngx_http_cio_map_ctx_t *ctx, cJSON *call,
    int identify, int *known, char *err)
{
    char          num[64];
    cJSON        *o;
    const char   *s;
    const cJSON  *v;

    *known = 1;

    v = ngx_http_cio_map_get(call, "userId");

    if (ngx_http_cio_map_user(v)) {
        return ngx_http_cio_map_resolve(v, ctx->user_field, err);
    }

    if (identify && !ctx->amplitude) {
        v = ngx_http_cio_map_email(ctx, call, 0, err);

        if (ngx_http_cio_map_str(v) == NULL || v->valuestring[0] == '\0') {
            v = ngx_http_cio_map_email(ctx, call, 1, err);
        }

        if (err[0] != '\0') {
            return NULL;
        }

        if (ngx_http_cio_map_str(v) != NULL && v->valuestring[0] != '\0') {
            if (ngx_http_cio_map_id_text(v->valuestring, "email", err)
                != 0)
            {
                return NULL;
            }

            o = cJSON_CreateObject();
            ngx_http_cio_map_add_str(o, "email", v->valuestring);

            return o;
        }
    }

    *known = 0;

    v = ngx_http_cio_map_get(call, "anonymousId");
    s = "";

    if (ngx_http_cio_map_present(v)) {
        if (cJSON_IsNumber(v)) {
            if (ngx_http_cio_map_num_id(v, num, sizeof(num)) != 0) {
                snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN,
                         "%s is a number too large to be exact",
                         ctx->anon_field);
                return NULL;
            }

            s = num;

        } else {
            s = v->valuestring;
        }
    }

    if (s[0] != '\0' && !ngx_http_cio_map_placeholder(s)) {

        if (ngx_http_cio_map_id_text(s, ctx->anon_field, err) != 0) {
            return NULL;
        }

        o = cJSON_CreateObject();
        ngx_http_cio_map_add_str(o, "anonymous_id", s);

        return o;
    }

    snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, "%s or %s is required",
             ctx->user_field, ctx->anon_field);

    return NULL;
}


/* one identifier: cio_ prefix -> cio_id, e-mail shape -> email, else id */

static cJSON *
ngx_http_cio_map_resolve(const cJSON *v, const char *field, char *err)
{
    char         num[64];
    cJSON       *o;
    const char  *s;

    if (cJSON_IsNumber(v)
        && ngx_http_cio_map_num_id(v, num, sizeof(num)) != 0)
    {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN,
                 "%s is a number too large to be exact", field);
        return NULL;
    }

    o = cJSON_CreateObject();
    if (o == NULL) {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, NGX_HTTP_CIO_MAP_NOMEM);
        return NULL;
    }

    /*
     * Numbers stay numbers: Customer.io takes both, and so do the SDKs.
     * Written as their exact decimal text: cJSON's printer would write
     * 9007199254740989 as 9.00719925474099e+15, another person.
     */
    if (cJSON_IsNumber(v)) {
        if (cJSON_AddRawToObject(o, "id", num) == NULL) {
            snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, NGX_HTTP_CIO_MAP_NOMEM);
            cJSON_Delete(o);
            return NULL;
        }

        return o;
    }

    s = v->valuestring;

    if (ngx_http_cio_map_id_text(s, field, err) != 0) {
        cJSON_Delete(o);
        return NULL;
    }

    if (strncmp(s, "cio_", 4) == 0 && s[4] != '\0') {
        ngx_http_cio_map_add_str(o, "cio_id", s + 4);

    } else if (ngx_http_cio_map_is_email(s)) {
        ngx_http_cio_map_add_str(o, "email", s);

    } else {
        ngx_http_cio_map_add_str(o, "id", s);
    }

    return o;
}


/*
 * A JSON number used as an id, as text.  cJSON keeps only a double: from
 * 2^53 on, an integer may have lost digits (2^53 + 1 reads as 2^53) and
 * would name somebody else, so it is refused (-1).  Integers print with
 * no exponent, others in the shortest form that reads back the same.
 */

static int
ngx_http_cio_map_num_id(const cJSON *v, char *buf, size_t size)
{
    return ngx_http_cio_map_num_text(v->valuedouble, buf, size);
}


/* the same for the fast path, which reads the number itself */

int
ngx_http_cio_map_num_text(double d, char *buf, size_t size)
{
    if (!(d > -NGX_HTTP_CIO_MAX_EXACT && d < NGX_HTTP_CIO_MAX_EXACT)) {
        return -1;
    }

    if (d == floor(d)) {
        snprintf(buf, size, "%.0f", d);
        return 0;
    }

    snprintf(buf, size, "%.15g", d);

    if (strtod(buf, NULL) != d) {
        snprintf(buf, size, "%.17g", d);
    }

    return 0;
}


/*
 * A known person's call that also carries anonymousId: attributes get
 * anonymous_id so that Customer.io merges the anonymous activity.  One
 * too long to have been an identifier cannot name that activity.
 */

static void
ngx_http_cio_map_anonymous(ngx_http_cio_map_ctx_t *ctx, cJSON *call,
    cJSON *attrs, int known)
{
    char          num[64];
    const char   *s;
    const cJSON  *v;

    if (!known) {
        return;
    }

    v = ngx_http_cio_map_get(call, "anonymousId");

    if (cJSON_IsString(v)) {
        s = v->valuestring;

    } else if (cJSON_IsNumber(v)
               && ngx_http_cio_map_num_id(v, num, sizeof(num)) == 0)
    {
        s = num;

    } else {
        return;
    }

    if (s[0] == '\0' || ngx_http_cio_map_placeholder(s)) {
        return;
    }

    /* as an identifier it would have been refused (§2) */
    if (!ngx_http_cio_map_id_ok(s, strlen(s))) {
        ctx->res->changes++;
        return;
    }

    ngx_http_cio_map_put(ctx, attrs, "anonymous_id", cJSON_CreateString(s));
}


/*
 * An anonymousId made only of zeros and dashes is what some SDKs send
 * before they have an id: every such visitor would be one person
 * (docs/mapping.md §2).
 */

int
ngx_http_cio_map_placeholder(const char *s)
{
    return s[0] != '\0' && s[strspn(s, "0-")] == '\0';
}


/* a userId that names someone: "" and a bare "cio_" do not (§2) */

static int
ngx_http_cio_map_user(const cJSON *v)
{
    return ngx_http_cio_map_present(v)
           && !(cJSON_IsString(v) && strcmp(v->valuestring, "cio_") == 0);
}


/*
 * An attribute the module itself sets (created_at, anonymous_id): it
 * replaces one of the same name, and when 300 are there already the last
 * of the sender's gives way, so the item stays within Customer.io's limit.
 */

static void
ngx_http_cio_map_put(ngx_http_cio_map_ctx_t *ctx, cJSON *attrs,
    const char *name, cJSON *v)
{
    cJSON  *e, *last;

    if (v == NULL) {
        return;
    }

    if (cJSON_GetObjectItemCaseSensitive(attrs, name) != NULL) {
        cJSON_DeleteItemFromObjectCaseSensitive(attrs, name);

    } else if (cJSON_GetArraySize(attrs) >= NGX_HTTP_CIO_MAP_MAX_ATTRS) {
        last = NULL;

        cJSON_ArrayForEach(e, attrs) {
            if (strcmp(e->string, "created_at") != 0
                && strcmp(e->string, "anonymous_id") != 0)
            {
                last = e;
            }
        }

        if (last != NULL) {
            cJSON_Delete(cJSON_DetachItemViaPointer(attrs, last));
            ctx->res->changes++;
        }
    }

    ngx_http_cio_map_add(attrs, name, v);
}


/* o[name] = a copy of v, in place of any o[name] there was */

static void
ngx_http_cio_map_replace(cJSON *o, const char *name, const cJSON *v)
{
    cJSON  *copy;

    copy = cJSON_Duplicate(v, 1);
    if (copy == NULL) {
        return;
    }

    cJSON_DeleteItemFromObjectCaseSensitive(o, name);
    ngx_http_cio_map_add(o, name, copy);
}


/*
 * "local@domain.tld": one "@", something before it, a dot inside the
 * domain, no white space.  Customer.io only needs to tell e-mail
 * addresses from ids, not to validate them.
 */

int
ngx_http_cio_map_is_email(const char *s)
{
    const char  *at, *dot, *p;

    at = strchr(s, '@');

    if (at == NULL || at == s || strchr(at + 1, '@') != NULL) {
        return 0;
    }

    for (p = s; *p; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
            return 0;
        }
    }

    dot = strrchr(at + 1, '.');

    return dot != NULL && dot > at + 1 && dot[1] != '\0';
}


/* name, id, timestamp and attributes of an event, page or screen item */

static void
ngx_http_cio_map_event(ngx_http_cio_map_ctx_t *ctx, cJSON *call,
    cJSON *item, const char *action, const char *name, cJSON *attrs,
    int known)
{
    char         *cut, *canon, ulid[27];
    cJSON        *sent;
    size_t        len;
    int64_t       ms, own;
    const char   *seed;
    const cJSON  *mid;

    cut = ngx_http_cio_map_cut(name, NGX_HTTP_CIO_MAP_MAX_NAME, &len);

    if (cut != NULL && len < strlen(name)) {
        ctx->res->changes++;
    }

    ms = ngx_http_cio_map_time(ctx, call, &own, 1);

    /*
     * The same call sent twice gets the same id, so Customer.io dedupes
     * it: the id's time is the call's own, not the skew-corrected one,
     * and without one it comes from the hash, not the arrival (§4).
     */
    mid = ngx_http_cio_map_get(call, "messageId");
    seed = ngx_http_cio_map_str(mid);
    canon = NULL;

    if (seed == NULL || seed[0] == '\0') {
        /* the event, not its transport: a resend has a new sentAt */
        sent = cJSON_DetachItemFromObjectCaseSensitive(call, "sentAt");
        canon = ngx_http_cio_map_canon(ctx, call);
        seed = canon ? canon : "";

        if (sent != NULL) {
            ngx_http_cio_map_add(call, "sentAt", sent);
        }
    }

    ngx_http_cio_map_ulid(own, seed, strlen(seed), ulid);
    free(canon);

    ngx_http_cio_map_anonymous(ctx, call, attrs, known);

    ngx_http_cio_map_add_str(item, "action", action);
    ngx_http_cio_map_add_str(item, "name", cut ? cut : "");
    ngx_http_cio_map_add_str(item, "id", ulid);
    ngx_http_cio_map_add_num(item, "timestamp", (double) (ms / 1000));
    ngx_http_cio_map_add(item, "attributes", attrs);

    free(cut);
}


/*
 * A copy of traits or properties within Customer.io's limits: names over
 * 150 bytes dropped, the first 300 kept, strings cut to 1000 bytes, and
 * ISO-8601 strings turned into unix seconds.
 */

static cJSON *
ngx_http_cio_map_attrs(ngx_http_cio_map_ctx_t *ctx, const cJSON *src)
{
    int           n;
    cJSON        *attrs, *v;
    const cJSON  *e;

    attrs = cJSON_CreateObject();

    if (src == NULL || attrs == NULL) {
        return attrs;
    }

    n = 0;

    cJSON_ArrayForEach(e, src) {

        if (e->string == NULL) {
            continue;
        }

        if (strlen(e->string) > NGX_HTTP_CIO_MAP_MAX_ATTR_NAME
            || n >= NGX_HTTP_CIO_MAP_MAX_ATTRS)
        {
            ctx->res->changes++;
            continue;
        }

        /* a duplicate key keeps its first value; "a" and "A" differ */
        if (cJSON_GetObjectItemCaseSensitive(attrs, e->string) != NULL) {
            continue;
        }

        v = cJSON_Duplicate(e, 1);
        if (v == NULL) {
            continue;
        }

        ngx_http_cio_map_values(ctx, v, 0);

        ngx_http_cio_map_add(attrs, e->string, v);
        n++;
    }

    return attrs;
}


static void
ngx_http_cio_map_values(ngx_http_cio_map_ctx_t *ctx, cJSON *v, int depth)
{
    char     *cut;
    size_t    len;
    int64_t   ms;
    cJSON    *e, *next;

    if (cJSON_IsString(v)) {
        if (ctx->opts->convert_timestamps
            && ngx_http_cio_map_iso8601(v->valuestring, &ms) == 0)
        {
            /* in place: the key and its position stay */
            free(v->valuestring);
            v->valuestring = NULL;
            v->type = cJSON_Number;
            cJSON_SetNumberValue(v, (double) (ms >= 0 ? ms / 1000
                                                      : -((999 - ms)
                                                          / 1000)));
            return;
        }

        if (strlen(v->valuestring) > NGX_HTTP_CIO_MAP_MAX_ATTR_VALUE) {
            cut = ngx_http_cio_map_cut(v->valuestring,
                                       NGX_HTTP_CIO_MAP_MAX_ATTR_VALUE, &len);
            if (cut != NULL) {
                free(v->valuestring);
                v->valuestring = cut;
                ctx->res->changes++;
            }
        }

        return;
    }

    if (depth >= NGX_HTTP_CIO_MAP_MAX_NESTING) {
        return;
    }

    for (e = v->child; e != NULL; e = next) {
        next = e->next;

        /* the name limit holds at every depth, as the value limit does */
        if (cJSON_IsObject(v) && e->string != NULL
            && strlen(e->string) > NGX_HTTP_CIO_MAP_MAX_ATTR_NAME)
        {
            cJSON_Delete(cJSON_DetachItemViaPointer(v, e));
            ctx->res->changes++;
            continue;
        }

        ngx_http_cio_map_values(ctx, e, depth + 1);
    }
}


/*
 * timestamp, else originalTimestamp, else arrival; with sentAt the
 * client's clock skew is taken out: received - (sentAt - time).  *own,
 * when asked for, is the time as the call itself states it, before that
 * correction (-1 when it states none a ULID can hold): a resend has
 * another sentAt and arrival, so the corrected time moves by the
 * network's jitter while this one stays.  An event time before 1970 or
 * more than a year past the arrival is impossible: the stated one without
 * sentAt, the corrected one with it (a wrong client clock is what sentAt
 * corrects, so only the result is judged).  It gives the arrival, counted
 * as a change when count is set (docs/mapping.md §3.1).
 */

static int64_t
ngx_http_cio_map_time(ngx_http_cio_map_ctx_t *ctx, cJSON *call,
    int64_t *own, int count)
{
    int64_t       ms, sent, recv;
    const cJSON  *v, *s;

    recv = ctx->opts->received_ms;

    if (own) {
        *own = -1;
    }

    v = ngx_http_cio_map_get(call, "timestamp");

    if (ngx_http_cio_map_parse_time(v, &ms) != 0) {
        v = ngx_http_cio_map_get(call, "originalTimestamp");

        if (ngx_http_cio_map_parse_time(v, &ms) != 0) {
            return recv;
        }
    }

    if (own && ms >= 0 && ms < (1LL << 48)) {
        *own = ms;
    }

    s = ngx_http_cio_map_get(call, "sentAt");

    if (s == NULL) {
        s = ctx->batch_sent_at;
    }

    if (ngx_http_cio_map_parse_time(s, &sent) == 0) {

        /* both within the calendar, so the difference cannot overflow */
        if (ms < -62135596800000LL || ms > 253402300799999LL
            || sent < -62135596800000LL || sent > 253402300799999LL)
        {
            goto impossible;
        }

        ms = recv - (sent - ms);
    }

    if (ms < 0 || ms > recv + NGX_HTTP_CIO_MAP_FUTURE_MS) {
        goto impossible;
    }

    return ms;

impossible:

    if (count) {
        ctx->res->changes++;
    }

    return recv;
}


/*
 * ISO-8601 text, or a number: unix seconds below 10^11, milliseconds from
 * there on (docs/mapping.md §3.1).  A number far outside any calendar
 * parses as an impossible time rather than as no time at all.
 */

static int
ngx_http_cio_map_parse_time(const cJSON *v, int64_t *ms)
{
    double  d;

    if (cJSON_IsNumber(v)) {
        d = v->valuedouble;

        if (!(d > -1e15 && d < 1e15)) {
            *ms = (d < 0) ? -1 : (int64_t) 1e15;
            return 0;
        }

        if (d > -NGX_HTTP_CIO_MAP_MS_FROM && d < NGX_HTTP_CIO_MAP_MS_FROM) {
            d *= 1000;
        }

        /* toward minus infinity, without libm: the module does not link it */
        *ms = (int64_t) d;
        *ms -= ((double) *ms > d);
        return 0;
    }

    if (cJSON_IsString(v)) {
        return ngx_http_cio_map_iso8601(v->valuestring, ms);
    }

    return -1;
}


static int
ngx_http_cio_map_digits(const char **p, int n, int *out)
{
    int  v, i;

    v = 0;

    for (i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9') {
            return -1;
        }

        v = v * 10 + ((*p)[i] - '0');
    }

    *p += n;
    *out = v;

    return 0;
}


/*
 * YYYY-MM-DD, optionally THH:MM[:SS[.fraction]] and Z, +hh:mm or +hhmm;
 * no zone means UTC.  Strings of digits alone are not dates.
 */

int
ngx_http_cio_map_iso8601(const char *s, int64_t *ms)
{
    int          y, mo, d, h, mi, sec, oh, om, sign, frac, scale;
    int64_t      days, yy, era, yoe, doy, doe;
    const char  *p;

    static const int  mdays[] = {
        31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    p = s;
    h = mi = sec = 0;
    frac = 0;

    if (ngx_http_cio_map_digits(&p, 4, &y) != 0 || *p++ != '-'
        || ngx_http_cio_map_digits(&p, 2, &mo) != 0 || *p++ != '-'
        || ngx_http_cio_map_digits(&p, 2, &d) != 0)
    {
        return -1;
    }

    /* "2021-02-30" is not a date: rolling it into March would lie */
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1]
        || (mo == 2 && d == 29
            && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))))
    {
        return -1;
    }

    if (*p == 'T' || *p == 't') {
        p++;

        if (ngx_http_cio_map_digits(&p, 2, &h) != 0 || *p++ != ':'
            || ngx_http_cio_map_digits(&p, 2, &mi) != 0)
        {
            return -1;
        }

        if (*p == ':') {
            p++;

            if (ngx_http_cio_map_digits(&p, 2, &sec) != 0) {
                return -1;
            }

            if (*p == '.') {
                p++;

                if (*p < '0' || *p > '9') {
                    return -1;
                }

                /* milliseconds: digits past the third are dropped */
                for (scale = 100; *p >= '0' && *p <= '9'; p++) {
                    frac += (*p - '0') * scale;
                    scale /= 10;
                }
            }
        }

        if (h > 23 || mi > 59 || sec > 60) {
            return -1;
        }

        if (*p == 'Z' || *p == 'z') {
            p++;

        } else if (*p == '+' || *p == '-') {
            sign = (*p == '-') ? -1 : 1;
            p++;

            if (ngx_http_cio_map_digits(&p, 2, &oh) != 0) {
                return -1;
            }

            if (*p == ':') {
                p++;
            }

            if (ngx_http_cio_map_digits(&p, 2, &om) != 0
                || oh > 23 || om > 59)
            {
                return -1;
            }

            mi -= sign * om;
            h -= sign * oh;
        }
    }

    if (*p != '\0') {
        return -1;
    }

    /* days from the civil date (Howard Hinnant's algorithm) */
    yy = y - (mo <= 2);
    era = (yy >= 0 ? yy : yy - 399) / 400;
    yoe = yy - era * 400;
    doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    days = era * 146097 + doe - 719468;

    *ms = ((days * 24 + h) * 60 + mi) * 60000 + (int64_t) sec * 1000 + frac;

    return 0;
}


/*
 * A ULID: 48 bits of time, then 80 bits hashed from the seed.  A negative
 * ms (no time stated) takes a time inside 2020 from the hash: the same
 * call, the same id, whenever it arrives, and never in the future.
 */

void
ngx_http_cio_map_ulid(int64_t ms, const char *seed, size_t len, char *out)
{
    int          i;
    size_t       k;
    uint64_t     h1, h2, t;

    static const char  alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

    h1 = 0xcbf29ce484222325ULL;
    h2 = 0x84222325cbf29ce4ULL;

    for (k = 0; k < len; k++) {
        h1 = (h1 ^ (unsigned char) seed[k]) * 0x100000001b3ULL;
        h2 = (h2 ^ (unsigned char) seed[k]) * 0x100000001b3ULL;
        h2 ^= h2 >> 29;
    }

    /* spread the bits: FNV's low bits change little with the last bytes */
    h1 ^= h1 >> 33;
    h1 *= 0xff51afd7ed558ccdULL;
    h1 ^= h1 >> 33;
    h2 ^= h2 >> 31;
    h2 *= 0xc4ceb9fe1a85ec53ULL;
    h2 ^= h2 >> 33;

    if (ms < 0) {
        ms = NGX_HTTP_CIO_MAP_ID_EPOCH
             + (int64_t) ((h1 ^ (h2 >> 16)) % NGX_HTTP_CIO_MAP_ID_SPAN);
    }

    t = (uint64_t) ms & 0xffffffffffffULL;

    for (i = 9; i >= 0; i--) {
        out[i] = alphabet[t & 31];
        t >>= 5;
    }

    /* 80 bits: 64 of h1 below 16 of h2 */
    h2 &= 0xffff;

    for (i = 25; i >= 10; i--) {
        out[i] = alphabet[h1 & 31];
        h1 = (h1 >> 5) | (h2 << 59);
        h2 >>= 5;
    }

    out[26] = '\0';
}


/* a malloc()ed copy of at most max bytes, never ending inside a character */

/*
 * JSON between systems must be UTF-8 (RFC 8259) and cJSON passes any byte
 * through, so a stray Latin-1 byte from a client would make the whole
 * batch unreadable to Customer.io.  Each byte that does not start a valid
 * sequence becomes U+FFFD, counted as a change like any other limit.
 * Structure characters are ASCII, so only string contents can change.
 */

static char *
ngx_http_cio_map_utf8(ngx_http_cio_map_ctx_t *ctx, char *s)
{
    size_t                n, bad;
    char                 *out, *q;
    const unsigned char  *p;

    bad = 0;

    for (p = (const unsigned char *) s; *p; p += n ? n : 1) {
        n = ngx_http_cio_map_utf8_len(p);
        bad += (n == 0);
    }

    if (bad == 0) {
        return s;
    }

    out = malloc(strlen(s) + 2 * bad + 1);
    if (out == NULL) {
        free(s);
        return NULL;
    }

    q = out;

    for (p = (const unsigned char *) s; *p; p += n ? n : 1) {
        n = ngx_http_cio_map_utf8_len(p);

        if (n == 0) {
            memcpy(q, "\xef\xbf\xbd", 3);
            q += 3;

        } else {
            memcpy(q, p, n);
            q += n;
        }
    }

    *q = '\0';
    free(s);

    ctx->res->changes += bad;

    return out;
}


/*
 * An identifier's text, s of n bytes, as §2 takes it: at most 150 bytes,
 * never cut (a cut id names somebody else), and UTF-8 all through, as
 * U+FFFD for its bad bytes would make one person of "jos\xe9" and
 * "jos\xe8".
 */

int
ngx_http_cio_map_id_ok(const char *s, size_t n)
{
    return n <= NGX_HTTP_CIO_MAP_MAX_ID && ngx_http_cio_map_utf8_valid(s);
}


/* the same, 0, or -1 with the reason field's refusal gets */

static int
ngx_http_cio_map_id_text(const char *s, const char *field, char *err)
{
    if (strlen(s) > NGX_HTTP_CIO_MAP_MAX_ID) {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, "%s is longer than %d bytes",
                 field, NGX_HTTP_CIO_MAP_MAX_ID);
        return -1;
    }

    if (!ngx_http_cio_map_utf8_valid(s)) {
        snprintf(err, NGX_HTTP_CIO_MAP_ERRLEN, "%s is not valid UTF-8",
                 field);
        return -1;
    }

    return 0;
}


/* whether s is valid UTF-8 all through */

static int
ngx_http_cio_map_utf8_valid(const char *s)
{
    size_t                n;
    const unsigned char  *p;

    for (p = (const unsigned char *) s; *p; p += n) {
        n = ngx_http_cio_map_utf8_len(p);

        if (n == 0) {
            return 0;
        }
    }

    return 1;
}


/* the length of the valid UTF-8 sequence at p, or 0 (RFC 3629 table) */

static size_t
ngx_http_cio_map_utf8_len(const unsigned char *p)
{
    unsigned char  c = p[0];

    if (c < 0x80) {
        return 1;
    }

    if (c >= 0xc2 && c <= 0xdf) {
        return (p[1] & 0xc0) == 0x80 ? 2 : 0;
    }

    if (c >= 0xe0 && c <= 0xef) {
        if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80
            || (c == 0xe0 && p[1] < 0xa0)          /* overlong */
            || (c == 0xed && p[1] > 0x9f))         /* surrogates */
        {
            return 0;
        }

        return 3;
    }

    if (c >= 0xf0 && c <= 0xf4) {
        if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80
            || (p[3] & 0xc0) != 0x80
            || (c == 0xf0 && p[1] < 0x90)          /* overlong */
            || (c == 0xf4 && p[1] > 0x8f))         /* past U+10FFFF */
        {
            return 0;
        }

        return 4;
    }

    return 0;
}


static char *
ngx_http_cio_map_cut(const char *s, size_t max, size_t *len)
{
    char    *p;
    size_t   n;

    n = strlen(s);

    if (n > max) {
        n = max;

        while (n > 0 && ((unsigned char) s[n] & 0xc0) == 0x80) {
            n--;
        }
    }

    p = malloc(n + 1);
    if (p == NULL) {
        return NULL;
    }

    memcpy(p, s, n);
    p[n] = '\0';
    *len = n;

    return p;
}


static const cJSON *
ngx_http_cio_map_get(const cJSON *o, const char *k)
{
    if (!cJSON_IsObject(o)) {
        return NULL;
    }

    return cJSON_GetObjectItemCaseSensitive(o, k);
}


static const cJSON *
ngx_http_cio_map_path(const cJSON *o, const char *a, const char *b)
{
    return ngx_http_cio_map_get(ngx_http_cio_map_get(o, a), b);
}


/*
 * The text a call without messageId is known by (§4): the call, and the
 * batch's context it is read with (its digest: the same for every call).
 */

static char *
ngx_http_cio_map_canon(ngx_http_cio_map_ctx_t *ctx, cJSON *call)
{
    char    *s, *canon;
    size_t   n;

    s = cJSON_PrintUnformatted(call);

    if (s == NULL || ctx->batch_digest[0] == '\0') {
        return s;
    }

    n = strlen(s);
    canon = malloc(n + sizeof(ctx->batch_digest));

    if (canon != NULL) {
        memcpy(canon, s, n);
        memcpy(canon + n, ctx->batch_digest, sizeof(ctx->batch_digest));
    }

    free(s);

    return canon;
}


/* context.a (and its b) of a call: its own context's a, else its batch's */

static const cJSON *
ngx_http_cio_map_context(ngx_http_cio_map_ctx_t *ctx, const cJSON *call,
    const char *a, const char *b)
{
    const cJSON  *v;

    v = ngx_http_cio_map_path(call, "context", a);

    if (v != NULL) {
        return b ? ngx_http_cio_map_get(v, b) : v;
    }

    v = ngx_http_cio_map_memo(ctx, ctx->batch_context, a);

    return b ? ngx_http_cio_map_memo(ctx, v, b) : v;
}


/* ngx_http_cio_map_get() of a batch-level object, each key looked up once */

static const cJSON *
ngx_http_cio_map_memo(ngx_http_cio_map_ctx_t *ctx, const cJSON *o,
    const char *k)
{
    int                       i;
    const cJSON              *v;
    ngx_http_cio_map_memo_t  *m;

    if (!cJSON_IsObject(o)) {
        return NULL;
    }

    for (i = 0; i < ctx->nmemo; i++) {
        m = &ctx->memo[i];

        if (m->o == o && strcmp(m->k, k) == 0) {
            return m->v;
        }
    }

    v = cJSON_GetObjectItemCaseSensitive(o, k);

    if (ctx->nmemo < NGX_HTTP_CIO_MAP_MEMO) {
        m = &ctx->memo[ctx->nmemo++];
        m->o = o;
        m->k = k;
        m->v = v;
    }

    return v;
}


static const char *
ngx_http_cio_map_str(const cJSON *v)
{
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
