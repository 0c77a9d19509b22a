/* pipeline.c: the pipeline file. conf_read reads the YAML into a tree of
 * ConfNodes (conf.h: each remembers its line; anchors, aliases and tags are
 * refused, duplicate keys are errors), then the schema checks walk the tree
 * and build the Pipeline: here the top level, the listener and its secrets,
 * the queues, loading and freeing, and the stage graph; the stages in
 * pipeline_stages.c. Loading stops at the first error, whose message is
 * "FILE:LINE: what is wrong; hint". */
#include "pipeline.h"
#include "pipeline_int.h"

#include "http_check.h"
#include "model.h"
#include "pl.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_MAX (16u << 20)   /* a pipeline file is small; refuse anything huge */
#define QSECS_MAX 4294967.0    /* queue times: ms must fit a uint32_t */

/* =============================================================== schema */

static const char *const top_keys[] = {"data", "listen", "drain", "health", "queues", "stages",
                                       "models", "target", NULL};
static const char *const health_keys[] = {"dependency_failures", "batch_wait", "disk_min", NULL};
static const char *const listen_keys[] = {"address", "port", "token", "insecure", "max_body", "max_conns",
                                          "max_conns_per_ip", "idle_timeout", "request_timeout", "tls", NULL};
static const char *const queue_keys[] = {"ttr", "max_attempts", "backoff", "backoff_max",
                                         "max_body", "key_retention", NULL};

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

/* check_health reads the health: section: when GET /ready says unready. */
static int check_health(const ConfErr *l, Pipeline *p, const ConfNode *n)
{
    char buf[64];
    const ConfNode *v;
    unsigned long long u;
    int rc;
    if (conf_is_null(n))
        return 0;
    if (n->type != CONF_MAP)
        return conf_errat(l, n->line, "health: expected a map of dependency_failures, batch_wait, "
                     "disk_min (got %s)", conf_desc(n, buf, sizeof buf));
    if ((rc = conf_keys_check(l, n, "health", health_keys)))
        return rc;
    if ((v = conf_get(n, "dependency_failures"))) {
        if ((rc = conf_as_uint(l, "health: dependency_failures", v, 1, 1000000, &u)))
            return rc;
        p->health_dep_failures = (unsigned)u;
    }
    if ((v = conf_get(n, "batch_wait")) &&
        (rc = conf_as_num(l, "health: batch_wait", v, 1, 7 * CONF_SECS_MAX, "seconds",
                          &p->health_batch_wait_s)))
        return rc;
    if ((v = conf_get(n, "disk_min")) &&
        (rc = conf_as_uint(l, "health: disk_min", v, 0, 1ull << 50, &p->health_disk_min)))
        return rc;
    return 0;
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
        if (pipeline_secret_is_ref(t)) {
            if ((why = pipeline_secret_ref_error(t)) != NULL)
                return conf_errat(l, v->line, "listen: token: %s", why);
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

/* ---------------------------------------------------------------- secrets */

#define SECRET_FILE_MAX 65536

int pipeline_secret_is_ref(const char *s)
{
    return strncmp(s, "env:", 4) == 0 || strncmp(s, "file:", 5) == 0;
}

const char *pipeline_secret_ref_error(const char *s)
{
    if (strncmp(s, "env:", 4) == 0) {
        const char *name = s + 4;
        if (!*name || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
                strlen(name) || isdigit((unsigned char)*name))
            return "env: needs a variable name (letters, digits, _), like env:PICKLINE_TOKEN";
    } else if (strncmp(s, "file:", 5) == 0 && !s[5]) {
        return "file: needs a path, like file:/etc/pickline/token";
    }
    return NULL;
}

int pipeline_secret(const char *s, char **out, char *why, size_t whylen)
{
    char w[128];
    size_t len;
    *out = NULL;
    if (strncmp(s, "env:", 4) == 0) {
        const char *e = getenv(s + 4);
        if (!e || !*e) {
            snprintf(why, whylen, "environment variable %.64s is %s; %s it before starting "
                     "pickline", s + 4, e ? "empty" : "not set", e ? "set" : "export");
            return PL_EINVAL;
        }
        *out = xstrdup(e);
        return 0;
    }
    if (strncmp(s, "file:", 5) != 0) {
        *out = xstrdup(s);
        return 0;
    }
    if (read_small(s + 5, SECRET_FILE_MAX, out, &len, w, sizeof w) != 0) {
        snprintf(why, whylen, "cannot read %.200s: %s", s + 5, w);
        return PL_EINVAL;
    }
    while (len && ((*out)[len - 1] == '\n' || (*out)[len - 1] == '\r'))
        (*out)[--len] = 0; /* the newline an editor or echo leaves */
    if (strlen(*out) != len) {
        wipe_free(*out);
        *out = NULL;
        snprintf(why, whylen, "%.200s holds a NUL byte; a secret is text", s + 5);
        return PL_EINVAL;
    }
    return 0;
}

void pipeline_secret_free(char *s)
{
    wipe_free(s);
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
        char *val = NULL, wbuf[300];
        if (pipeline_secret(t, &val, wbuf, sizeof wbuf) != 0)
            return conf_errat(l, v->line, "listen: token: %s", wbuf);
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
    /* The environment's ${VAR}s: everywhere for the engine and check; for
     * a reader (qctl, qload: kinds NULL) only in what it reads, the queues
     * and models (the rest is the engine's business, and its variables
     * need not be set where qctl runs). */
    if (kinds) {
        if ((rc = conf_subst(l, (ConfNode *)root)))
            return rc;
    } else {
        for (size_t i = 0; i < root->n; i++)
            if ((!strcmp(root->keys[i], "queues") || !strcmp(root->keys[i], "models")) &&
                (rc = conf_subst(l, root->kids[i])))
                return rc;
    }
    if (kinds) {
        if ((v = conf_get(root, "data")) && (rc = conf_as_name(l, "data", v, &p->data_dir)))
            return rc;
        if ((v = conf_get(root, "listen")) && (rc = check_listen(l, p, v)))
            return rc;
        if ((v = conf_get(root, "drain")) &&
            (rc = conf_as_num(l, "drain", v, 0, CONF_SECS_MAX, "seconds", &p->drain_s)))
            return rc;
        if ((v = conf_get(root, "health")) && (rc = check_health(l, p, v)))
            return rc;
    }
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
    return pipeline_check_stages(l, p, v, kinds);
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
    p->health_dep_failures = 5;
    p->health_batch_wait_s = 600;
    p->health_disk_min = 64u << 20;
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
        (kinds && (rc = listen_secrets(&l, p))))
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
