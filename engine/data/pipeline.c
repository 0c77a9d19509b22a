/* pipeline.c: the pipeline file. conf_read reads the YAML into a tree of
 * ConfNodes (conf.h: each remembers its line; anchors, aliases and tags are
 * refused, duplicate keys are errors), then the schema checks walk the tree
 * and build the Pipeline. Loading stops at the first error, whose message is
 * "FILE:LINE: what is wrong; hint". Each stage is checked against the
 * KindSpec of its kind (the keys it takes, their types and ranges), which
 * the kind declares itself (stages/); its init reads the same keys later
 * with the conf_* getters, so `pickline check` catches whatever it would. */
#include "pipeline.h"
#include "http_check.h"
#include "model.h"
#include "pl.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define FILE_MAX (16u << 20)   /* a pipeline file is small; refuse anything huge */
#define SECS_MAX CONF_SECS_MAX  /* timeouts, intervals, drain: at most a day */
#define QSECS_MAX 4294967.0    /* queue times: ms must fit a uint32_t */
#define CONC_MAX 10000
#define CONC_DEFAULT 8
#define BATCH_CAP 100          /* batch defaults to min(concurrency, BATCH_CAP) */

/* =============================================================== schema */

#define THRESHOLD_COUNT_MAX (UINT64_MAX - 1) /* reject_threshold: count */

static const char *const top_keys[] = {"data", "listen", "drain", "queues", "stages",
                                       "models", "target", NULL};
static const char *const listen_keys[] = {"address", "port", "token", "insecure", "max_body", "max_conns",
                                          "max_conns_per_ip", "idle_timeout", "request_timeout", "tls", NULL};
static const char *const queue_keys[] = {"ttr", "max_attempts", "backoff", "backoff_max",
                                         "max_body", "key_retention", NULL};
static const char *const stage_keys[] = {"name", "kind", "input", "output", "concurrency",
                                         "batch", "rate", "timeout", "connect_timeout",
                                         "insecure", NULL};
static const char *const rule_keys[] = {"when", "to", NULL};
static const char *const ops[] = {"equals", "not_equals", "exists", "in", NULL};
static const char *const cond_keys[] = {"field", "equals", "not_equals", "exists", "in", NULL};
static const char *const threshold_keys[] = {"count", "rate", NULL};

static int in_list(const char *const *a, const char *s)
{
    for (; a && *a; a++)
        if (strcmp(*a, s) == 0)
            return 1;
    return 0;
}

const ConfKey *conf_key(const ConfKey *keys, const char *name)
{
    for (const ConfKey *k = keys; k && k->name; k++)
        if (strcmp(k->name, name) == 0)
            return k;
    return NULL;
}

/* stage_keys_check is conf_keys_check for a stage: its keys are names
 * (those of every stage) and kk (its kind's), and a key of another of the
 * kinds says which. */
static int stage_keys_check(const ConfErr *l, const ConfNode *map, const char *what,
                            const char *const *names, const ConfKey *kk, const KindSpec *const *kinds)
{
    for (size_t i = 0; i < map->n; i++) {
        const char *key = map->keys[i];
        int line = conf_key_line(map, (int)i);
        if (in_list(names, key) || conf_key(kk, key))
            continue;
        ConfNear nr = CONF_NEAR(key);
        for (const char *const *a = names; a && *a; a++)
            conf_near_try(&nr, *a);
        for (const ConfKey *k = kk; k && k->name; k++)
            conf_near_try(&nr, k->name);
        if (nr.best)
            return conf_errat(l, line, "unknown key '%.64s'; did you mean '%s'?", key, nr.best);
        for (const KindSpec *const *k = kinds; k && *k; k++)
            if (conf_key((*k)->keys, key))
                return conf_errat(l, line, "unknown key '%.64s' for %s; it belongs to %s stages",
                             key, what, (*k)->name);
        char list[400] = "";
        size_t m = 0;
        for (const char *const *a = names; a && *a; a++)
            conf_join(list, sizeof list, &m, *a);
        for (const ConfKey *k = kk; k && k->name; k++)
            conf_join(list, sizeof list, &m, k->name);
        return conf_errat(l, line, "unknown key '%.64s'; %s takes %s", key, what, list);
    }
    return 0;
}

static uint32_t to_ms(double s)
{
    return (uint32_t)llround(s * 1000.0);
}

/* ---------------------------------------------------------- top level */

/* listen_address checks the listen: address (an IPv4 or IPv6 address, or
 * a host name) and says in *loopback whether only this machine reaches it. */
static int listen_address(const ConfErr *l, const ConfNode *v, const char *a, int *loopback)
{
    unsigned char buf[sizeof(struct in6_addr)];
    *loopback = 0;
    if (inet_pton(AF_INET, a, buf) == 1) {
        *loopback = buf[0] == 127;
        return 0;
    }
    if (inet_pton(AF_INET6, a, buf) == 1) {
        static const unsigned char one[16] = {[15] = 1};
        static const unsigned char mapped[12] = {[10] = 0xff, [11] = 0xff};
        *loopback = !memcmp(buf, one, 16) || (!memcmp(buf, mapped, 12) && buf[12] == 127);
        return 0;
    }
    size_t n = strlen(a);
    if (strspn(a, "0123456789.") == n)
        return conf_errat(l, v->line, "listen: address: '%.64s' is not an IPv4 address (four numbers "
                          "0-255, like 127.0.0.1)", a);
    if (a[0] == '[' || strchr(a, ':'))
        return conf_errat(l, v->line, "listen: address: '%.64s' is not an IPv6 address (write it "
                          "without brackets, like ::1)", a);
    int ok = n <= 253 && a[0] != '-' && a[0] != '.' && a[n - 1] != '.';
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)a[i]) || a[i] == '-' || (a[i] == '.' && a[i + 1] != '.');
    if (!ok)
        return conf_errat(l, v->line, "listen: address: '%.64s' is neither an IP address nor a host "
                          "name", a);
    *loopback = !strcasecmp(a, "localhost");
    return 0;
}

/* token_error returns what is wrong with token t (NULL: nothing); the
 * message never shows the token. */
