/* common.c: what the stage kinds share: reading their keys, job references
 * and staged rows, merging data from outside (checked against the model),
 * calling a service, URL templates. */
#include "common.h"
#include "engine.h"
#include "http.h"
#include "pl.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------- the kinds' keys */

/* key_of returns the key name of s's kind: a kind reads only what it
 * declares, so that pipeline_load has checked it. */
static const ConfKey *key_of(const Stage *s, const char *name)
{
    const ConfKey *k = conf_key(s->kind->spec.keys, name);
    PL_ASSERT(k != NULL, "a stage kind reads only the keys it declares");
    return k;
}

int stage_conf_str(const Stage *s, const char *name, const char **out, char *err, size_t errlen)
{
    return conf_str(engine_pipeline(s->engine)->path, s->conf->node, key_of(s, name)->name, out,
                    err, errlen);
}

int stage_conf_strs(const Stage *s, const char *name, const char ***out, size_t *n, char *err,
                    size_t errlen)
{
    return conf_strs(engine_pipeline(s->engine)->path, s->conf->node, key_of(s, name)->name, out,
                     n, err, errlen);
}

int stage_conf_num(const Stage *s, const char *name, double *out, char *err, size_t errlen)
{
    const ConfKey *k = key_of(s, name);
    PL_ASSERT(k->type == KEY_SECS, "a number is read from a number key");
    return conf_num(engine_pipeline(s->engine)->path, s->conf->node, name, k->min, k->max, out,
                    err, errlen);
}

int stage_conf_uint(const Stage *s, const char *name, unsigned long long *out, char *err,
                    size_t errlen)
{
    const ConfKey *k = key_of(s, name);
    PL_ASSERT(k->type == KEY_UINT, "a whole number is read from a whole-number key");
    return conf_uint(engine_pipeline(s->engine)->path, s->conf->node, name,
                     (unsigned long long)k->max, out, err, errlen);
}

/* dsn_list checks each item of a comma-separated conninfo value (host,
 * hostaddr, port: one per host) with one. */
static int dsn_list(const ConfErr *l, const char *key, const ConfNode *n, const char *val,
                    int (*one)(const char *s, size_t len, char *why, size_t wn))
{
    char why[400];
    for (const char *p = val;;) {
        size_t len = strcspn(p, ",");
        if (len && one(p, len, why, sizeof why))
            return conf_errat(l, n->line, "%s: %s", key, why);
        if (!p[len])
            return 0;
        p += len + 1;
    }
}

static int dsn_host(const char *s, size_t len, char *why, size_t n)
{
    char ip[64], buf[300];
    unsigned char a[16];
    if (s[0] == '/' || s[0] == '@') /* a Unix socket's directory, or an abstract one */
        return 0;
    if (!memchr(s, ':', len))
        return http_host_check(s, len, why, n);
    snprintf(ip, sizeof ip, "%.*s", (int)(len < sizeof ip ? len : sizeof ip - 1), s);
    if (len < sizeof ip && inet_pton(AF_INET6, ip, a) == 1)
        return 0;
    snprintf(why, n, "host '%s' is not a valid IPv6 address", http_printable(buf, sizeof buf, ip, strlen(ip)));
    return PL_EINVAL;
}

static int dsn_hostaddr(const char *s, size_t len, char *why, size_t n)
{
    char ip[64], buf[300];
    unsigned char a[16];
    snprintf(ip, sizeof ip, "%.*s", (int)(len < sizeof ip ? len : sizeof ip - 1), s);
    if (len < sizeof ip && (inet_pton(AF_INET, ip, a) == 1 || inet_pton(AF_INET6, ip, a) == 1))
        return 0;
    snprintf(why, n, "hostaddr '%s' is not a valid IP address", http_printable(buf, sizeof buf, ip, strlen(ip)));
    return PL_EINVAL;
}

