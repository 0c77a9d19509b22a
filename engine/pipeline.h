/* pipeline.h: the pipeline file (YAML): queues, stages, listener settings.
 *
 * The file is read with libyaml into a tree of nodes that remember their
 * line, then checked against the schema of each section and stage kind:
 * unknown keys, wrong types and references to undeclared queues are errors
 * that name file:line and give a hint. Stage modules read their own keys
 * from the stage's node with the conf_* getters. */
#ifndef PL_PIPELINE_H
#define PL_PIPELINE_H

#include "queue.h"

#include <stddef.h>
#include <stdio.h>

/* ---------------------------------------------------------------- tree */

enum { CONF_SCALAR, CONF_MAP, CONF_SEQ };

typedef struct ConfNode ConfNode;
struct ConfNode {
    int type;
    int line;            /* 1-based line in the file */
    char *value;         /* CONF_SCALAR: the text (NUL-terminated) */
    int quoted;          /* CONF_SCALAR: written in quotes (a string, never a number) */
    size_t n;            /* CONF_MAP / CONF_SEQ: number of children */
    char **keys;         /* CONF_MAP: keys[i] names kids[i] */
    ConfNode **kids;
};

/* conf_get returns map's child named key, or NULL (also for a non-map). */
const ConfNode *conf_get(const ConfNode *map, const char *key);

/* Typed getters for a key of map. Each returns 0 and sets *out (left alone
 * when the key is absent), or PL_EINVAL with err set to
 * "FILE:LINE: KEY: expected a number (got 'abc')" style text. */
int conf_str(const char *file, const ConfNode *map, const char *key, const char **out, char *err, size_t errlen);
int conf_num(const char *file, const ConfNode *map, const char *key, double min, double max, double *out, char *err, size_t errlen);
int conf_uint(const char *file, const ConfNode *map, const char *key, unsigned long long max, unsigned long long *out, char *err, size_t errlen);
int conf_bool(const char *file, const ConfNode *map, const char *key, int *out, char *err, size_t errlen);
/* conf_strs reads a string or a list of strings into a NULL-terminated
 * array of views (free the array, not the strings). */
int conf_strs(const char *file, const ConfNode *map, const char *key, const char ***out, size_t *n, char *err, size_t errlen);

/* ConfErr: where a loader's messages go (pipeline.c, model.c); pfx names
 * the part being checked ("stage 'extract': ") and is copied into nested
 * contexts. conf_errat writes "FILE:LINE: PFX message" into err and
 * returns PL_EINVAL. */
typedef struct ConfErr {
    const char *file;
    char *err;
    size_t errlen;
    char pfx[200];
} ConfErr;
int conf_errat(const ConfErr *l, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* conf_edit_distance is the edit distance of a and b (insertions,
 * deletions, changes and swaps of neighbours each count 1), for "did you
 * mean" hints; words over 40 bytes count as far apart (SIZE_MAX). */
size_t conf_edit_distance(const char *a, const char *b);

/* ---------------------------------------------------------------- pipeline */

typedef struct QueueDecl {
    const char *name;
    QueueConf conf;
    int line;
} QueueDecl;

typedef struct StageConf {
    const char *name;           /* unique */
    const char *kind;           /* http_poll, http_extract, http_enrich, async_submit, route, noop */
    int line;
    const char *input;          /* NULL for sources (http_poll) */
    const char **outputs;       /* every queue the stage may write, NULL-terminated */
    size_t noutputs;
    const ConfNode *node;       /* the stage's map, for its kind's own keys */
    /* common settings, defaults filled in */
    unsigned concurrency;       /* jobs in flight; default 8 */
    unsigned batch;             /* jobs reserved per commit; default 1..concurrency */
    double rate_per_s;          /* per host; 0 none */
    double timeout_s, connect_timeout_s;
    int insecure;
} StageConf;

struct Models; /* model.h */

typedef struct Pipeline {
    char *path;
    char *text;                 /* the file as read (NUL-terminated), for the store */
    size_t text_len;
    struct Models *models;      /* the models: section (model.h), or NULL when none */
    const char *data_dir;       /* NULL: --data, $PICKLINE_DATA, ./pickline-data */
    int listen_enabled;
    const char *listen_address; /* default 127.0.0.1 */
    unsigned listen_port;       /* default 7380 */
    const char *listen_token;   /* NULL: none. "env:NAME" or "file:PATH" in the file: the
                                 * token read by pipeline_load (pipeline_parse leaves NULL) */
    int listen_has_token;       /* a token: key is given (even when not read) */
    int listen_insecure;        /* insecure: true (a non-loopback address without a token) */
    size_t listen_max_body;     /* default 1 MiB */
    unsigned listen_max_conns;  /* 0: the listener's default (listen.h), and so on */
    unsigned listen_max_conns_per_ip;
    unsigned listen_idle_timeout_s;
    unsigned listen_request_timeout_s;
    char *listen_tls_cert;      /* tls: the PEM text of cert and key, read by pipeline_load;
                                 * NULL: plain HTTP (pipeline_parse leaves NULL) */
    char *listen_tls_key;
    int listen_tls;             /* a tls: section is given (even when not read) */
    double drain_s;             /* SIGTERM: how long in-flight work may finish; default 10 */
    QueueDecl *queues;
    size_t nqueues;
    StageConf *stages;
    size_t nstages;
    ConfNode *root;             /* private */
} Pipeline;

/* pipeline_load reads and checks path. Returns 0 and *out, or PL_EINVAL
 * (or an errno value) with a message in err: "FILE:LINE: what; hint".
 * It also reads what the listen: section points to (the token from the
 * environment or a file, the TLS certificate and key); no message ever
 * shows a token. */
int pipeline_load(const char *path, Pipeline **out, char *err, size_t errlen);

/* pipeline_parse is pipeline_load for a file already read: text (len
 * bytes) named name in messages, without reading the token or TLS files
 * (qctl and qload run no listener). The engine keeps the text of the file it
 * runs in the store, so qctl and qload read the same models. */
int pipeline_parse(const char *name, const char *text, size_t len, Pipeline **out, char *err,
                   size_t errlen);

/* pipeline_free frees p; NULL is a no-op. */
void pipeline_free(Pipeline *p);

/* pipeline_graph prints the stage graph: each stage with the queue it reads
 * and the queues it writes, sources first, in the order of the flow. */
void pipeline_graph(const Pipeline *p, FILE *f);

/* pipeline_queue finds a declared queue, or NULL. */
const QueueDecl *pipeline_queue(const Pipeline *p, const char *name);

#endif