static const char *token_error(const char *t)
{
    size_t n = strlen(t);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] <= ' ' || (unsigned char)t[i] >= 0x7f)
            return "holds a space, a control character or a non-ASCII byte; a token is "
                   "printable ASCII (it goes into an Authorization header)";
    if (n < HTTP_TOKEN_MIN)
        return "is shorter than 16 characters; use a random one, e.g. `openssl rand -hex 32`";
    return NULL;
}

static int check_listen(const ConfErr *l, Pipeline *p, const ConfNode *n)
{
    static const char *const tls_keys[] = {"cert", "key", NULL};
    char buf[64];
    const ConfNode *v, *addr = NULL;
    unsigned long long u;
    int rc, loopback = 1;

    p->listen_enabled = 1;
    if (conf_is_null(n))
        return 0;
    if (n->type != CONF_MAP)
        return conf_errat(l, n->line, "listen: expected a map of address, port, token, max_body ... "
                     "(got %s)", conf_desc(n, buf, sizeof buf));
    if ((rc = conf_keys_check(l, n, "listen", listen_keys)))
        return rc;
    if ((addr = conf_get(n, "address")) &&
        ((rc = conf_as_name(l, "listen: address", addr, &p->listen_address)) ||
         (rc = listen_address(l, addr, p->listen_address, &loopback))))
        return rc;
    if ((v = conf_get(n, "port"))) {
        if ((rc = conf_as_uint(l, "listen: port", v, 1, 65535, &u)))
            return rc;
        p->listen_port = (unsigned)u;
    }
    if ((v = conf_get(n, "max_body"))) {
        if ((rc = conf_as_uint(l, "listen: max_body", v, 1, QUEUE_BODY_LIMIT, &u)))
            return rc;
        p->listen_max_body = (size_t)u;
    }
    static const struct { const char *key; size_t off; unsigned long long max; } nums[] = {
        {"max_conns", offsetof(Pipeline, listen_max_conns), 100000},
        {"max_conns_per_ip", offsetof(Pipeline, listen_max_conns_per_ip), 100000},
        {"idle_timeout", offsetof(Pipeline, listen_idle_timeout_s), 86400},
        {"request_timeout", offsetof(Pipeline, listen_request_timeout_s), 86400},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        char key[64];
        snprintf(key, sizeof key, "listen: %s", nums[i].key);
        if ((v = conf_get(n, nums[i].key))) {
            if ((rc = conf_as_uint(l, key, v, 1, nums[i].max, &u)))
                return rc;
            *(unsigned *)((char *)p + nums[i].off) = (unsigned)u;
        }
    }
    if ((v = conf_get(n, "insecure")) && (rc = conf_as_bool(l, "listen: insecure", v, &p->listen_insecure)))
        return rc;
    if ((v = conf_get(n, "token"))) {
        const char *t, *why;
        if (v->type != CONF_SCALAR || conf_is_null(v) || !v->value[0])
            return conf_errat(l, v->line, "listen: token: expected env:NAME, file:PATH or the token "
                              "itself (got %s)", v->type == CONF_SCALAR && !conf_is_null(v) ? "an empty string"
                                                                           : conf_desc(v, buf, sizeof buf));
        t = v->value;
        p->listen_has_token = 1;
        if (strncmp(t, "env:", 4) == 0) {
            const char *name = t + 4;
            if (!*name || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
                    strlen(name) || isdigit((unsigned char)*name))
                return conf_errat(l, v->line, "listen: token: env: needs a variable name, like "
                             "env:PICKLINE_TOKEN");
        } else if (strncmp(t, "file:", 5) == 0) {
            if (!t[5])
                return conf_errat(l, v->line, "listen: token: file: needs a path, like "
                                  "file:/etc/pickline/token");
        } else if ((why = token_error(t)) != NULL) {
            return conf_errat(l, v->line, "listen: token %s; better still, keep it out of this file "
                              "(token: env:NAME or token: file:PATH)", why);
        } else {
            p->listen_token = t;
        }
    }
    if ((v = conf_get(n, "tls"))) {
        if (v->type != CONF_MAP)
            return conf_errat(l, v->line, "listen: tls: expected a map of cert and key (PEM files) "
                              "(got %s)", conf_desc(v, buf, sizeof buf));
        if ((rc = conf_keys_check(l, v, "listen: tls", tls_keys)))
            return rc;
        const char *f;
        for (int i = 0; i < 2; i++) {
            const ConfNode *w = conf_get(v, tls_keys[i]);
            snprintf(buf, sizeof buf, "listen: tls: %s", tls_keys[i]);
            if (!w)
                return conf_errat(l, v->line, "listen: tls: needs both cert and key (PEM files); %s is "
                                  "missing", tls_keys[i]);
            if ((rc = conf_as_name(l, buf, w, &f)))
                return rc;
        }
        p->listen_tls = 1;
    }
    if (!loopback && !p->listen_has_token && !p->listen_insecure)
        return conf_errat(l, addr->line, "listen: address %.64s is reachable from other machines: set "
                          "token: (env:NAME or file:PATH, at least 16 characters), or insecure: true to "
                          "serve it open on purpose", p->listen_address);
    return 0;
}

/* read_small reads the regular file path (at most max bytes) into a new
 * string (a FIFO or a device would block the check or never end). */
static int read_small(const char *path, size_t max, char **out, size_t *len, char *why, size_t whylen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, whylen, "%s", strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "not a regular file");
        close(fd);
        return -1;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        snprintf(why, whylen, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    char *b = xmalloc(max + 2);
    size_t n = fread(b, 1, max + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > max) {
        snprintf(why, whylen, bad ? "read error" : "over %zu bytes", max);
        free(b);
        return -1;
    }
    b[n] = 0;
    *out = b;
    *len = n;
    return 0;
}