int stage_check_dsn(const ConfErr *l, const char *key, const ConfNode *n)
{
    const char *s = n->value; /* a KEY_STR: a non-empty string */
    char *msg = NULL;
    int rc;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\r' || c == '\n')
            return conf_errat(l, n->line, "%s: has a line break (CR or LF) at byte %zu; a "
                         "connection string is one line", key, (size_t)(p - s) + 1);
        if (c < 0x20 || c == 0x7f)
            return conf_errat(l, n->line, "%s: has a control character (0x%02X) at byte %zu; "
                         "remove it", key, c, (size_t)(p - s) + 1);
    }
    if (pipeline_secret_is_ref(s)) { /* read when the stage starts: stage_pg_dsn */
        const char *why = pipeline_secret_ref_error(s);
        return why ? conf_errat(l, n->line, "%s: %s", key, why) : 0;
    }
    PQconninfoOption *opts = PQconninfoParse(s, &msg);
    if (!opts) {
        char m[200] = "out of memory";
        if (msg && n->raw) /* libpq's words quote the string, which holds a ${VAR}'s value */
            snprintf(m, sizeof m, "its message is not shown: it may quote the value of %.120s",
                     n->raw);
        else if (msg)
            snprintf(m, sizeof m, "%s", msg);
        m[strcspn(m, "\n")] = '\0';
        if (msg)
            PQfreemem(msg);
        return conf_errat(l, n->line, "%s: is not a valid libpq connection string (libpq: %s); "
                     "write keyword=value pairs or a postgresql:// URI", key, m);
    }
    rc = 0;
    for (PQconninfoOption *o = opts; o->keyword && !rc; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            rc = dsn_list(l, key, n, o->val, dsn_host);
        else if (strcmp(o->keyword, "hostaddr") == 0)
            rc = dsn_list(l, key, n, o->val, dsn_hostaddr);
        else if (strcmp(o->keyword, "port") == 0)
            rc = dsn_list(l, key, n, o->val, http_port_check);
    }
    PQconninfoFree(opts);
    return rc;
}


