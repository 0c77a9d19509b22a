/* pipeline.h: the pipeline file (YAML): queues, stages, listener settings.
 *
 * The file is read into a tree of nodes that remember their line (conf.h),
 * then checked against the schema of each section and of each stage kind:
 * unknown keys, wrong types and references to undeclared queues are errors
 * that name file:line and give a hint. A stage kind describes its own keys
 * (a KindSpec, below); the loader is handed the list of kinds and knows
 * none of them by name. Stage modules read their own keys from the stage's
 * node with conf.h's conf_* getters. */
#ifndef PL_PIPELINE_H
#define PL_PIPELINE_H

#include "conf.h"
#include "queue.h"

#include <stddef.h>
#include <stdio.h>

/* ------------------------------------------------------------- stage kinds
 *
 * A stage kind describes itself with a KindSpec: its name, flags that say
 * how its stages connect to queues, and the keys it takes besides the ones
 * every stage has, each with its type, range and hint. pipeline_load checks
 * every stage against the spec of its kind; the kind reads the same keys
 * later with the same ranges (the runtime's StageKind, stage.h, starts with
 * its KindSpec; the kinds themselves are in stages/). */

#define CONF_SECS_MAX 86400.0  /* timeouts, intervals: at most a day */

/* ConfKey.type: each is checked by pipeline_load. KEY_URL, KEY_TMPL,
 * KEY_BASE, KEY_HEADERS and KEY_QNAME are what a stage sends: they are
 * checked so that no value in them can change the request (see
 * http_url_check). */
enum {
    KEY_STR,        /* a non-empty string */
    KEY_STRS,       /* a string or a list of non-empty strings */
    KEY_SECS,       /* a number of seconds from min to max */
    KEY_UINT,       /* a whole number from min to max */
    KEY_URL,        /* an http:// or https:// URL, sent as written (no {field}s) */
    KEY_TMPL,       /* a URL template: {field}s in its path and query */
    KEY_BASE,       /* a URL a path is appended to (callback_base): no query */
    KEY_QNAME,      /* a name written into a URL's query as it is (cursor_param) */
    KEY_HEADERS,    /* a map of header names to values, sent with each request */
    KEY_MERGE,      /* a map of names to non-empty names (response field: row field) */
    KEY_QUEUES,     /* a queue or a list of queues the stage writes */
    KEY_ROUTES,     /* a list of {when: CONDITION, to: QUEUES}: the queues it writes */
    KEY_MODEL,      /* a model declared under models: (which must be there) */
    KEY_MODEL_OPT,  /* KEY_MODEL when the pipeline declares models, else any name */
    KEY_THRESHOLD,  /* {count: N, rate: R}: see conf_threshold */
};

/* ConfKey: one key of a stage kind; a table of them ends with {0}. */
typedef struct ConfKey {
    const char *name;
    int type;                  /* KEY_* */
    int required;
    double min, max;           /* KEY_SECS, KEY_UINT: the range, for the check and the read */
    const char *hint;          /* required: what to write when it is missing */
    /* check, when set, runs after the type's own check passed: the kind's
     * own rule about the value (a DSN libpq can parse, GET or POST).
     * Returns 0, or conf_errat's PL_EINVAL naming key and v's line. */
    int (*check)(const ConfErr *e, const char *key, const ConfNode *v);
} ConfKey;

/* KindSpec.flags */
enum {
    KIND_SOURCE = 1 << 0,         /* no input queue: it produces on its own */
    KIND_INPUT_OPTIONAL = 1 << 1, /* works an input queue when given one, produces anyway */
    KIND_SINK = 1 << 2,           /* no output: (the end of the line: batches) */
    KIND_ROUTE = 1 << 3,          /* writes the queues of routes: and default:, no output: */
    KIND_FAN_OUT = 1 << 4,        /* output: may name several queues (each gets every job) */
    KIND_LISTENER = 1 << 5,       /* needs the HTTP listener (callbacks) */
};

/* KindSpec: a stage kind as the pipeline file sees it. */
typedef struct KindSpec {
    const char *name;          /* kind: NAME */
    const char *article;       /* "an" http_poll stage, "a" route stage */
    unsigned flags;            /* KIND_* */
    const ConfKey *keys;       /* its own keys, ending with {0}; NULL: none */
    const char *graph_note;    /* said after its outputs by pipeline_graph, or NULL */
} KindSpec;

/* conf_key returns the key named name in keys, or NULL. */
const ConfKey *conf_key(const ConfKey *keys, const char *name);

/* conf_threshold reads a reject_threshold map {count: N, rate: R} (checked
 * by KEY_THRESHOLD with the same ranges): each of *count and *rate is set
 * when given, else left alone. 0 or PL_EINVAL with err set. */
int conf_threshold(const char *file, const ConfNode *n, unsigned long long *count,
                   double *rate, char *err, size_t errlen);

/* ---------------------------------------------------------------- pipeline */