static void wipe_free(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* listen_secrets reads what the listen: section points to: the token from
 * the environment or a file, the TLS certificate and key. */
static int listen_secrets(const ConfErr *l, Pipeline *p)
{
    const ConfNode *n = conf_get(p->root, "listen"), *v;
    char why[128];
    const char *bad;
    size_t len;
    if (!n || n->type != CONF_MAP)
        return 0;
    if ((v = conf_get(n, "token")) && !p->listen_token) {
        const char *t = v->value;
        char *val = NULL;
        if (strncmp(t, "env:", 4) == 0) {
            const char *e = getenv(t + 4);
            if (!e)
                return conf_errat(l, v->line, "listen: token: environment variable %.64s is not "
                             "set; export it before starting pickline", t + 4);
            if (!*e)
                return conf_errat(l, v->line, "listen: token: environment variable %.64s is "
                             "empty; set it to the token", t + 4);
            val = xstrdup(e);
        } else {
            if (read_small(t + 5, 4096, &val, &len, why, sizeof why) != 0)
                return conf_errat(l, v->line, "listen: token: cannot read %.200s: %s", t + 5, why);
            while (len && (val[len - 1] == '\n' || val[len - 1] == '\r'))
                val[--len] = 0; /* the newline an editor or echo leaves */
        }
        if ((bad = token_error(val)) != NULL) {
            wipe_free(val);
            return conf_errat(l, v->line, "listen: token: the token in %.200s %s", t, bad);
        }
        /* The tree is ours: keep the token in it, so it lives as long. */
        ConfNode *w = (ConfNode *)v;
        free(w->value);
        w->value = val;
        p->listen_token = val;
    }
    if ((v = conf_get(n, "tls"))) {
        static const char *const keys[] = {"cert", "key"};
        static const char *const marks[] = {"CERTIFICATE-----", "PRIVATE KEY-----"};
        char **dst[] = {&p->listen_tls_cert, &p->listen_tls_key};
        for (int i = 0; i < 2; i++) {
            const ConfNode *w = conf_get(v, keys[i]);
            char *pem;
            if (read_small(w->value, 1u << 20, &pem, &len, why, sizeof why) != 0)
                return conf_errat(l, w->line, "listen: tls: %s: cannot read %.200s: %s", keys[i], w->value, why);
            if (!strstr(pem, "-----BEGIN ") || !strstr(pem, marks[i])) {
                wipe_free(pem);
                return conf_errat(l, w->line, "listen: tls: %s: %.200s is not a PEM %s (-----BEGIN %s)",
                                  keys[i], w->value, i ? "private key" : "certificate", marks[i]);
            }
            *dst[i] = pem;
        }
    }
    return 0;
}

static int check_queue(const ConfErr *l, QueueDecl *q, const ConfNode *n)
{
    char buf[64];
    const ConfNode *v;
    double s;
    unsigned long long u;
    int rc;

    queue_conf_default(&q->conf);
    if (conf_is_null(n))
        return 0;
    if (n->type != CONF_MAP)
        return conf_errat(l, n->line, "expected a map of ttr, max_attempts, backoff, backoff_max, "
                     "max_body, key_retention, or nothing for the defaults (got %s)", conf_desc(n, buf, sizeof buf));
    if ((rc = conf_keys_check(l, n, "a queue", queue_keys)))
        return rc;
    if ((v = conf_get(n, "ttr"))) {
        if ((rc = conf_as_num(l, "ttr", v, 0.001, QSECS_MAX, "seconds", &s)))
            return rc;
        q->conf.ttr_ms = to_ms(s);
    }
    if ((v = conf_get(n, "max_attempts"))) {
        if ((rc = conf_as_uint(l, "max_attempts", v, 0, 1000000, &u)))
            return rc;
        q->conf.max_attempts = (uint32_t)u;
    }
    if ((v = conf_get(n, "backoff"))) {
        if ((rc = conf_as_num(l, "backoff", v, 0, QSECS_MAX, "seconds", &s)))
            return rc;
        q->conf.backoff_ms = to_ms(s);
    }
    if ((v = conf_get(n, "backoff_max"))) {
        if ((rc = conf_as_num(l, "backoff_max", v, 0, QSECS_MAX, "seconds", &s)))
            return rc;
        q->conf.backoff_max_ms = to_ms(s);
    }
    if ((v = conf_get(n, "max_body"))) {
        if ((rc = conf_as_uint(l, "max_body", v, 1, QUEUE_BODY_LIMIT, &u)))
            return rc;
        q->conf.max_body = (uint32_t)u;
    }
    if ((v = conf_get(n, "key_retention"))) {
        if ((rc = conf_as_num(l, "key_retention", v, 0, QUEUE_KEY_RETENTION_MAX, "seconds", &s)))
            return rc;
        q->conf.key_retention_s = (uint32_t)s;
    }
    if (q->conf.backoff_max_ms < q->conf.backoff_ms)
        return conf_errat(l, n->line, "backoff_max (%g s) is less than backoff (%g s); raise "
                     "backoff_max", q->conf.backoff_max_ms / 1000.0, q->conf.backoff_ms / 1000.0);
    return 0;
}

static int check_queues(const ConfErr *l, Pipeline *p, const ConfNode *n)
{
    char buf[64];
    int rc;
    if (conf_is_null(n))
        return 0;
    if (n->type != CONF_MAP)
        return conf_errat(l, n->line, "queues: expected a map of queue names (got %s); write "
                     "queues: {retrieve: , final: }", conf_desc(n, buf, sizeof buf));
    p->queues = xcalloc(n->n, sizeof *p->queues);
    for (size_t i = 0; i < n->n; i++) {
        QueueDecl *q = &p->queues[p->nqueues++];
        ConfErr ql = *l;
        q->name = n->keys[i];
        q->line = conf_key_line(n, (int)i);
        if (!queue_name_ok(q->name))
            return conf_errat(l, q->line, "queue name '%.64s' is invalid; use 1 to %d of A-Z a-z "
                         "0-9 _ . -", q->name, QUEUE_NAME_MAX);
        snprintf(ql.pfx, sizeof ql.pfx, "queue '%s': ", q->name);
        if ((rc = check_queue(&ql, q, n->kids[i])))
            return rc;
    }
    return 0;
}

/* --------------------------------------------------------------- stages */

/* out_add adds queue q to s's outputs unless it is there already. */
static void out_add(StageConf *s, const char *q)
{
    for (size_t i = 0; i < s->noutputs; i++)
        if (strcmp(s->outputs[i], q) == 0)
            return;
    s->outputs = xrealloc(s->outputs, (s->noutputs + 2) * sizeof *s->outputs);
    s->outputs[s->noutputs++] = q;
    s->outputs[s->noutputs] = NULL;
}

/* qref checks that n names a declared queue and sets *out. */
static int qref(const ConfErr *l, const Pipeline *p, const char *key, const ConfNode *n,
                const char **out)
{
    const char *q;
    int rc;
    if ((rc = conf_as_name(l, key, n, &q)))
        return rc;
    if (!pipeline_queue(p, q)) {
        ConfNear nr = CONF_NEAR(q);
        for (size_t i = 0; i < p->nqueues; i++)
            conf_near_try(&nr, p->queues[i].name);
        if (nr.best)
            return conf_errat(l, n->line, "%s queue '%.64s' is not declared; did you mean '%s'? "
                         "(or add it under queues:)", key, q, nr.best);
        return conf_errat(l, n->line, "%s queue '%.64s' is not declared; add it under queues:", key, q);
    }
    *out = q;
    return 0;
}

/* qrefs checks a queue or a list of queues and adds them to s's outputs. */
static int qrefs(const ConfErr *l, const Pipeline *p, const char *key, const ConfNode *n, StageConf *s)
{
    char buf[64];
    const char *q;
    int rc;
    if (n->type == CONF_SCALAR && !conf_is_null(n)) {
        if ((rc = qref(l, p, key, n, &q)))
            return rc;
        out_add(s, q);
        return 0;
    }
    if (n->type != CONF_SEQ || n->n == 0)
        return conf_errat(l, n->line, "%s: expected a queue name or a list of queue names (got %s)",
                     key, n->type == CONF_SEQ ? "an empty list" : conf_desc(n, buf, sizeof buf));
    for (size_t i = 0; i < n->n; i++) {
        if ((rc = qref(l, p, key, n->kids[i], &q)))
            return rc;
        out_add(s, q);
    }
    return 0;
}

static const char *show(char *buf, size_t size, const char *s)
{
    return http_printable(buf, size, s, strlen(s));
}

/* check_url: an http:// or https:// URL that no value can change (see
 * http_url_check); a template's {field}s only in the path and the query.
 * A callback base (base set) is a prefix: no query. */
static int check_url(const ConfErr *l, const char *key, const ConfNode *n, int tmpl, int base)
{
    char why[400];
    const char *u;
    int rc;
    if ((rc = conf_as_name(l, key, n, &u)))
        return rc;
    if (http_url_check(u, tmpl, why, sizeof why))
        return conf_errat(l, n->line, "%s: %s", key, why);
    if (base && strchr(u, '?'))
        return conf_errat(l, n->line, "%s: has a query (?...); the callback path is appended to "
                     "it, so give scheme://host:port and at most a path", key);
    return 0;
}

/* check_headers: a map of header names to values a stage sends with each
 * request (see http_header_check); at most HEADERS_MAX (the stages' header
 * arrays hold that many besides their own, and drop none). */
#define HEADERS_MAX 30
static int check_headers(const ConfErr *l, const char *key, int kline, const ConfNode *n)
{
    char buf[64], why[400];
    const char *s;
    int rc;
    if (n->type != CONF_MAP)
        return conf_errat(l, n->line, "%s: expected a map of names to strings (got %s)", key,
                     conf_desc(n, buf, sizeof buf));
    if (n->n > HEADERS_MAX)
        return conf_errat(l, kline, "%s: %zu headers; a stage sends at most %d", key, n->n,
                     HEADERS_MAX);
    for (size_t i = 0; i < n->n; i++) {
        char k[96];
        snprintf(k, sizeof k, "%s: %.64s", key, show(buf, sizeof buf, n->keys[i]));
        if ((rc = conf_as_str(l, k, n->kids[i], &s)))
            return rc;
        if (http_header_check(n->keys[i], "", why, sizeof why))
            return conf_errat(l, conf_key_line(n, (int)i), "%s: %s", key, why);
        if (http_header_check(n->keys[i], s, why, sizeof why))
            return conf_errat(l, n->kids[i]->line, "%s: %s", k, why);
    }
    return 0;
}

/* check_qname: a name written into a URL's query as it is (cursor_param):
 * unreserved characters only, so it cannot add parameters or end the URL. */
static int check_qname(const ConfErr *l, const char *key, const ConfNode *n)
{
    char buf[300];
    const char *s;
    int rc;
    if ((rc = conf_as_name(l, key, n, &s)))
        return rc;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("-._~", *p))
            return conf_errat(l, n->line, "%s: '%s' cannot be a query parameter name; use "
                         "letters, digits, - . _ ~", key, show(buf, sizeof buf, s));
    return 0;
}