int stage_pg_dsn(const Stage *s, const char *dsn, char **out, char *err, size_t errlen)
{
    const ConfNode *n = conf_get(s->conf->node, "dsn");
    const char *path = engine_pipeline(s->engine)->path;
    int line = n ? n->line : s->conf->line;
    char why[300], *msg = NULL;
    *out = NULL;
    if (!pipeline_secret_is_ref(dsn)) {
        *out = xstrdup(dsn);
        return 0;
    }
    if (pipeline_secret(dsn, out, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s:%d: stage '%s': dsn: %s (a libpq conninfo like \"host=db "
                 "dbname=app\")", path, line, s->conf->name, why);
        return PL_EINVAL;
    }
    /* Checked here, as pickline check does a dsn written out, but without
     * libpq's message: it quotes the string, which is a secret. */
    PQconninfoOption *opts = PQconninfoParse(*out, &msg);
    if (!opts) {
        if (msg)
            PQfreemem(msg);
        pipeline_secret_free(*out);
        *out = NULL;
        snprintf(err, errlen, "%s:%d: stage '%s': dsn: %.200s is not a valid libpq connection "
                 "string (libpq's message is not shown: it may quote a password); write "
                 "keyword=value pairs or a postgresql:// URI", path, line, s->conf->name, dsn);
        return PL_EINVAL;
    }
    PQconninfoFree(opts);
    return 0;
}

/* ---------------------------------------------------------------- helpers */

int stage_job_ref(Slot *s, JobRef *ref, char *err, size_t errlen)
{
    const msgpack_object *body;
    int rc = slot_body(s, &body, err, errlen);
    if (rc)
        return rc;
    if ((rc = staging_ref_parse(body, ref)) != 0)
        snprintf(err, errlen, "job body is not a staged-row reference "
                 "{\"model\":...,\"key\":...,\"row_id\":...}");
    return rc;
}

void stage_ref_body(Strbuf *out, const char *model, const char *key, uint64_t row)
{
    sb_reset(out);
    staging_ref_json(out, model, key, row);
}

int stage_conf_headers(const Stage *s, char ***out, char *err, size_t errlen)
{
    *out = NULL;
    const ConfNode *h = conf_get(s->conf->node, "headers");
    if (!h)
        return 0;
    if (h->type != CONF_MAP) {
        snprintf(err, errlen, "%s:%d: stage '%s': headers must be a map of name: value",
                 engine_pipeline(s->engine)->path, h->line, s->conf->name);
        return PL_EINVAL;
    }
    char **l = xcalloc(h->n + 1, sizeof *l), why[300];
    for (size_t i = 0; i < h->n; i++) {
        const ConfNode *v = h->kids[i];
        char *val;
        if (v->type != CONF_SCALAR) {
            snprintf(err, errlen, "%s:%d: stage '%s': header '%s' must be a string",
                     engine_pipeline(s->engine)->path, v->line, s->conf->name, h->keys[i]);
            stage_headers_free(l);
            return PL_EINVAL;
        }
        /* env:NAME and file:PATH are read now (pickline check saw their
         * form); the value is checked as one written out is, unshown. */
        if (pipeline_secret(v->value, &val, why, sizeof why) != 0 ||
            http_header_check(h->keys[i], val, why, sizeof why) != 0) {
            snprintf(err, errlen, "%s:%d: stage '%s': headers: %s: %s%s%s",
                     engine_pipeline(s->engine)->path, v->line, s->conf->name, h->keys[i],
                     pipeline_secret_is_ref(v->value) ? v->value : "",
                     pipeline_secret_is_ref(v->value) ? ": " : "", why);
            pipeline_secret_free(val);
            stage_headers_free(l);
            return PL_EINVAL;
        }
        size_t n = strlen(h->keys[i]) + strlen(val) + 3;
        l[i] = xmalloc(n);
        snprintf(l[i], n, "%s: %s", h->keys[i], val);
        pipeline_secret_free(val);
    }
    *out = l;
    return 0;
}

void stage_headers_free(char **h)
{
    if (!h)
        return;
    for (char **p = h; *p; p++)
        pipeline_secret_free(*p); /* a header may hold a secret: wiped */
    free(h);
}

void stage_put_fields(Strbuf *out, const msgpack_object *row, const char *const *send, size_t n)
{
    const msgpack_object_map *m = &row->via.map;
    size_t count = send ? n : row->type == MSGPACK_OBJECT_MAP ? m->size : 0, put = 0;
    msgpack_sbuffer one;
    msgpack_packer pk;
    msgpack_sbuffer_init(&one);
    msgpack_packer_init(&pk, &one, msgpack_sbuffer_write);
    for (size_t i = 0; i < count; i++) {
        const char *name;
        size_t nl;
        const msgpack_object *val;
        if (send) {
            name = send[i];
            nl = strlen(name);
            val = row_field(row, name);
        } else {
            if (m->ptr[i].key.type != MSGPACK_OBJECT_STR)
                continue;
            name = m->ptr[i].key.via.str.ptr;
            nl = m->ptr[i].key.via.str.size;
            val = &m->ptr[i].val;
        }
        if (put++)
            sb_adds(out, ",");
        sb_add_json_string(out, name, nl);
        sb_adds(out, ":");
        if (!val) {
            sb_adds(out, "null");
            continue;
        }
        one.size = 0;
        row_pack_object(&pk, val);
        row_to_json(one.data, one.size, out);
    }
    msgpack_sbuffer_destroy(&one);
}

int stage_ref_row(Slot *s, const JobRef *ref, Strbuf *out, const char *missing)
{
    int rc = stage_row(s->stage, ref->model, ref->key, ref->row, out);
    if (rc == PL_ENOROW)
        slot_buryf(s, "staged row %s/%s: not found%s%s", ref->model, ref->key,
                   missing ? "; " : "", missing ? missing : "");
    else if (rc)
        slot_buryf(s, "staged row %s/%s: %s", ref->model, ref->key, pl_strerror(rc));
    return rc;
}

/* ---------------------------------------------------------- merging data from outside */

int stage_check_merge(const ConfErr *e, const char *key, const ConfNode *v)
{
    if (v->n > STAGE_MERGE_MAX) /* KEY_MERGE: a non-empty map, checked before */
        return conf_errat(e, v->line, "%s: %zu fields; a stage merges at most %d", key, v->n,
                          STAGE_MERGE_MAX);
    return 0;
}

int stage_conf_merge(const Stage *s, StageMerge *mg, char *err, size_t errlen)
{
    const ConfNode *m = conf_get(s->conf->node, key_of(s, "merge")->name);
    memset(mg, 0, sizeof *mg);
    if (!m || m->type != CONF_MAP || !m->n || m->n > STAGE_MERGE_MAX) {
        snprintf(err, errlen, "%s:%d: stage '%s': merge must map at most %d fields of the answer "
                 "to fields of the row", engine_pipeline(s->engine)->path, s->conf->line,
                 s->conf->name, STAGE_MERGE_MAX);
        return PL_EINVAL;
    }
    mg->from = xcalloc(m->n, sizeof *mg->from);
    mg->to = xcalloc(m->n, sizeof *mg->to);
    for (size_t i = 0; i < m->n; i++) {
        mg->from[i] = m->keys[i];
        mg->to[i] = m->kids[i]->type == CONF_SCALAR ? m->kids[i]->value : m->keys[i];
    }
    mg->n = m->n;
    return 0;
}

void stage_merge_free(StageMerge *mg)
{
    free(mg->from);
    free(mg->to);
    memset(mg, 0, sizeof *mg);
}

size_t stage_merge_check(const StageMerge *mg, const Model *md, const msgpack_object *src,
                         msgpack_sbuffer *norm, Strbuf *errors)
{
    const msgpack_object *val[STAGE_MERGE_MAX];
    size_t n = mg->n, kept = 0, nerr = 0;
    msgpack_packer pk;
    PL_ASSERT(n <= STAGE_MERGE_MAX, "a merge sets at most STAGE_MERGE_MAX fields");
    norm->size = 0;
    sb_reset(errors);
    for (size_t i = 0; i < n; i++) {
        val[i] = row_field(src, mg->from[i]);
        for (size_t j = i + 1; val[i] && j < n; j++)
            if (!strcmp(mg->to[i], mg->to[j]) && row_field(src, mg->from[j]))
                val[i] = NULL; /* a later merge sets this field */
        kept += val[i] != NULL;
    }
    msgpack_packer_init(&pk, norm, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (uint32_t)kept);
    for (size_t i = 0; i < n; i++) {
        if (!val[i])
            continue;
        size_t tl = strlen(mg->to[i]), e = 0;
        msgpack_pack_str(&pk, tl);
        msgpack_pack_str_body(&pk, mg->to[i], tl);
        if (!md) {
            msgpack_pack_object(&pk, *val[i]);
            continue;
        }
        size_t before = norm->size;
        if (model_check_field(md, mg->to[i], val[i], &pk, errors, &e) != 0) {
            norm->size = before;
            msgpack_pack_nil(&pk); /* a placeholder: the map is not merged */
            nerr += e ? e : 1;
        }
    }
    return nerr;
}

void stage_first_error(const char *errors, size_t len, char *buf, size_t n)
{
    Strbuf a, f, r, m;
    msgpack_sbuffer mp;
    RowView v;
    sb_init(&a);
    sb_init(&f);
    sb_init(&r);
    sb_init(&m);
    msgpack_sbuffer_init(&mp);
    snprintf(buf, n, "%.200s", len ? errors : "a value breaks its field's rules");
    sb_adds(&a, "[");
    sb_add(&a, errors, len);
    sb_adds(&a, "]");
    if (row_from_json(a.buf, a.len, &mp, NULL, 0) == 0 && row_view(&v, mp.data, mp.size) == 0) {
        if (v.root.type == MSGPACK_OBJECT_ARRAY && v.root.via.array.size > 0) {
            const msgpack_object *e = &v.root.via.array.ptr[0];
            row_field_text(e, "field", &f);
            row_field_text(e, "rule", &r);
            row_field_text(e, "message", &m);
            snprintf(buf, n, "field '%s' rule %s: %s%s", f.buf ? f.buf : "", r.buf ? r.buf : "?",
                     m.buf ? m.buf : "", v.root.via.array.size > 1 ? " (and more)" : "");
        }
        row_view_free(&v);
    }
    msgpack_sbuffer_destroy(&mp);
    sb_free(&a);
    sb_free(&f);
    sb_free(&r);
    sb_free(&m);
}

/* ---------------------------------------------------------- calling a service */

void stage_call_init(StageCall *c, char *const *headers)
{
    memset(c, 0, sizeof *c);
    c->headers = headers;
    sb_init(&c->url);
    sb_init(&c->body);
    sb_init(&c->idem);
    sb_init(&c->hv);
    msgpack_sbuffer_init(&c->mp);
}

void stage_call_free(StageCall *c)
{
    sb_free(&c->url);
    sb_free(&c->body);
    sb_free(&c->idem);
    sb_free(&c->hv);
    msgpack_sbuffer_destroy(&c->mp);
}

/* header_list builds the list: first (NULL: none), own's lines, the stage's. */
static const char *const *header_list(StageCall *c, const char *first, const char *const *own)
{
    const char *end = NULL;
    sb_reset(&c->hv);
    if (first)
        sb_add(&c->hv, &first, sizeof first);
    for (; own && *own; own++)
        sb_add(&c->hv, own, sizeof *own);
    for (char *const *h = c->headers; h && *h; h++)
        sb_add(&c->hv, h, sizeof *h);
    sb_add(&c->hv, &end, sizeof end);
    return (const char *const *)(void *)c->hv.buf;
}

const char *const *stage_call_headers(StageCall *c, const char *const *own)
{
    return header_list(c, NULL, own);
}

/* outcome ends the slot after a failed call (see stage_http); 1 if it
 * did, 0 on HTTP_OK. */
static int outcome(Slot *s, const HttpResult *r, const char *url)
{
    switch (r->outcome) {
    case HTTP_OK:
        return 0;
    case HTTP_PERMANENT:
        slot_buryf(s, "%s: %s", url, r->error);
        return 1;
    case HTTP_CANCELED:
        slot_give_back(s, "request canceled (engine draining)");
        return 1;
    default: {
        char why[400];
        snprintf(why, sizeof why, "%s: %s", url, r->error);
        slot_retry(s, r->retry_after_s, why);
        return 1;
    }
    }
}

static void call_done(void *arg, const HttpResult *r)
{
    StageCall *c = arg;
    Slot *s = c->slot;
    char err[256];
    RowView v;
    s->req = NULL;
    if (outcome(s, r, c->url.buf))
        return;
    if (!c->json) {
        c->answer(s, NULL, NULL, 0);
        return;
    }
    c->mp.size = 0;
    if (row_from_json_object(r->body, r->len, &c->mp, err, sizeof err) != 0 ||
        row_view(&v, c->mp.data, c->mp.size) != 0) {
        slot_buryf(s, "malformed JSON from %s: %s", c->url.buf, err);
        return;
    }
    c->answer(s, &v.root, c->mp.data, c->mp.size);
    row_view_free(&v);
}

void stage_rowcall_init(StageRowCall *c, char *const *headers)
{
    memset(&c->ref, 0, sizeof c->ref);
    sb_init(&c->row);
    stage_call_init(&c->call, headers);
}

void stage_rowcall_free(StageRowCall *c)
{
    sb_free(&c->row);
    stage_call_free(&c->call);
}

int stage_rowcall_read(Slot *s, StageRowCall *c, RowView *v)
{
    char err[256];
    int rc;
    if ((rc = stage_job_ref(s, &c->ref, err, sizeof err)) != 0) {
        slot_bury(s, err);
        return rc;
    }
    if ((rc = stage_ref_row(s, &c->ref, &c->row, NULL)) != 0)
        return rc;
    if (row_view(v, c->row.buf, c->row.len) != 0) {
        slot_bury(s, "staged row is not valid msgpack");
        return PL_EFORMAT;
    }
    if (v->root.type != MSGPACK_OBJECT_MAP) {
        row_view_free(v);
        slot_bury(s, "staged row is not a msgpack map");
        return PL_EFORMAT;
    }
    return 0;
}

static void call(Slot *s, StageCall *c, const char *method, const char *const *own,
                 StageAnswer answer, int json)
{
    sb_reset(&c->idem);
    sb_addf(&c->idem, "Idempotency-Key: pickline-%s-%llu", s->stage->conf->name,
            (unsigned long long)s->id);
    c->slot = s;
    c->answer = answer;
    c->json = json;
    int post = strcmp(method, "GET") != 0;
    HttpRequest rq = {.method = method, .url = c->url.buf,
                      .headers = header_list(c, c->idem.buf, own),
                      .body = post ? c->body.buf : NULL, .len = post ? c->body.len : 0};
    http_request(s->stage->http, &rq, call_done, c, &s->req);
}

void stage_http(Slot *s, StageCall *c, const char *method, const char *const *own,
                StageAnswer answer)
{
    call(s, c, method, own, answer, 0);
}

void stage_http_json(Slot *s, StageCall *c, const char *method, const char *const *own,
                     StageAnswer answer)
{
    call(s, c, method, own, answer, 1);
}

/* ---------------------------------------------------------- URL templates */

/* url_escape writes s[0..n) percent-encoded: all but the unreserved
 * characters (A-Z a-z 0-9 - _ . ~), and the dots too of a value that is
 * "." or ".." (libcurl and servers resolve such a segment: /records/..
 * would be sent as /). */
static void url_escape(Strbuf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    int dots = (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
             c == '_' || c == '.' || c == '~') && !(c == '.' && dots)) {
            sb_add(out, &s[i], 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            sb_add(out, e, 3);
        }
    }
}

