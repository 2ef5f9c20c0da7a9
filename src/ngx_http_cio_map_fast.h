/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * Copyright (C) ngx_http_cio_module authors
 */


/*
 * The mapper's two paths, for the mapper itself, its unit tests, the
 * differential fuzzer and the bench; the glue only calls
 * ngx_http_cio_map_request() (ngx_http_cio_map.h), which tries the fast
 * path and falls back to the tree when it declines.
 */


#ifndef _NGX_HTTP_CIO_MAP_FAST_H_INCLUDED_
#define _NGX_HTTP_CIO_MAP_FAST_H_INCLUDED_


#include "ngx_http_cio_map.h"


/* the fast path does not map this body: ask the tree mapper */
#define NGX_HTTP_CIO_MAP_DECLINED  -2


/*
 * One pass over the body, no tree: 0 or -1 exactly as
 * ngx_http_cio_map_request() would answer, or NGX_HTTP_CIO_MAP_DECLINED
 * with res zeroed and nothing to free.
 */
int ngx_http_cio_map_fast(const char *body, size_t len,
    const ngx_http_cio_map_opts_t *opts, ngx_http_cio_map_result_t *res);

/* the cJSON tree mapper, every call shape and every rule */
int ngx_http_cio_map_tree(const char *body, size_t len,
    const ngx_http_cio_map_opts_t *opts, ngx_http_cio_map_result_t *res);

/* the tree's rules on plain values, which the fast path applies the same */
int ngx_http_cio_map_iso8601(const char *s, int64_t *ms);
void ngx_http_cio_map_ulid(int64_t ms, const char *seed, size_t len,
    char *out);
int ngx_http_cio_map_is_email(const char *s);
int ngx_http_cio_map_placeholder(const char *s);
int ngx_http_cio_map_num_text(double d, char *buf, size_t size);
int ngx_http_cio_map_is_cio(const char *key);
int ngx_http_cio_map_listed(const char *name, const char **list, size_t n);
int ngx_http_cio_map_id_ok(const char *s, size_t n);
int ngx_http_cio_map_hex4(const char *p, unsigned *cp);


#endif /* _NGX_HTTP_CIO_MAP_FAST_H_INCLUDED_ */