static int check_map_of_strs(const ConfErr *l, const char *key, const ConfNode *n, int nonempty)
{
    char buf[64], k[96];
    const char *s;
    int rc;
    if (n->type != CONF_MAP || (nonempty && n->n == 0))
        return conf_errat(l, n->line, "%s: expected a map of names to strings (got %s)", key,
                     n->type == CONF_MAP ? "an empty map" : conf_desc(n, buf, sizeof buf));
    for (size_t i = 0; i < n->n; i++) {
        snprintf(k, sizeof k, "%s: %.64s", key, n->keys[i]);
        if ((rc = nonempty ? conf_as_name(l, k, n->kids[i], &s) : conf_as_str(l, k, n->kids[i], &s)))
            return rc;
        if (!n->keys[i][0] || strpbrk(n->keys[i], " \t:\r\n"))
            return conf_errat(l, conf_key_line(n, (int)i), "%s: '%.64s' is not a valid name", key,
                         n->keys[i]);
    }
    return 0;
}

/* check_cond checks a route's when: {field: F, OP: V} with exactly one OP. */
static int check_cond(const ConfErr *l, const ConfNode *n)
{
    char buf[64];
    const ConfNode *v;
    const char *s, *op = NULL;
    int rc, b;

    if (n->type != CONF_MAP)
        return conf_errat(l, n->line, "when: expected a map like {field: country, equals: NL} "
                     "(got %s)", conf_desc(n, buf, sizeof buf));
    if ((rc = conf_keys_check(l, n, "when", cond_keys)))
        return rc;
    if (!(v = conf_get(n, "field")))
        return conf_errat(l, n->line, "when: field: is required; name the field of the job to test");
    if ((rc = conf_as_name(l, "when: field", v, &s)))
        return rc;
    for (const char *const *o = ops; *o; o++) {
        if (!(v = conf_get(n, *o)))
            continue;
        if (op)
            return conf_errat(l, conf_key_line(n, conf_index(n, *o)), "when: has both '%s' and '%s'; give "
                         "exactly one of equals, not_equals, exists, in", op, *o);
        op = *o;
        if (strcmp(op, "exists") == 0) {
            if ((rc = conf_as_bool(l, "when: exists", v, &b)))
                return rc;
        } else if (strcmp(op, "in") == 0) {
            if (v->type != CONF_SEQ || v->n == 0)
                return conf_errat(l, v->line, "when: in: expected a list of values (got %s)",
                             v->type == CONF_SEQ ? "an empty list" : conf_desc(v, buf, sizeof buf));
            for (size_t i = 0; i < v->n; i++)
                if (v->kids[i]->type != CONF_SCALAR || conf_is_null(v->kids[i]))
                    return conf_errat(l, v->kids[i]->line, "when: in: item %zu: expected a single "
                                 "value (got %s)", i + 1, conf_desc(v->kids[i], buf, sizeof buf));
        } else if (v->type != CONF_SCALAR || conf_is_null(v)) {
            return conf_errat(l, v->line, "when: %s: expected a single value (got %s)%s", op,
                         conf_desc(v, buf, sizeof buf), v->type == CONF_SEQ ? "; use in: for a list" :
                         conf_is_null(v) ? "; use exists: false for a missing field" : "");
        }
    }
    if (!op)
        return conf_errat(l, n->line, "when: needs one of equals, not_equals, exists, in");
    return 0;
}