/* dot_segment: some piece of s[0..n) between slashes or backslashes is "."
 * or "..". Escaped as %2F, %5C and %2E, such a value still moves a request
 * on a server or proxy that decodes before it resolves dot segments (RFC
 * 3986 6.2.2 normalisation; nginx does): "../admin" -> /admin. */
static int dot_segment(const char *s, size_t n)
{
    for (size_t i = 0; i <= n;) {
        size_t j = i;
        while (j < n && s[j] != '/' && s[j] != '\\')
            j++;
        if ((j - i == 1 && s[i] == '.') || (j - i == 2 && s[i] == '.' && s[i + 1] == '.'))
            return 1;
        i = j + 1;
    }
    return 0;
}

int stage_template(const char *tmpl, const msgpack_object *fields, Strbuf *out, char *err, size_t errlen)
{
    char shown[300];
    Strbuf v;
    sb_init(&v);
    sb_reset(out);
    /* Fields up to path_end stand in the path: there a value may not be
     * empty (/records/ is another resource) nor hold a dot segment. A
     * checked template has none in the scheme, host or port. */
    size_t path_end = http_url_path_end(tmpl);
    const char *host = strstr(tmpl, "://");
    host = host ? host + 3 : tmpl;
    const char *host_end = host + strcspn(host, "/?#");
    for (const char *p = tmpl; *p;) {
        const char *o = strchr(p, '{');
        if (!o) {
            sb_adds(out, p);
            break;
        }
        sb_add(out, p, (size_t)(o - p));
        const char *c = strchr(o, '}');
        if (!c) {
            snprintf(err, errlen, "url template '%s': '{' without '}'", tmpl);
            goto fail;
        }
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(c - o - 1), o + 1);
        if (o < host_end) {
            snprintf(err, errlen, "url template '%s': field '%s' in the host or port", tmpl, name);
            goto fail;
        }
        sb_reset(&v);
        if (row_field_text(fields, name, &v) != 0) {
            snprintf(err, errlen, "url template field '%s' is missing or not a scalar in the job", name);
            goto fail;
        }
        int in_path = (size_t)(o - tmpl) < path_end;
        if (memchr(v.buf, '\0', v.len)) {
            snprintf(err, errlen, "url template field '%s' holds a NUL byte, which a server may "
                     "cut the URL's path or query at; fix the job and kick it", name);
            goto fail;
        }
        if (in_path && v.len == 0) {
            snprintf(err, errlen, "url template field '%s' is empty: in the URL's path that sends "
                     "the request to another resource; fix the job and kick it", name);
            goto fail;
        }
        if (in_path && dot_segment(v.buf, v.len)) {
            snprintf(err, errlen, "url template field '%s' is '%s', a dot segment: in the URL's "
                     "path it would move the request to another path (servers read %%2E%%2E as "
                     ".. too); fix the job and kick it", name,
                     http_printable(shown, sizeof shown, v.buf, v.len));
            goto fail;
        }
        url_escape(out, v.buf, v.len);
        p = c + 1;
    }
    sb_free(&v);
    return 0;
fail:
    sb_free(&v);
    return PL_EINVAL;
}
