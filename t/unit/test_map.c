
/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * Unit tests of the event mapper, linked alone (no nginx).  Each case is a
 * request body, the route it arrived on, and the exact Customer.io items
 * (or error) that mapping-spec.md promises for it.  Items are compared as
 * JSON values, so key order does not matter but every key and value does.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "ngx_http_cio_map.h"


#define RECEIVED_MS  1700000000000LL        /* 2023-11-14T22:13:20Z */


static int  passed, failed;


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
    o.max_item_size = 32768;
    o.max_batch_calls = 2500;
    o.convert_timestamps = 1;

    return o;
}


static int
map(const char *body, const ngx_http_cio_map_opts_t *o,
    ngx_http_cio_map_result_t *res)
{
    memset(res, 0, sizeof(*res));
    return ngx_http_cio_map_request(body, strlen(body), o, res);
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


/*
 * One call in, the expected items out: `want` is a JSON array of items.
 */
static void
expect_items(const char *name, int route, const char *body,
    const char *want)
{
    char                       detail[4096];
    char                      *got;
    cJSON                     *a, *b;
    ngx_http_cio_map_opts_t    o;
    ngx_http_cio_map_result_t  res;

    o = opts(route);

    if (map(body, &o, &res) != 0 || res.ncalls != 1
        || res.calls[0].error[0])
    {
        snprintf(detail, sizeof(detail), "mapping failed: \"%s\" / \"%s\"",
                 res.error, res.ncalls ? res.calls[0].error : "");
        ok(0, name, detail);
        ngx_http_cio_map_result_free(&res);
        return;
    }

    got = items_of(&res, 0);
    a = cJSON_Parse(got);
    b = cJSON_Parse(want);

    if (b == NULL) {
        ok(0, name, "the test's expected JSON does not parse");

    } else {
        snprintf(detail, sizeof(detail), "got:  %s\n    want: %s", got, want);
        ok(cJSON_Compare(a, b, 1), name, detail);
    }

    cJSON_Delete(a);
    cJSON_Delete(b);
    free(got);
    ngx_http_cio_map_result_free(&res);
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

    if (map(body, &o, &res) != 0 || res.ncalls != 1) {
        snprintf(detail, sizeof(detail), "request error \"%s\"", res.error);
        ok(0, name, detail);

    } else {
        snprintf(detail, sizeof(detail), "got \"%s\" (%d items), want \"%s\"",
                 res.calls[0].error, res.calls[0].nitems, want);
        ok(strcmp(res.calls[0].error, want) == 0
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

    memset(&res, 0, sizeof(res));
    rc = ngx_http_cio_map_request(body, len, &o, &res);

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
        "\"id\":\"01HF7YAT00CCEZGNCA01G34EG5\",\"timestamp\":1700000000,"
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
        "\"id\":\"01HF7YAT009RD5V4BAGXBAPWZB\",\"timestamp\":1700000000,"
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
        "\"id\":\"01HF7YAT00JQS1RW899EPPV8FS\",\"timestamp\":1700000000,"
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
}


int
main(void)
{
    test_identity();
    test_track();
    test_page_screen();
    test_group_alias();
    test_devices();
    test_limits();
    test_batch();

    printf("%d passed, %d failed\n", passed, failed);

    return failed ? 1 : 0;
}