static int check_routes(const ConfErr *l, const Pipeline *p, const ConfNode *n, StageConf *s)
{
    char buf[64];
    const ConfNode *v;
    int rc;
    if (n->type != CONF_SEQ || n->n == 0)
        return conf_errat(l, n->line, "routes: expected a list of {when: ..., to: ...} (got %s)",
                     n->type == CONF_SEQ ? "an empty list" : conf_desc(n, buf, sizeof buf));
    for (size_t i = 0; i < n->n; i++) {
        const ConfNode *r = n->kids[i];
        ConfErr rl = *l;
        snprintf(rl.pfx, sizeof rl.pfx, "%.150sroutes item %zu: ", l->pfx, i + 1);
        if (r->type != CONF_MAP)
            return conf_errat(&rl, r->line, "expected a map {when: ..., to: ...} (got %s)",
                         conf_desc(r, buf, sizeof buf));
        if ((rc = conf_keys_check(&rl, r, "a route", rule_keys)))
            return rc;
        if (!(v = conf_get(r, "when")))
            return conf_errat(&rl, r->line, "when: is required; give a condition like "
                         "{field: country, equals: NL}");
        if ((rc = check_cond(&rl, v)))
            return rc;
        if (!(v = conf_get(r, "to")))
            return conf_errat(&rl, r->line, "to: is required; name the queue (or list of queues) "
                         "the matching jobs go to");
        if ((rc = qrefs(&rl, p, "to", v, s)))
            return rc;
    }
    return 0;
}

/* check_model_ref checks that n names a model declared under models:. With
 * need_models unset, a pipeline without models: takes any name (the rows
 * are staged under it, unchecked). */
static int check_model_ref(const ConfErr *l, const Pipeline *p, const char *key, const ConfNode *n,
                           int need_models)
{
    const char *m;
    int rc;
    if ((rc = conf_as_name(l, key, n, &m)))
        return rc;
    if (!p->models) {
        if (!need_models)
            return 0;
        return conf_errat(l, n->line, "%s: model '%.64s' is not declared; declare it under models: "
                     "(the pipeline has no models: section)", key, m);
    }
    if (models_find(p->models, m))
        return 0;
    ConfNear nr = CONF_NEAR(m);
    for (size_t i = 0; i < p->models->n; i++)
        conf_near_try(&nr, p->models->m[i].name);
    if (nr.best)
        return conf_errat(l, n->line, "%s: model '%.64s' is not declared; did you mean '%s'? (or "
                     "declare it under models:)", key, m, nr.best);
    return conf_errat(l, n->line, "%s: model '%.64s' is not declared; declare it under models: or "
                 "fix the name", key, m);
}

/* check_threshold checks reject_threshold: {count: N, rate: R}. */
static int check_threshold(const ConfErr *l, const char *key, const ConfNode *n)
{
    char buf[64];
    const ConfNode *v;
    unsigned long long u;
    double d;
    int rc;
    if (n->type != CONF_MAP || n->n == 0)
        return conf_errat(l, n->line, "%s: expected a map like {count: 100, rate: 0.05} (got %s)", key,
                     n->type == CONF_MAP ? "an empty map" : conf_desc(n, buf, sizeof buf));
    if ((rc = conf_keys_check(l, n, "reject_threshold", threshold_keys)))
        return rc;
    if ((v = conf_get(n, "count")) &&
        (rc = conf_as_uint(l, "reject_threshold: count", v, 0, THRESHOLD_COUNT_MAX, &u)))
        return rc;
    if ((v = conf_get(n, "rate")) &&
        (rc = conf_as_num(l, "reject_threshold: rate", v, 0, 1, "rejected rows per row", &d)))
        return rc;
    return 0;
}

int conf_threshold(const char *file, const ConfNode *n, unsigned long long *count,
                   double *rate, char *err, size_t errlen)
{
    int rc = conf_uint(file, n, "count", THRESHOLD_COUNT_MAX, count, err, errlen);
    return rc ? rc : conf_num(file, n, "rate", 0, 1, rate, err, errlen);
}