typedef struct QueueDecl {
    const char *name;
    QueueConf conf;
    int line;
} QueueDecl;

typedef struct StageConf {
    const char *name;           /* unique */
    const char *kind;           /* its kind's name */
    const KindSpec *spec;       /* its kind */
    int line;
    const char *input;          /* NULL for sources (KIND_SOURCE), and for a KIND_INPUT_OPTIONAL
                                 * stage given none */
    const char **outputs;       /* every queue the stage may write, NULL-terminated */
    size_t noutputs;
    const ConfNode *node;       /* the stage's map, for its kind's own keys */
    /* common settings, defaults filled in */
    unsigned concurrency;       /* jobs in flight; default 8 */
    unsigned batch;             /* jobs reserved per commit; default 1..concurrency */
    double rate_per_s;          /* per host; 0 none */
    double timeout_s, connect_timeout_s;
    int insecure;
    /* the priority of the jobs it puts (lower is more urgent): by default
     * its input job's; `priority: N` sets it; `priority_field: F` takes it
     * from field F of the record an output carries (stage.h: slot_priority) */
    int has_priority;           /* priority: N is given */
    uint32_t priority;
    const char *priority_field; /* NULL: none */
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
    /* health: when GET /ready says unready (engine/runtime/observe.h) */
    unsigned health_dep_failures;       /* a stage's dependency failing this many attempts in
                                         * a row; default 5 */
    double health_batch_wait_s;         /* a batch sealed and not loaded this long; default 600 */
    unsigned long long health_disk_min; /* bytes free on the data directory's disk; default
                                         * 64 MiB (0: not checked) */
    QueueDecl *queues;
    size_t nqueues;
    StageConf *stages;
    size_t nstages;
    ConfNode *root;             /* private */
} Pipeline;

/* pipeline_load reads and checks path. kinds is the NULL-terminated list
 * of the stage kinds there are: each stage is checked against the spec of
 * its kind. The environment's variables are expanded in every value first
 * (conf_subst: ${NAME}, ${NAME:-default}); p->text keeps the file as
 * written, unexpanded. With kinds NULL (a reader: qctl, qload, which run
 * no stage and no listener) only queues: and models: are expanded and
 * read; the other sections are skipped, unchecked (nstages is 0, the
 * listen and data settings are the defaults). Returns 0 and *out, or
 * PL_EINVAL (or an errno value) with a message in err: "FILE:LINE: what;
 * hint". With kinds, it also reads what the listen: section points to (the
 * token from the environment or a file, the TLS certificate and key); no
 * message ever shows a token, nor the expansion of a variable. */
int pipeline_load(const char *path, const KindSpec *const *kinds, Pipeline **out, char *err,
                  size_t errlen);

/* pipeline_parse is pipeline_load for a file already read: text (len
 * bytes) named name in messages, without reading the token or TLS files
 * (qctl and qload run no listener). The engine keeps the text of the file it
 * runs in the store, so qctl and qload read the same models. */
int pipeline_parse(const char *name, const char *text, size_t len, const KindSpec *const *kinds,
                   Pipeline **out, char *err, size_t errlen);

/* ------------------------------------------------------------------ secrets
 *
 * A setting that holds a secret (the listener's token, a stage's dsn: and
 * its header values) may name where the secret is instead of holding it:
 * "env:NAME" (an environment variable, set and not empty) or "file:PATH"
 * (a file: systemd's credentials, a Kubernetes secret, a 0600 file). The
 * pipeline file, and the copy of it the engine keeps in the store, then
 * hold no secret. */

/* pipeline_secret_is_ref says whether s names where a secret is (it
 * starts with env: or file:). pipeline_secret_ref_error returns what is
 * wrong with the form of such an s (an env: without a valid name, a file:
 * without a path), or NULL. */
int pipeline_secret_is_ref(const char *s);
const char *pipeline_secret_ref_error(const char *s);

/* pipeline_secret reads secret setting s into *out: for "env:NAME" the
 * variable's value, for "file:PATH" the file's text (a regular file of at
 * most 64 KiB; a final newline is dropped), else s itself. Returns 0 (free
 * *out with pipeline_secret_free, which wipes it), or PL_EINVAL with why
 * ("environment variable X is not set; export it ...", "cannot read PATH:
 * No such file or directory"), which never shows the secret. */
int pipeline_secret(const char *s, char **out, char *why, size_t whylen);
void pipeline_secret_free(char *s);

/* pipeline_free frees p; NULL is a no-op. */
void pipeline_free(Pipeline *p);

/* pipeline_graph prints the stage graph: each stage with the queue it reads
 * and the queues it writes, sources first, in the order of the flow. */
void pipeline_graph(const Pipeline *p, FILE *f);

/* pipeline_queue finds a declared queue, or NULL. */
const QueueDecl *pipeline_queue(const Pipeline *p, const char *name);

#endif