/* check_kind_keys checks the keys of s's kind k. */
static int check_kind_keys(const ConfErr *l, const Pipeline *p, const KindSpec *k, const ConfNode *n,
                           StageConf *s)
{
    const ConfNode *v;
    const char *str, **strs;
    size_t m;
    double d;
    int rc = 0;

    for (const ConfKey *key = k->keys; key && key->name && !rc; key++) {
        if (!(v = conf_get(n, key->name))) {
            if (key->required)
                return conf_errat(l, n->line, "%s: is required for %s %s stage; %s", key->name,
                             k->article, k->name, key->hint);
            continue;
        }
        switch (key->type) {
        case KEY_STR:
            rc = conf_as_name(l, key->name, v, &str);
            break;
        case KEY_URL:
        case KEY_TMPL:
        case KEY_BASE:
            rc = check_url(l, key->name, v, key->type == KEY_TMPL, key->type == KEY_BASE);
            break;
        case KEY_QNAME:
            rc = check_qname(l, key->name, v);
            break;
        case KEY_SECS:
            rc = conf_as_num(l, key->name, v, key->min, key->max, "seconds", &d);
            break;
        case KEY_STRS:
            if (!(rc = conf_as_strs(l, key->name, v, &strs, &m))) {
                for (size_t i = 0; i < m && !rc; i++)
                    if (!strs[i][0])
                        rc = conf_errat(l, v->line, "%s: has an empty name; remove it", key->name);
                free(strs);
            }
            break;
        case KEY_HEADERS:
            rc = check_headers(l, key->name, conf_key_line(n, conf_index(n, key->name)), v);
            break;
        case KEY_MERGE:
            rc = check_map_of_strs(l, key->name, v, 1);
            break;
        case KEY_ROUTES:
            rc = check_routes(l, p, v, s);
            break;
        case KEY_UINT: {
            unsigned long long u;
            rc = conf_as_uint(l, key->name, v, (unsigned long long)key->min,
                        (unsigned long long)key->max, &u);
            break;
        }
        case KEY_MODEL:
        case KEY_MODEL_OPT:
            rc = check_model_ref(l, p, key->name, v, key->type == KEY_MODEL);
            break;
        case KEY_THRESHOLD:
            rc = check_threshold(l, key->name, v);
            break;
        default: /* KEY_QUEUES */
            rc = qrefs(l, p, key->name, v, s);
            break;
        }
        if (!rc && key->check)
            rc = key->check(l, key->name, v);
    }
    return rc;
}

/* check_common reads the settings every stage has into s. */
static int check_common(const ConfErr *l, const ConfNode *n, StageConf *s)
{
    const ConfNode *v;
    unsigned long long u;
    int rc;

    s->concurrency = CONC_DEFAULT;
    s->timeout_s = 30;
    s->connect_timeout_s = 5;
    if ((v = conf_get(n, "concurrency"))) {
        if ((rc = conf_as_uint(l, "concurrency", v, 1, CONC_MAX, &u)))
            return rc;
        s->concurrency = (unsigned)u;
    }
    s->batch = s->concurrency < BATCH_CAP ? s->concurrency : BATCH_CAP;
    if ((v = conf_get(n, "batch"))) {
        if ((rc = conf_as_uint(l, "batch", v, 1, CONC_MAX, &u)))
            return rc;
        if (u > s->concurrency)
            return conf_errat(l, v->line, "batch: %llu is more than concurrency (%u); a stage "
                         "reserves at most concurrency jobs at a time", u, s->concurrency);
        s->batch = (unsigned)u;
    }
    if ((v = conf_get(n, "rate")) && (rc = conf_as_num(l, "rate", v, 0.001, 1e6, "requests per "
                                                 "second", &s->rate_per_s)))
        return rc;
    if ((v = conf_get(n, "timeout")) &&
        (rc = conf_as_num(l, "timeout", v, 0.001, SECS_MAX, "seconds", &s->timeout_s)))
        return rc;
    if ((v = conf_get(n, "connect_timeout")) &&
        (rc = conf_as_num(l, "connect_timeout", v, 0.001, SECS_MAX, "seconds", &s->connect_timeout_s)))
        return rc;
    if ((v = conf_get(n, "insecure")) && (rc = conf_as_bool(l, "insecure", v, &s->insecure)))
        return rc;
    return 0;
}

/* kind_list writes the names of kinds, comma-separated, into buf. */
static const char *kind_list(const KindSpec *const *kinds, char *buf, size_t size)
{
    size_t m = 0;
    buf[0] = '\0';
    for (const KindSpec *const *k = kinds; *k; k++)
        conf_join(buf, size, &m, (*k)->name);
    return buf;
}

static int check_stage(const ConfErr *l, Pipeline *p, size_t idx, const ConfNode *n,
                       const KindSpec *const *kinds)
{
    char buf[64], what[64], list[400];
    const ConfNode *v;
    const KindSpec *k = NULL;
    const char *kind;
    StageConf *s = &p->stages[p->nstages++];
    ConfErr sl = *l;
    int rc, i;

    snprintf(sl.pfx, sizeof sl.pfx, "stage %zu: ", idx + 1);
    if (n->type != CONF_MAP)
        return conf_errat(&sl, n->line, "expected a map with name:, kind: and the stage's settings "
                     "(got %s)", conf_desc(n, buf, sizeof buf));
    s->node = n;
    s->line = n->line;
    if (!(v = conf_get(n, "name")))
        return conf_errat(&sl, n->line, "name: is required; give the stage a name (1 to %d of "
                     "A-Z a-z 0-9 _ . -)", QUEUE_NAME_MAX);
    if ((rc = conf_as_name(&sl, "name", v, &s->name)))
        return rc;
    if (!queue_name_ok(s->name))
        return conf_errat(&sl, v->line, "name: '%.64s' is invalid; use 1 to %d of A-Z a-z 0-9 _ . -",
                     s->name, QUEUE_NAME_MAX);
    for (size_t j = 0; j + 1 < p->nstages; j++)
        if (strcmp(p->stages[j].name, s->name) == 0)
            return conf_errat(&sl, v->line, "stage name '%s' is already used at line %d; give each "
                         "stage its own name", s->name, p->stages[j].line);
    snprintf(sl.pfx, sizeof sl.pfx, "stage '%s': ", s->name);

    if (!(v = conf_get(n, "kind")))
        return conf_errat(&sl, n->line, "kind: is required; use one of %s",
                          kind_list(kinds, list, sizeof list));
    if ((rc = conf_as_name(&sl, "kind", v, &kind)))
        return rc;
    for (const KindSpec *const *kk = kinds; *kk && !k; kk++)
        if (strcmp((*kk)->name, kind) == 0)
            k = *kk;
    if (!k) {
        ConfNear nr = CONF_NEAR(kind);
        for (const KindSpec *const *kk = kinds; *kk; kk++)
            conf_near_try(&nr, (*kk)->name);
        if (nr.best)
            return conf_errat(&sl, v->line, "kind: unknown kind '%.64s'; did you mean '%s'?", kind,
                         nr.best);
        return conf_errat(&sl, v->line, "kind: unknown kind '%.64s'; use one of %s", kind,
                          kind_list(kinds, list, sizeof list));
    }
    s->kind = k->name;
    s->spec = k;

    if ((k->flags & KIND_SOURCE) && (i = conf_index(n, "input")) >= 0)
        return conf_errat(&sl, conf_key_line(n, i), "input: %s %s stage has no input (it is a source); "
                     "remove input:", k->article, k->name);
    if ((k->flags & KIND_ROUTE) && (i = conf_index(n, "output")) >= 0)
        return conf_errat(&sl, conf_key_line(n, i), "output: %s %s stage has no output:; it writes the "
                     "queues named in routes: (to:) and default:", k->article, k->name);
    if ((k->flags & KIND_SINK) && (i = conf_index(n, "output")) >= 0)
        return conf_errat(&sl, conf_key_line(n, i), "output: %s %s stage has no output (it seals its "
                     "rows into batches for qload: the end of the line); remove output:",
                     k->article, k->name);
    snprintf(what, sizeof what, "%s %s stage", k->article, k->name);
    if ((rc = stage_keys_check(&sl, n, what, stage_keys, k->keys, kinds)))
        return rc;

    if (!(k->flags & KIND_SOURCE)) {
        if (!(v = conf_get(n, "input"))) {
            if (!(k->flags & KIND_INPUT_OPTIONAL))
                return conf_errat(&sl, n->line, "input: is required; name the queue this stage reads");
        } else if ((rc = qref(&sl, p, "input", v, &s->input))) {
            return rc;
        }
    }
    if (!(k->flags & (KIND_ROUTE | KIND_SINK))) {
        if (!(v = conf_get(n, "output")))
            return conf_errat(&sl, n->line, "output: is required; name the queue this stage writes%s",
                         (k->flags & KIND_FAN_OUT) ? " (or a list: each gets every job)" : "");
        if (v->type == CONF_SEQ && v->n != 1 && !(k->flags & KIND_FAN_OUT))
            return conf_errat(&sl, v->line, "output: %s %s stage writes exactly one queue (got %zu)",
                         k->article, k->name, v->n);
        if ((rc = qrefs(&sl, p, "output", v, s)))
            return rc;
    }
    if ((rc = check_common(&sl, n, s)) || (rc = check_kind_keys(&sl, p, k, n, s)))
        return rc;
    if ((k->flags & KIND_SINK) && !p->models)
        return conf_errat(&sl, n->line, "%s %s stage needs the models: section (qload loads batches "
                     "by their model); declare the model of its rows under models:", k->article,
                     k->name);
    if (k->flags & KIND_LISTENER)
        p->listen_enabled = 1;
    return 0;
}

static int check_stages(const ConfErr *l, Pipeline *p, const ConfNode *n, const KindSpec *const *kinds)
{
    char buf[64];
    int rc;
    if (n->type != CONF_SEQ || n->n == 0)
        return conf_errat(l, n->line, "stages: expected a list of stages (- name: ..., kind: ...) "
                     "(got %s)", n->type == CONF_SEQ ? "an empty list" : conf_desc(n, buf, sizeof buf));
    p->stages = xcalloc(n->n, sizeof *p->stages);
    for (size_t i = 0; i < n->n; i++)
        if ((rc = check_stage(l, p, i, n->kids[i], kinds)))
            return rc;
    return 0;
}

static int check_top(const ConfErr *l, Pipeline *p, const KindSpec *const *kinds)
{
    char buf[64];
    const ConfNode *root = p->root, *v;
    int rc;

    if (!root || conf_is_null(root))
        return conf_errat(l, root ? root->line : 1, "the file has no pipeline in it; it needs at "
                     "least queues: and stages:");
    if (root->type != CONF_MAP)
        return conf_errat(l, root->line, "expected a map with queues:, stages: ... at the top level "
                     "(got %s)", conf_desc(root, buf, sizeof buf));
    if ((rc = conf_keys_check(l, root, "the top level", top_keys)))
        return rc;
    for (size_t i = 0; i < root->n; i++)
        if (strcmp(root->keys[i], "target") == 0)
            return conf_errat(l, conf_key_line(root, (int)i), "%s: not supported by this version of "
                         "pickline yet; remove it for now (give qload --target DSN)",
                         root->keys[i]);
    if ((v = conf_get(root, "data")) && (rc = conf_as_name(l, "data", v, &p->data_dir)))
        return rc;
    if ((v = conf_get(root, "listen")) && (rc = check_listen(l, p, v)))
        return rc;
    if ((v = conf_get(root, "drain")) &&
        (rc = conf_as_num(l, "drain", v, 0, SECS_MAX, "seconds", &p->drain_s)))
        return rc;
    if ((v = conf_get(root, "queues")) && (rc = check_queues(l, p, v)))
        return rc;
    /* Models before stages: the stages' model: keys name them. */
    if ((v = conf_get(root, "models")) &&
        (rc = models_parse(l->file, v, &p->models, l->err, l->errlen)))
        return rc;
    if (!kinds)
        return 0; /* a reader of the models and queues: the stages are not its business */
    if (!(v = conf_get(root, "stages")))
        return conf_errat(l, root->line, "stages: is required; list the stages of the pipeline");
    return check_stages(l, p, v, kinds);
}

/* ============================================================= pipeline */

/* read_all reads path into a new NUL-terminated buffer. */
static int read_all(const ConfErr *l, const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;

    if (!f) {
        rc = errno;
        if (l->err && l->errlen)
            snprintf(l->err, l->errlen, "%s: cannot read the pipeline file: %s", l->file,
                     strerror(rc));
        return rc;
    }
    for (;;) {
        if (cap - n < 4096) {
            cap = cap ? 2 * cap : 16384;
            buf = xrealloc(buf, cap + 1);
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n > FILE_MAX) {
            rc = conf_errat(l, 1, "the file is over %u MiB; a pipeline file is small", FILE_MAX >> 20);
            goto fail;
        }
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        rc = EIO;
        if (l->err && l->errlen)
            snprintf(l->err, l->errlen, "%s: cannot read the pipeline file: %s", l->file,
                     strerror(rc));
        goto fail;
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
fail:
    fclose(f);
    free(buf);
    return rc;
}

/* parse checks text (len bytes, NUL after them, owned by p afterwards)
 * into p; name is the file for messages and p->path. */
static int parse(Pipeline *p, const ConfErr *l, char *text, size_t len, const KindSpec *const *kinds)
{
    p->text = text;
    p->text_len = len;
    p->listen_address = "127.0.0.1";
    p->listen_port = 7380;
    p->listen_max_body = 1u << 20;
    p->drain_s = 10;
    int rc = conf_read(l, text, len, &p->root);
    return rc ? rc : check_top(l, p, kinds);
}

int pipeline_load(const char *path, const KindSpec *const *kinds, Pipeline **out, char *err,
                  size_t errlen)
{
    Pipeline *p = xcalloc(1, sizeof *p);
    ConfErr l = conf_err(path, err, errlen);
    char *text = NULL;
    size_t len = 0;
    int rc;

    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    p->path = xstrdup(path);
    if ((rc = read_all(&l, path, &text, &len)) || (rc = parse(p, &l, text, len, kinds)) ||
        (rc = listen_secrets(&l, p)))
        goto fail;
    *out = p;
    return 0;
fail:
    if (!p->text)
        free(text);
    pipeline_free(p);
    return rc;
}

int pipeline_parse(const char *name, const char *text, size_t len, const KindSpec *const *kinds,
                   Pipeline **out, char *err, size_t errlen)
{
    Pipeline *p = xcalloc(1, sizeof *p);
    ConfErr l = conf_err(name, err, errlen);
    int rc;

    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    p->path = xstrdup(l.file);
    if (len > FILE_MAX) {
        rc = conf_errat(&l, 1, "the file is over %u MiB; a pipeline file is small", FILE_MAX >> 20);
        goto fail;
    }
    char *copy = xmalloc(len + 1);
    memcpy(copy, text, len);
    copy[len] = '\0';
    if ((rc = parse(p, &l, copy, len, kinds)))
        goto fail;
    *out = p;
    return 0;
fail:
    pipeline_free(p);
    return rc;
}

void pipeline_free(Pipeline *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->nstages; i++)
        free(p->stages[i].outputs);
    free(p->stages);
    free(p->queues);
    models_free(p->models); /* before the tree its names point into */
    conf_free(p->root);
    free(p->text);
    free(p->path);
    free(p->listen_tls_cert);
    wipe_free(p->listen_tls_key);
    free(p);
}

const QueueDecl *pipeline_queue(const Pipeline *p, const char *name)
{
    for (size_t i = 0; i < p->nqueues; i++)
        if (strcmp(p->queues[i].name, name) == 0)
            return &p->queues[i];
    return NULL;
}

/* ---------------------------------------------------------------- graph */

static int writes(const StageConf *s, const char *q)
{
    for (size_t i = 0; i < s->noutputs; i++)
        if (strcmp(s->outputs[i], q) == 0)
            return 1;
    return 0;
}

/* ready: every other stage that writes s's input has been printed. */
static int ready(const Pipeline *p, const char *done, size_t i)
{
    const StageConf *s = &p->stages[i];
    for (size_t j = 0; s->input && j < p->nstages; j++)
        if (j != i && !done[j] && writes(&p->stages[j], s->input))
            return 0;
    return 1;
}

/* fed: some printed stage writes s's input (a cycle is entered there). */
static int fed(const Pipeline *p, const char *done, size_t i)
{
    for (size_t j = 0; p->stages[i].input && j < p->nstages; j++)
        if (done[j] && writes(&p->stages[j], p->stages[i].input))
            return 1;
    return 0;
}

/* pipeline_graph orders the stages topologically (file order among equals,
 * sources first); in a cycle it goes on with a stage a printed one feeds. */
void pipeline_graph(const Pipeline *p, FILE *f)
{
    size_t n = p->nstages, wn = 0, wk = 0, wi = 0;
    char *done = xcalloc(n + 1, 1);

    for (size_t i = 0; i < n; i++) {
        const StageConf *s = &p->stages[i];
        wn = strlen(s->name) > wn ? strlen(s->name) : wn;
        wk = strlen(s->kind) > wk ? strlen(s->kind) : wk;
        const char *in = s->input ? s->input : "(source)";
        wi = strlen(in) > wi ? strlen(in) : wi;
    }
    for (size_t k = 0; k < n; k++) {
        size_t pick = SIZE_MAX;
        for (int pass = 0; pass < 4 && pick == SIZE_MAX; pass++)
            for (size_t i = 0; i < n && pick == SIZE_MAX; i++) {
                if (done[i])
                    continue;
                if ((pass == 0 && !p->stages[i].input) || (pass == 1 && ready(p, done, i)) ||
                    (pass == 2 && fed(p, done, i)) || pass == 3)
                    pick = i;
            }
        const StageConf *s = &p->stages[pick];
        done[pick] = 1;
        fprintf(f, "  %-*s  %-*s  %-*s  ->", (int)wn, s->name, (int)wk, s->kind, (int)wi,
                s->input ? s->input : "(source)");
        for (size_t j = 0; j < s->noutputs; j++)
            fprintf(f, "%s%s", j ? ", " : " ", s->outputs[j]);
        if (s->spec && s->spec->graph_note)
            fprintf(f, " (%s)", s->spec->graph_note);
        fputc('\n', f);
    }
    for (size_t q = 0; q < p->nqueues; q++) {
        const char *name = p->queues[q].name;
        int read = 0, written = 0;
        for (size_t i = 0; i < n; i++) {
            read |= p->stages[i].input && strcmp(p->stages[i].input, name) == 0;
            written |= writes(&p->stages[i], name);
        }
        if (!read)
            fprintf(f, "  %s: %s\n", name, written ? "end of the line" : "not used by any stage");
        else if (!written)
            fprintf(f, "  %s: fed from outside (no stage writes it)\n", name);
    }
    free(done);
}
