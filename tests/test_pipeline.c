/* test_pipeline.c: the pipeline file (engine/data/pipeline.c, pipeline_stages.c): the shipped
 * example loads, defaults are filled in, every kind of mistake names the
 * right file:line with a useful message, and the stage graph is in flow
 * order. */
#include "t.h"
#include "http_check.h"
#include "model.h"
#include "pipeline.h"
#include "pl.h"
#include "kinds.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A valid pipeline the error cases start from (stage keys at 4 spaces). */
#define QUEUES "queues:\n  a:\n  b:\n  c:\n"
#define NOOP(extra) QUEUES "stages:\n  - name: s\n    kind: noop\n    input: a\n    output: b\n" extra

/* write_file writes text to NAME in the test's directory; returns the path
 * (a static buffer, valid until the next call). */
static const char *write_file(const char *name, const char *text)
{
    static char path[PATH_MAX];
    mkdir(t_dir(), 0700);
    snprintf(path, sizeof path, "%s/%s", t_dir(), name);
    FILE *f = fopen(path, "w");
    T_CHECK(f != NULL);
    T_EQ(fwrite(text, 1, strlen(text), f), strlen(text));
    T_EQ(fclose(f), 0);
    return path;
}

static Pipeline *load_ok(const char *text)
{
    const char *path = write_file("p.yml", text);
    char err[512] = "";
    Pipeline *p = NULL;
    int rc = pipeline_load(path, stage_kind_specs, &p, err, sizeof err);
    if (rc != 0)
        t_fail(__FILE__, __LINE__, "pipeline_load: %d %s", rc, err);
    return p;
}

/* expect_err loads text and checks the error is "PATH:LINE: ...want...". */
static void expect_err_at(int tline, const char *text, int line, const char *want)
{
    const char *path = write_file("p.yml", text);
    char err[512] = "", prefix[PATH_MAX + 32];
    Pipeline *p = (Pipeline *)&err; /* must be set to NULL */
    int rc = pipeline_load(path, stage_kind_specs, &p, err, sizeof err);
    if (rc != PL_EINVAL || p != NULL)
        t_fail(__FILE__, tline, "pipeline_load returned %d, wanted PL_EINVAL (err: %s)", rc, err);
    snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, want))
        t_fail(__FILE__, tline, "error\n  %s\nwanted line %d and\n  %s", err, line, want);
}
#define expect_err(text, line, want) expect_err_at(__LINE__, text, line, want)

/* example_path finds examples/reference.yml from the top of the tree. */
static const char *example_path(void)
{
    static char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/examples/reference.yml", t_root());
    return path;
}

static const StageConf *stage(const Pipeline *p, const char *name)
{
    for (size_t i = 0; i < p->nstages; i++)
        if (strcmp(p->stages[i].name, name) == 0)
            return &p->stages[i];
    t_fail(__FILE__, __LINE__, "no stage %s", name);
}

/* squash collapses runs of spaces, so the graph's column widths don't matter. */
static void squash(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++)
        if (!(*r == ' ' && w > s && w[-1] == ' '))
            *w++ = *r;
    *w = '\0';
}

static char *graph(const Pipeline *p)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    T_CHECK(f != NULL);
    pipeline_graph(p, f);
    T_EQ(fclose(f), 0);
    squash(buf);
    return buf;
}

/* ------------------------------------------------------------ loading */

static void example_loads(void)
{
    char err[512] = "";
    Pipeline *p = NULL;
    const char *path = example_path();
    int rc = pipeline_load(path, stage_kind_specs, &p, err, sizeof err);
    if (rc)
        t_fail(__FILE__, __LINE__, "%s: %s", path, err);
    T_EQ(p->nqueues, 6);
    T_EQ(p->nstages, 6);
    T_CHECK(strcmp(p->path, path) == 0);
    T_CHECK(p->listen_enabled);
    T_EQ(p->listen_port, 7380);
    T_CHECK(p->listen_token == NULL);
    T_CHECK(strcmp(p->data_dir, "./pickline-data") == 0);
    for (const char *const *q = (const char *const[]){"retrieve", "validate", "geocode",
                                                       "identity", "final", NULL}; *q; q++)
        T_CHECK(pipeline_queue(p, *q) != NULL);
    T_EQ(pipeline_queue(p, "retrieve")->conf.ttr_ms, 30000);
    T_EQ(pipeline_queue(p, "final")->conf.max_body, 4194304);
    const char *kinds[] = {"http_poll", "http_extract", "http_enrich", "async_submit", "route",
                           "noop"};
    for (size_t k = 0; k < 6; k++) {
        size_t found = 0;
        for (size_t i = 0; i < p->nstages; i++)
            found += strcmp(p->stages[i].kind, kinds[k]) == 0;
        T_CHECK(found >= 1);
    }
    const StageConf *s = stage(p, "poll_changes");
    T_CHECK(s->input == NULL);
    T_EQ(s->noutputs, 1);
    T_CHECK(strcmp(s->outputs[0], "retrieve") == 0 && s->outputs[1] == NULL);
    s = stage(p, "extract");
    T_EQ(s->concurrency, 16);
    T_CHECK(s->rate_per_s == 200 && s->timeout_s == 10 && s->connect_timeout_s == 2);
    const char *url = NULL;
    T_OK(conf_str(p->path, s->node, "url", &url, err, sizeof err));
    T_CHECK(strcmp(url, "http://127.0.0.1:8081/users/{id}") == 0);
    pipeline_free(p);
}

static void defaults_filled(void)
{
    Pipeline *p = load_ok(NOOP(""));
    QueueConf d;
    queue_conf_default(&d);
    const QueueDecl *q = pipeline_queue(p, "a");
    T_CHECK(q != NULL);
    T_EQ(q->line, 2);
    T_CHECK(memcmp(&q->conf, &d, sizeof d) == 0);
    T_CHECK(pipeline_queue(p, "nope") == NULL);
    T_CHECK(p->data_dir == NULL);
    T_EQ(p->listen_enabled, 0);
    T_CHECK(strcmp(p->listen_address, "127.0.0.1") == 0);
    T_EQ(p->listen_port, 7380);
    T_EQ(p->listen_max_body, 1 << 20);
    T_CHECK(p->drain_s == 10);
    const StageConf *s = &p->stages[0];
    T_CHECK(strcmp(s->name, "s") == 0 && strcmp(s->kind, "noop") == 0);
    T_EQ(s->line, 6);
    T_CHECK(strcmp(s->input, "a") == 0);
    T_EQ(s->noutputs, 1);
    T_EQ(s->concurrency, 8);
    T_EQ(s->batch, 8);
    T_CHECK(s->rate_per_s == 0 && s->timeout_s == 30 && s->connect_timeout_s == 5);
    T_EQ(s->insecure, 0);
    pipeline_free(p);

    /* batch follows concurrency up to 100; seconds become ms */
    p = load_ok("drain: 0.5\nlisten:\nqueues:\n  a: {ttr: 1.5, backoff: 0.25, max_attempts: 0}\n"
                "  b:\nstages:\n  - {name: s, kind: noop, input: a, output: [b], "
                "concurrency: 200, insecure: yes, timeout: 2.5}\n");
    T_EQ(p->listen_enabled, 1);
    T_CHECK(p->drain_s == 0.5);
    q = pipeline_queue(p, "a");
    T_EQ(q->conf.ttr_ms, 1500);
    T_EQ(q->conf.backoff_ms, 250);
    T_EQ(q->conf.max_attempts, 0);
    T_EQ(p->stages[0].concurrency, 200);
    T_EQ(p->stages[0].batch, 100);
    T_EQ(p->stages[0].insecure, 1);
    T_CHECK(p->stages[0].timeout_s == 2.5);
    pipeline_free(p);
}

static void route_outputs_union(void)
{
    Pipeline *p = load_ok(QUEUES "  d:\nstages:\n"
                          "  - name: r\n    kind: route\n    input: a\n    routes:\n"
                          "      - when: {field: x, equals: 1}\n        to: c\n"
                          "      - when: {field: y, in: [1, two]}\n        to: [b, c]\n"
                          "      - when: {field: z, exists: false}\n        to: [c]\n"
                          "    default: [d, b]\n");
    const StageConf *s = &p->stages[0];
    T_CHECK(s->input && strcmp(s->input, "a") == 0);
    T_EQ(s->noutputs, 3);
    T_CHECK(strcmp(s->outputs[0], "c") == 0);
    T_CHECK(strcmp(s->outputs[1], "b") == 0);
    T_CHECK(strcmp(s->outputs[2], "d") == 0);
    T_CHECK(s->outputs[3] == NULL);
    pipeline_free(p);
}

static void listener_needed(void)
{
    Pipeline *p = load_ok(QUEUES "stages:\n  - name: id\n    kind: async_submit\n    input: a\n"
                          "    output: b\n    url: http://127.0.0.1:9/match\n"
                          "    merge: {person_id: person}\n");
    T_EQ(p->listen_enabled, 1);
    pipeline_free(p);
}

static void env_token(void)
{
    setenv("PL_TEST_TOKEN", "s3cret-0123456789", 1);
    Pipeline *p = load_ok("listen:\n  port: 9000\n  token: env:PL_TEST_TOKEN\n" NOOP(""));
    T_CHECK(p->listen_token && strcmp(p->listen_token, "s3cret-0123456789") == 0);
    T_EQ(p->listen_port, 9000);
    pipeline_free(p);
    p = load_ok("listen: {token: plain-token-0123456789}\n" NOOP(""));
    T_CHECK(strcmp(p->listen_token, "plain-token-0123456789") == 0);
    pipeline_free(p);
    unsetenv("PL_TEST_TOKEN");
    expect_err("listen:\n  port: 9000\n  token: env:PL_TEST_TOKEN\n" NOOP(""), 3,
               "listen: token: environment variable PL_TEST_TOKEN is not set");
}

static void missing_file(void)
{
    char err[512];
    Pipeline *p;
    T_ERR(pipeline_load("/nonexistent/p.yml", stage_kind_specs, &p, err, sizeof err), ENOENT);
    T_CHECK(strstr(err, "/nonexistent/p.yml: cannot read") == err);
}

/* --------------------------------------------------------------- errors */

static void err_yaml(void)
{
    expect_err("queues: [a,\nstages: x\n", 3, "invalid YAML: did not find expected");
    expect_err("queues:\n  a: 1\n b: 2\n", 3, "invalid YAML: ");
    expect_err("queues:\n  a: \"open\nstages:\n", 4, "invalid YAML: found unexpected end");
    expect_err("a: \"\xff\"\n", 1, "invalid text: invalid leading UTF-8 octet");
    expect_err("# only a comment\n", 1, "the file has no pipeline in it");
    expect_err("- a\n- b\n", 1, "expected a map with queues:, stages:");
    expect_err(NOOP("---\nqueues:\n"), 10, "a second YAML document");
    expect_err("queues:\n  a: &anchor\n    ttr: 1\n", 2, "anchors (&anchor) are not supported");
    expect_err("queues:\n  a: {ttr: 1}\n  b: *x\n", 3, "aliases (*x) are not supported");
    expect_err("queues: !!map\n  a:\n", 1, "tags (tag:yaml.org,2002:map) are not supported");
}

static void err_tabs(void)
{
    expect_err("queues:\n\ta:\n", 2, "tab in the indentation; YAML indents with spaces only");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: noop\n  \tinput: a\n", 8,
               "tab in the indentation");
    /* a tab after the key is only a separator */
    Pipeline *p = load_ok("queues:\n  a:\t{ttr: 1}\n  b:\nstages:\n  - name:\ts\n    kind: noop\n"
                          "    input: a\n    output: b\n");
    pipeline_free(p);
}

static void err_duplicate_key(void)
{
    expect_err("queues:\n  a:\n  b:\n  a:\n", 4, "duplicate key 'a' (also at line 2)");
    expect_err(NOOP("    input: c\n"), 10, "duplicate key 'input' (also at line 8)");
}

static void err_unknown_keys(void)
{
    expect_err("queues:\n  a:\nstagse:\n  - name: x\n", 3,
               "unknown key 'stagse'; did you mean 'stages'?");
    expect_err("qeueus:\n  a:\n", 1, "unknown key 'qeueus'; did you mean 'queues'?");
    expect_err("pipeline:\n  a:\n", 1, "unknown key 'pipeline'; the top level takes data, "
               "listen, drain, health, queues, stages");
    expect_err(NOOP("") "target: postgres://x\n", 10, "target: not supported by this version "
               "of pickline yet");
    expect_err(NOOP("    concurency: 3\n"), 10, "stage 's': unknown key 'concurency'; did you "
               "mean 'concurrency'?");
    expect_err(NOOP("    url: http://x/\n"), 10, "stage 's': unknown key 'url' for a noop "
               "stage; it belongs to http_poll stages");
    expect_err(NOOP("    colour: blue\n"), 10, "unknown key 'colour'; a noop stage takes name, "
               "kind, input");
    expect_err("listen:\n  prot: 80\n" NOOP(""), 2, "unknown key 'prot'; did you mean 'port'?");
    expect_err("queues:\n  a:\n    tt: 5\n", 3, "queue 'a': unknown key 'tt'; did you mean "
               "'ttr'?");
}

/* health: the limits of GET /ready, defaults filled in. */
static void health_section(void)
{
    Pipeline *p = load_ok(NOOP(""));
    T_EQ(p->health_dep_failures, 5);
    T_CHECK(p->health_batch_wait_s == 600);
    T_CHECK(p->health_disk_min == 64u << 20);
    pipeline_free(p);
    p = load_ok("health:\n  dependency_failures: 2\n  batch_wait: 1.5\n  disk_min: 0\n" NOOP(""));
    T_EQ(p->health_dep_failures, 2);
    T_CHECK(p->health_batch_wait_s == 1.5);
    T_CHECK(p->health_disk_min == 0);
    pipeline_free(p);
    expect_err("health:\n  batch_wiat: 5\n" NOOP(""), 2, "unknown key 'batch_wiat'; did you mean "
               "'batch_wait'?");
    expect_err("health:\n  dependency_failures: 0\n" NOOP(""), 2, "health: dependency_failures");
    expect_err("health: 5\n" NOOP(""), 1, "health: expected a map of dependency_failures");
}

static void err_types_and_ranges(void)
{
    expect_err(NOOP("    concurrency: \"8\"\n"), 10, "stage 's': concurrency: expected a whole "
               "number from 1 to 10000 (got the string \"8\"); write it without quotes");
    expect_err(NOOP("    concurrency: eight\n"), 10, "concurrency: expected a whole number "
               "from 1 to 10000 (got 'eight')");
    expect_err(NOOP("    concurrency: -3\n"), 10, "(got '-3')");
    expect_err(NOOP("    concurrency: 0\n"), 10, "concurrency: expected a whole number from 1");
    expect_err(NOOP("    concurrency: 10001\n"), 10, "(got '10001')");
    expect_err(NOOP("    concurrency: [1]\n"), 10, "(got a list)");
    expect_err(NOOP("    timeout: -1\n"), 10, "timeout: expected a number of seconds from "
               "0.001 to 86400 (got '-1')");
    expect_err(NOOP("    rate: 0\n"), 10, "rate: expected a number of requests per second");
    expect_err(NOOP("    insecure: maybe\n"), 10, "insecure: expected true or false (got "
               "'maybe')");
    expect_err(NOOP("    batch: 9\n"), 10, "batch: 9 is more than concurrency (8)");
    expect_err("drain: -1\n" NOOP(""), 1, "drain: expected a number of seconds from 0 to");
    expect_err("listen:\n  port: 70000\n" NOOP(""), 2, "listen: port: expected a whole number "
               "from 1 to 65535 (got '70000')");
    expect_err("listen: 7380\n" NOOP(""), 1, "listen: expected a map");
    expect_err("queues:\n  a:\n    ttr: 0\n", 3, "queue 'a': ttr: expected a number of seconds "
               "from 0.001");
    expect_err("queues:\n  a:\n    max_attempts: 1.5\n", 3, "max_attempts: expected a whole "
               "number");
    expect_err("queues:\n  a: {backoff: 10, backoff_max: 5}\n", 2, "backoff_max (5 s) is less "
               "than backoff (10 s)");
    expect_err("queues:\n  a: 5\n", 2, "queue 'a': expected a map of ttr");
    expect_err("queues: [a, b]\n", 1, "queues: expected a map of queue names (got a list)");
    expect_err(QUEUES "stages: {}\n", 5, "stages: expected a list of stages");
    expect_err(QUEUES "stages: []\n", 5, "(got an empty list)");
    expect_err(QUEUES "stages:\n  - noop\n", 6, "stage 1: expected a map");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: route\n    input: a\n    routes:\n"
               "      - when: {field: f, exists: 1}\n        to: b\n", 10,
               "when: exists: expected true or false");
}

static void err_missing_required(void)
{
    expect_err(QUEUES, 1, "stages: is required");
    expect_err(QUEUES "stages:\n  - kind: noop\n", 6, "stage 1: name: is required");
    expect_err(QUEUES "stages:\n  - name: s\n", 6, "stage 's': kind: is required; use one of "
               "http_poll, http_extract");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: noop\n    output: b\n", 6,
               "stage 's': input: is required");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: noop\n    input: a\n", 6,
               "stage 's': output: is required");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: http_extract\n    input: a\n"
               "    output: b\n", 6, "stage 's': url: is required for an http_extract stage");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: http_enrich\n    input: a\n"
               "    output: b\n    url: http://h/{x}\n", 6, "merge: is required");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: route\n    input: a\n", 6,
               "routes: is required");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: route\n    input: a\n    routes:\n"
               "      - to: b\n", 10, "routes item 1: when: is required");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: route\n    input: a\n    routes:\n"
               "      - when: {equals: 1}\n        to: b\n", 10, "when: field: is required");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: http_pol\n", 7,
               "kind: unknown kind 'http_pol'; did you mean 'http_poll'?");
}

static void err_queues(void)
{
    expect_err(QUEUES "stages:\n  - name: s\n    kind: noop\n    input: a\n    output: final\n",
               9, "stage 's': output queue 'final' is not declared; add it under queues:");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: noop\n    input: nope\n    output: b\n",
               8, "stage 's': input queue 'nope' is not declared");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: noop\n    input: a\n    output: bb\n",
               9, "output queue 'bb' is not declared; did you mean 'b'?");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: route\n    input: a\n    routes:\n"
               "      - when: {field: f, equals: 1}\n        to: [b, zz]\n", 11,
               "routes item 1: to queue 'zz' is not declared");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: route\n    input: a\n    routes:\n"
               "      - when: {field: f, equals: 1}\n        to: b\n    default: zz\n", 12,
               "default queue 'zz' is not declared");
    expect_err("queues:\n  ok:\n  \"a b\":\n", 3, "queue name 'a b' is invalid; use 1 to 64");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: noop\n    input: a\n    output: [b, c]\n",
               9, "output: a noop stage writes exactly one queue (got 2)");
    expect_err(QUEUES "stages:\n  - name: s\n    kind: route\n    input: a\n    output: b\n", 9,
               "output: a route stage has no output:");
}

static void err_stage_rules(void)
{
    expect_err(NOOP("  - name: s\n    kind: noop\n    input: b\n    output: c\n"), 10,
               "stage 2: stage name 's' is already used at line 6");
    expect_err(QUEUES "stages:\n  - name: a/b\n    kind: noop\n", 6, "name: 'a/b' is invalid");
    expect_err(QUEUES "stages:\n  - name: p\n    kind: http_poll\n    url: http://h/\n"
               "    input: a\n    output: b\n", 9, "stage 'p': input: an http_poll stage has "
               "no input (it is a source); remove input:");
    expect_err(QUEUES "stages:\n  - name: p\n    kind: http_poll\n    url: ftp://h/\n"
               "    output: b\n", 8, "url: expected an http:// or https:// URL");
    expect_err(QUEUES "stages:\n  - name: p\n    kind: http_poll\n    url: http://h/\n"
               "    interval: 0.001\n    output: b\n", 9, "interval: expected a number of "
               "seconds from 0.01 to 86400 (got '0.001')");
    expect_err(QUEUES "stages:\n  - name: x\n    kind: http_extract\n    input: a\n"
               "    output: b\n    url: http://h/{id\n", 10, "url: bad template field");
    expect_err(QUEUES "stages:\n  - name: x\n    kind: http_enrich\n    input: a\n"
               "    output: b\n    url: http://h/\n    method: PUT\n    merge: {a: b}\n", 11,
               "method: expected GET or POST (got 'PUT')");
    expect_err(QUEUES "stages:\n  - name: x\n    kind: http_enrich\n    input: a\n"
               "    output: b\n    url: http://h/\n    merge: [a, b]\n", 11,
               "merge: expected a map of names to strings (got a list)");
    expect_err(QUEUES "stages:\n  - name: x\n    kind: http_enrich\n    input: a\n"
               "    output: b\n    url: http://h/\n    merge: {a: b}\n    headers: {X: [1]}\n",
               12, "headers: X: expected a string (got a list)");
}

static void err_route_cond(void)
{
    expect_err(QUEUES "stages:\n  - name: r\n    kind: route\n    input: a\n    routes:\n"
               "      - when:\n          field: f\n          equals: 1\n          in: [1, 2]\n"
               "        to: b\n", 13, "stage 'r': routes item 1: when: has both 'equals' and "
               "'in'; give exactly one of equals, not_equals, exists, in");
    expect_err(QUEUES "stages:\n  - name: r\n    kind: route\n    input: a\n    routes:\n"
               "      - when: {field: f}\n        to: b\n", 10, "when: needs one of equals");
    expect_err(QUEUES "stages:\n  - name: r\n    kind: route\n    input: a\n    routes:\n"
               "      - when: {field: f, equal: 1}\n        to: b\n", 10,
               "unknown key 'equal'; did you mean 'equals'?");
    expect_err(QUEUES "stages:\n  - name: r\n    kind: route\n    input: a\n    routes:\n"
               "      - when: {field: f, in: []}\n        to: b\n", 10,
               "when: in: expected a list of values (got an empty list)");
    expect_err(QUEUES "stages:\n  - name: r\n    kind: route\n    input: a\n    routes:\n"
               "      - when: {field: f, equals: [1]}\n        to: b\n", 10,
               "when: equals: expected a single value (got a list); use in:");
    expect_err(QUEUES "stages:\n  - name: r\n    kind: route\n    input: a\n    routes:\n"
               "      - when: {field: f, not_equals: ~}\n        to: b\n", 10,
               "when: not_equals: expected a single value (got nothing); use exists: false");
    expect_err(QUEUES "stages:\n  - name: r\n    kind: route\n    input: a\n    routes: []\n",
               9, "routes: expected a list of {when: ..., to: ...} (got an empty list)");
}

/* --------------------------------------------------------------- getters */

static void getters(void)
{
    Pipeline *p = load_ok(QUEUES "stages:\n  - name: x\n    kind: http_enrich\n    input: a\n"
                          "    output: b\n    url: http://h/{id}\n    merge: {a: b}\n"
                          "    send: [id, name]\n    insecure: true\n    timeout: 1.25\n");
    const ConfNode *n = p->stages[0].node;
    char err[512];
    const char *s = "unset", **strs = NULL;
    double d = -1;
    unsigned long long u = 7;
    int b = -1;
    size_t m = 0;

    T_CHECK(conf_get(n, "nope") == NULL && conf_get(NULL, "x") == NULL);
    T_CHECK(conf_get(conf_get(n, "url"), "x") == NULL);
    T_OK(conf_str(p->path, n, "absent", &s, err, sizeof err));
    T_CHECK(strcmp(s, "unset") == 0);
    T_OK(conf_num(p->path, n, "timeout", 0, 10, &d, err, sizeof err));
    T_CHECK(d == 1.25);
    T_OK(conf_bool(p->path, n, "insecure", &b, err, sizeof err));
    T_EQ(b, 1);
    T_OK(conf_strs(p->path, n, "send", &strs, &m, err, sizeof err));
    T_EQ(m, 2);
    T_CHECK(strcmp(strs[0], "id") == 0 && strcmp(strs[1], "name") == 0 && strs[2] == NULL);
    free(strs);
    T_OK(conf_strs(p->path, n, "input", &strs, &m, err, sizeof err));
    T_EQ(m, 1);
    T_CHECK(strcmp(strs[0], "a") == 0 && strs[1] == NULL);
    free(strs);
    T_ERR(conf_uint(p->path, n, "timeout", 100, &u, err, sizeof err), PL_EINVAL);
    T_EQ(u, 7);
    T_CHECK(strstr(err, ":14: timeout: expected a whole number from 0 to 100 (got '1.25')"));
    T_ERR(conf_num(p->path, n, "url", 0, 1, &d, err, sizeof err), PL_EINVAL);
    T_CHECK(strstr(err, ":10: url: expected a number from 0 to 1 (got 'http://h/{id}')"));
    T_ERR(conf_str(p->path, n, "merge", &s, err, sizeof err), PL_EINVAL);
    T_CHECK(strstr(err, "merge: expected a string (got a map)"));
    T_ERR(conf_strs(p->path, n, "merge", &strs, &m, err, sizeof err), PL_EINVAL);
    T_CHECK(strstr(err, "merge: expected a string or a list of strings (got a map)"));
    pipeline_free(p);
}

/* ----------------------------------------------------------------- graph */

static void graph_flow_order(void)
{
    char err[512];
    Pipeline *p;
    T_OK(pipeline_load(example_path(), stage_kind_specs, &p, err, sizeof err));
    char *g = graph(p);
    const char *want[] = {
        "poll_changes http_poll (source) -> retrieve\n",
        "notices noop notices -> retrieve\n",
        "extract http_extract retrieve -> validate\n",
        "route route validate -> geocode, identity, final\n",
        "geocode http_enrich geocode -> final\n",
        "identity async_submit identity -> final\n",
        "final: end of the line\n",
    };
    const char *at = g;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const char *hit = strstr(at, want[i]);
        if (!hit)
            t_fail(__FILE__, __LINE__, "graph lacks (in order) '%s':\n%s", want[i], g);
        at = hit + strlen(want[i]);
    }
    T_CHECK(strstr(g, "notices: fed from outside"));
    T_CHECK(!strstr(g, "retrieve: "));
    free(g);
    pipeline_free(p);

    /* Written out of order, with a cycle (b -> c -> b): still in flow order, once each. */
    p = load_ok("queues:\n  a:\n  b:\n  c:\n  d:\n  spare:\nstages:\n"
                "  - {name: back, kind: noop, input: c, output: b}\n"
                "  - {name: mid, kind: route, input: b, routes: [{when: {field: f, exists: "
                "true}, to: c}], default: d}\n"
                "  - {name: first, kind: noop, input: a, output: b}\n"
                "  - {name: src, kind: http_poll, url: 'http://h/', output: a}\n");
    g = graph(p);
    const char *order[] = {"src http_poll (source) -> a\n", "first noop a -> b\n",
                           "mid route b -> c, d\n", "back noop c -> b\n", "d: end of the line\n",
                           "spare: not used by any stage\n"};
    at = g;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        const char *hit = strstr(at, order[i]);
        if (!hit)
            t_fail(__FILE__, __LINE__, "graph lacks (in order) '%s':\n%s", order[i], g);
        at = hit + strlen(order[i]);
    }
    free(g);
    pipeline_free(p);
}

/* ------------------------------------------------------------ models */

/* A pipeline with models: (stage keys at 4 spaces; the first stage is at
 * line 15) and a validate -> final -> batch line. */
#define MODELS "models:\n  users:\n    properties:\n      id: {type: serial, key: true}\n" \
               "      email: {type: string, length: [5, 99], format: email}\n" \
               "      permission: {type: integer, default: 1}\n" \
               "  tenants:\n    properties:\n      id: {type: serial, key: true}\n"
#define MQUEUES "queues:\n  validate:\n  geo:\n  final:\n"
#define VALIDATE(extra) MODELS MQUEUES "stages:\n  - name: v\n    kind: validate\n" \
                        "    input: validate\n    output: [geo, final]\n" extra

static void models_accepted(void)
{
    Pipeline *p = load_ok(VALIDATE("    model: users\n"
                                   "    reject_threshold: {count: 100, rate: 0.05}\n"
                                   "  - name: seal\n    kind: batch\n    input: final\n"
                                   "    model: users\n    rows: 500\n    seconds: 0.5\n"
                                   "  - name: seal_any\n    kind: batch\n    input: geo\n"));
    T_CHECK(p->models != NULL);
    T_EQ(p->models->n, 2);
    const Model *m = models_find(p->models, "users");
    T_CHECK(m != NULL && strcmp(m->name, "users") == 0);
    T_EQ(m->nfields, 3);
    T_CHECK(models_find(p->models, "tenants") != NULL);
    T_CHECK(models_find(p->models, "nope") == NULL);
    /* validate fans out to every output; batch writes none */
    const StageConf *v = stage(p, "v");
    T_CHECK(strcmp(v->kind, "validate") == 0 && strcmp(v->input, "validate") == 0);
    T_EQ(v->noutputs, 2);
    T_CHECK(strcmp(v->outputs[0], "geo") == 0 && strcmp(v->outputs[1], "final") == 0);
    const StageConf *b = stage(p, "seal");
    T_CHECK(strcmp(b->kind, "batch") == 0);
    T_EQ(b->noutputs, 0);
    T_CHECK(b->outputs == NULL);
    unsigned long long rows = 0;
    double secs = 0;
    char err[256];
    T_OK(conf_uint(p->path, b->node, "rows", 1000000, &rows, err, sizeof err));
    T_OK(conf_num(p->path, b->node, "seconds", 0, 100, &secs, err, sizeof err));
    T_EQ(rows, 500);
    T_CHECK(secs == 0.5);
    /* the file's text is kept, for the store */
    T_CHECK(p->text != NULL && p->text_len == strlen(p->text));
    T_CHECK(strstr(p->text, "reject_threshold: {count: 100, rate: 0.05}") != NULL);
    /* the graph: a batch stage ends the line */
    char *g = graph(p);
    T_CHECK(strstr(g, "v validate validate -> geo, final\n"));
    T_CHECK(strstr(g, "seal batch final -> (batches for qload)\n"));
    T_CHECK(!strstr(g, "final: end of the line"));
    free(g);
    pipeline_free(p);

    /* http_extract's model: any name without models:, a declared one with */
    p = load_ok(QUEUES "stages:\n  - name: x\n    kind: http_extract\n    input: a\n"
                "    output: b\n    url: http://h/{id}\n    model: whatever\n");
    T_CHECK(p->models == NULL);
    pipeline_free(p);
    p = load_ok(MODELS MQUEUES "stages:\n  - name: x\n    kind: http_extract\n"
                "    input: validate\n    output: final\n    url: http://h/{id}\n"
                "    model: tenants\n");
    T_CHECK(p->models != NULL);
    pipeline_free(p);
}

static void err_models(void)
{
    /* a bad model reference names the line, the closest name and the fix */
    expect_err(VALIDATE("    model: usres\n"), 19, "stage 'v': model: model 'usres' is not "
               "declared; did you mean 'users'? (or declare it under models:)");
    expect_err(VALIDATE("    model: orders\n"), 19, "model: model 'orders' is not declared; "
               "declare it under models: or fix the name");
    expect_err(MODELS MQUEUES "stages:\n  - name: x\n    kind: http_extract\n"
               "    input: validate\n    output: final\n    url: http://h/{id}\n"
               "    model: tenant\n", 20, "stage 'x': model: model 'tenant' is not declared; "
               "did you mean 'tenants'?");
    expect_err(MODELS MQUEUES "stages:\n  - name: b\n    kind: batch\n    input: final\n"
               "    model: user\n", 18, "stage 'b': model: model 'user' is not declared; did "
               "you mean 'users'?");
    /* validate and batch need models: */
    expect_err(MQUEUES "stages:\n  - name: v\n    kind: validate\n    input: validate\n"
               "    output: final\n    model: users\n", 10, "model: model 'users' is not "
               "declared; declare it under models: (the pipeline has no models: section)");
    expect_err(MQUEUES "stages:\n  - name: b\n    kind: batch\n    input: final\n", 6,
               "stage 'b': a batch stage needs the models: section");
    /* the validate and batch keys */
    expect_err(VALIDATE(""), 15, "stage 'v': model: is required for a validate stage; name the "
               "model");
    expect_err(VALIDATE("    model: users\n    reject_threshold: {count: -1}\n"), 20,
               "reject_threshold: count: expected a whole number from 0");
    expect_err(VALIDATE("    model: users\n    reject_threshold: {rate: 1.5}\n"), 20,
               "reject_threshold: rate: expected a number of rejected rows per row from 0 to 1 "
               "(got '1.5')");
    expect_err(VALIDATE("    model: users\n    reject_threshold: {cuont: 3}\n"), 20,
               "unknown key 'cuont'; did you mean 'count'?");
    expect_err(VALIDATE("    model: users\n    reject_threshold: 5\n"), 20,
               "reject_threshold: expected a map like {count: 100, rate: 0.05} (got '5')");
    expect_err(VALIDATE("    model: users\n    rows: 5\n"), 20, "unknown key 'rows' for a "
               "validate stage; it belongs to batch stages");
    expect_err(MODELS MQUEUES "stages:\n  - name: b\n    kind: batch\n    input: final\n"
               "    rows: 0\n", 18, "rows: expected a whole number from 1 to 4294967295 "
               "(got '0')");
    expect_err(MODELS MQUEUES "stages:\n  - name: b\n    kind: batch\n    input: final\n"
               "    seconds: soon\n", 18, "seconds: expected a number of seconds from 0.01");
    expect_err(MODELS MQUEUES "stages:\n  - name: b\n    kind: batch\n    input: final\n"
               "    output: geo\n", 18, "output: a batch stage has no output (it seals its "
               "rows into batches for qload: the end of the line); remove output:");
    expect_err(MODELS MQUEUES "stages:\n  - name: b\n    kind: batch\n    input: final\n"
               "    reject_threshold: {count: 1}\n", 18, "unknown key 'reject_threshold' for "
               "a batch stage; it belongs to validate stages");
    expect_err(VALIDATE("    model: users\n    output: geo\n"), 20, "duplicate key 'output'");
    expect_err(MODELS MQUEUES "stages:\n  - name: v\n    kind: validate\n"
               "    input: validate\n    model: users\n", 15, "output: is required; name the "
               "queue this stage writes (or a list: each gets every job)");
    expect_err(MODELS MQUEUES "stages:\n  - name: v\n    kind: validat\n", 16,
               "kind: unknown kind 'validat'; did you mean 'validate'?");
    /* models: errors come from models_parse, with the line */
    expect_err("models:\n  users:\n    properties:\n      id: {type: sreial}\n" MQUEUES
               "stages:\n  - {name: n, kind: noop, input: validate, output: final}\n", 4,
               "sreial");
    /* target: is still refused */
    expect_err(VALIDATE("    model: users\n") "target: postgres://x\n", 20,
               "target: not supported by this version of pickline yet");
}

static void parse_from_memory(void)
{
    static const char text[] = VALIDATE("    model: users\n");
    char err[512] = "";
    Pipeline *p = NULL;
    /* not NUL-terminated where it ends: len counts */
    char buf[sizeof text + 8];
    memcpy(buf, text, sizeof text - 1);
    memcpy(buf + sizeof text - 1, "garbage", 8);
    T_OK(pipeline_parse("stored.yml", buf, sizeof text - 1, stage_kind_specs, &p, err, sizeof err));
    T_CHECK(strcmp(p->path, "stored.yml") == 0);
    T_EQ(p->text_len, sizeof text - 1);
    T_CHECK(memcmp(p->text, text, sizeof text - 1) == 0 && p->text[p->text_len] == '\0');
    T_CHECK(p->text != buf);
    T_EQ(p->nstages, 1);
    T_CHECK(models_find(p->models, "users") != NULL);
    pipeline_free(p);

    /* errors name the given name and the line */
    static const char bad[] = "queues:\n  a:\nstages:\n  - {name: s, kind: nop, input: a, "
                              "output: a}\n";
    p = (Pipeline *)err;
    T_ERR(pipeline_parse("stored.yml", bad, sizeof bad - 1, stage_kind_specs, &p, err, sizeof err), PL_EINVAL);
    T_CHECK(p == NULL);
    if (strncmp(err, "stored.yml:4: ", 14) != 0 || !strstr(err, "did you mean 'noop'?"))
        t_fail(__FILE__, __LINE__, "error: %s", err);
    /* a NULL name still reads as something */
    T_ERR(pipeline_parse(NULL, bad, sizeof bad - 1, stage_kind_specs, &p, err, sizeof err), PL_EINVAL);
    T_CHECK(strncmp(err, "(pipeline):4: ", 14) == 0);
    /* pipeline_load keeps the text too */
    p = load_ok(NOOP(""));
    T_CHECK(p->text && strcmp(p->text, NOOP("")) == 0 && p->text_len == strlen(NOOP("")));
    pipeline_free(p);
}

/* pg_extract may have an input queue (key notices) or none (watermark
 * only); other workers may not go without one. */
static void pg_extract_input_optional(void)
{
    Pipeline *p = load_ok(MODELS MQUEUES "stages:\n  - name: src\n    kind: pg_extract\n"
                          "    dsn: \"host=/tmp\"\n    table: users\n    model: users\n"
                          "    updated_column: updated_at\n");
    T_EQ(p->nstages, 1);
    T_CHECK(p->stages[0].input == NULL);
    pipeline_free(p);
    p = load_ok(MODELS MQUEUES "stages:\n  - name: src\n    kind: pg_extract\n"
                "    input: validate\n    dsn: \"host=/tmp\"\n    table: users\n"
                "    model: users\n    updated_column: updated_at\n");
    T_CHECK(p->stages[0].input && strcmp(p->stages[0].input, "validate") == 0);
    pipeline_free(p);
    char err[512];
    static const char bad[] = "queues:\n  a:\nstages:\n  - {name: s, kind: noop, output: a}\n";
    T_ERR(pipeline_parse("x.yml", bad, sizeof bad - 1, stage_kind_specs, &p, err, sizeof err), PL_EINVAL);
    if (!strstr(err, "input: is required"))
        t_fail(__FILE__, __LINE__, "error: %s", err);
}


/* ---------------------------------------------------- outgoing requests */

/* A source stage whose url: is at line 9, and an extract stage whose url:
 * is at line 10. */
#define POLL(url) QUEUES "stages:\n  - name: p\n    kind: http_poll\n    output: b\n" \
                  "    url: " url "\n"
#define EXTRACT(url) QUEUES "stages:\n  - name: x\n    kind: http_extract\n    input: a\n" \
                     "    output: b\n    url: " url "\n"

static void load_free(const char *text)
{
    pipeline_free(load_ok(text));
}

/* CR/LF and other control characters in a URL are refused at check time:
 * they would end the request line and start headers of the job's choosing. */
static void err_url_control_chars(void)
{
    expect_err(POLL("\"http://h/x\\r\\nX-Evil: 1\""), 9, "stage 'p': url: has a line break "
               "(CR or LF) at byte 11; a URL is one line");
    expect_err(POLL("\"http://h/x\\nHost: evil\""), 9, "url: has a line break (CR or LF) at "
               "byte 11");
    expect_err(EXTRACT("\"http://h/records/{id}\\r\\n\""), 10, "stage 'x': url: has a line break");
    expect_err(POLL("\"http://h/\\tx\""), 9, "url: has a control character (0x09) at byte 10");
    expect_err(POLL("\"http://h/\\x7fx\""), 9, "url: has a control character (0x7F)");
    expect_err(POLL("\"http://h/a b\""), 9, "url: has a space at byte 11; write it as %20");
    expect_err(POLL("\"http://h/caf\\u00e9\""), 9, "url: has a byte that is not ASCII (0xC3) at "
               "byte 13; percent-encode it");
    expect_err(POLL("\"http://h\\\\x/\""), 9, "url: has a backslash at byte 9");
    expect_err(POLL("\"http://h/a%zz\""), 9, "url: '%zz' at byte 11 is not a percent-escape");
    expect_err(POLL("\"http://h/a#frag\""), 9, "url: has a #fragment");
    /* the callback base is a URL too */
    expect_err(QUEUES "stages:\n  - name: i\n    kind: async_submit\n    input: a\n"
               "    output: b\n    url: http://h/verify\n    merge: {a: b}\n"
               "    callback_base: \"http://127.0.0.1:7380\\r\\nX: 1\"\n", 12,
               "callback_base: has a line break (CR or LF)");
}

/* Hosts and ports that are not what they look like are refused. */
static void err_url_hosts_ports(void)
{
    expect_err(POLL("http://999.1.1.1/"), 9, "url: host '999.1.1.1' is not a valid IPv4 "
               "address; each of its 4 parts is a number from 0 to 255");
    expect_err(POLL("http://1.2.3/"), 9, "host '1.2.3' is not a valid IPv4 address");
    expect_err(POLL("http://127.1/"), 9, "host '127.1' is not a valid IPv4 address");
    expect_err(POLL("http://010.0.0.1/"), 9, "host '010.0.0.1' is not a valid IPv4 address");
    expect_err(POLL("http://0x7f.0.0.1/"), 9, "host '0x7f.0.0.1' is not a valid IPv4 address");
    expect_err(POLL("http://a..b/"), 9, "url: host 'a..b' is not a valid host name");
    expect_err(POLL("http://-a.example/"), 9, "host '-a.example' is not a valid host name");
    expect_err(POLL("http://a_b.example/"), 9, "host 'a_b.example' is not a valid host name");
    expect_err(POLL("http:///x"), 9, "url: has no host");
    expect_err(POLL("\"http://[::1/\""), 9, "url: host '[::1' is not a valid [IPv6] address");
    expect_err(POLL("\"http://[zz::1]/\""), 9, "host '[zz::1]' is not a valid [IPv6] address");
    expect_err(POLL("\"http://::1:8080/\""), 9, "write an IPv6 address in brackets");
    expect_err(POLL("http://h:07380/"), 9, "url: port '07380' is not valid; write a number from "
               "1 to 65535 without leading zeros");
    expect_err(POLL("http://h:99999/"), 9, "url: port '99999' is not valid");
    expect_err(POLL("http://h:0/"), 9, "url: port '0' is not valid");
    expect_err(POLL("http://h:/"), 9, "url: port '' is not valid");
    expect_err(POLL("http://h:80a/"), 9, "url: port '80a' is not valid");
    expect_err(POLL("http://user:pw@h/"), 9, "url: has user:password@ in it");
    expect_err(POLL("http://h.example@evil.example/"), 9, "url: has user:password@ in it");
    /* a job may fill in the path and the query, never the host or port */
    expect_err(EXTRACT("http://{host}/records/{id}"), 10, "url: the host and port cannot come "
               "from a {field}");
    expect_err(EXTRACT("http://h:{port}/records/{id}"), 10, "url: the host and port cannot "
               "come from a {field}");
    expect_err(EXTRACT("http://h.{tenant}.example/x"), 10, "cannot come from a {field}");
    /* async_submit's url is sent as written: it takes no {field} */
    expect_err(QUEUES "stages:\n  - name: i\n    kind: async_submit\n    input: a\n"
               "    output: b\n    url: http://h/verify/{id}\n    merge: {a: b}\n", 10,
               "url: this URL is not a template; remove the { }");
    /* the callback path is appended to callback_base */
    expect_err(QUEUES "stages:\n  - name: i\n    kind: async_submit\n    input: a\n"
               "    output: b\n    url: http://h/verify\n    merge: {a: b}\n"
               "    callback_base: http://127.0.0.1:7380/cb?x=1\n", 12,
               "callback_base: has a query (?...)");
    expect_err(QUEUES "stages:\n  - name: i\n    kind: async_submit\n    input: a\n"
               "    output: b\n    url: http://h/verify\n    merge: {a: b}\n"
               "    callback_base: http://127.0.0.1:073800\n", 12, "callback_base: port "
               "'073800' is not valid");

    /* what is fine stays fine */
    load_free(POLL("http://h/"));
    load_free(POLL("http://127.0.0.1:8080/changes?since=0&x=%41"));
    load_free(POLL("https://api.example.com/v1/changes"));
    load_free(POLL("HTTP://Example.COM./x"));
    load_free(POLL("\"http://[::1]:7380/x\""));
    load_free(POLL("\"http://[2001:db8::7]/\""));
    load_free(POLL("http://localhost:65535"));
    load_free(POLL("http://0.0.0.0:1/"));
    load_free(POLL("http://255.255.255.255/"));
    load_free(POLL("http://xn--zrich-kva.example/"));
    load_free(POLL("http://a1.example/a/../b"));
    load_free(POLL("http://9host.example/"));
    load_free(EXTRACT("http://h:8080/records/{id}?t={tenant}&q={a.b}"));
    load_free(QUEUES "stages:\n  - name: i\n    kind: async_submit\n    input: a\n"
              "    output: b\n    url: http://h/verify\n    merge: {a: b}\n"
              "    callback_base: https://cb.example.com/pickline\n");
}

/* Header names are tokens and values one line: no CR/LF (header injection),
 * no other control characters, and not the headers that frame the body. */
static void err_header_values(void)
{
#define H(h) POLL("http://h/") "    headers:\n" h
    expect_err(H("      X-Api-Key: \"abc\\r\\nX-Evil: 1\"\n"), 11, "stage 'p': headers: "
               "X-Api-Key: has a line break (CR or LF); a header value is one line");
    expect_err(H("      X-A: ok\n      X-B: \"v\\nHost: evil\"\n"), 12, "headers: X-B: has a "
               "line break (CR or LF)");
    expect_err(H("      X-A: \"a\\u0001b\"\n"), 11, "headers: X-A: has a control character "
               "(0x01)");
    expect_err(H("      X-A: \"a\\x7fb\"\n"), 11, "headers: X-A: has a control character (0x7F)");
    expect_err(H("      \"X\\r\\nY\": v\n"), 11, "headers: 'X\\r\\nY' is not a valid header name");
    expect_err(H("      \"X(Y)\": v\n"), 11, "headers: 'X(Y)' is not a valid header name; use "
               "letters, digits and");
    expect_err(H("      \"X\\u00e9\": v\n"), 11, "is not a valid header name");
    /* a NUL in a key is refused, not cut off there (X-A\0B is not X-A) */
    expect_err(H("      \"X-A\\u0000B\": v\n"), 11, "a key contains a NUL character; remove it");
    expect_err(H("      Content-Length: \"5\"\n"), 11, "headers: Content-Length is set by "
               "pickline for each request; remove it");
    expect_err(H("      transfer-encoding: chunked\n"), 11, "headers: transfer-encoding is set "
               "by pickline for each request");
    /* a stage sends as many headers of its own as it declares (no cap, none dropped:
     * test_stages every_declared_header_is_sent) */
    char text[8192];
    int k = snprintf(text, sizeof text, "%s", H(""));
    for (int i = 0; i < 100; i++)
        k += snprintf(text + k, sizeof text - (size_t)k, "      X-H%d: v\n", i);
    load_free(text);
    /* a tab inside a value is allowed (HTTP allows it), and so is UTF-8 */
    load_free(H("      X-A: \"a\\tb\"\n      X-B: \"caf\\u00e9\"\n      Accept: \"\"\n"
                "      \"X-Ok!#$%&'*+-.^_`|~\": v\n"));
#undef H
}

/* Names pickline writes into the URL as they are must not change it. */
static void err_cursor_param(void)
{
    expect_err(POLL("http://h/") "    cursor_param: \"since&admin=1\"\n", 10,
               "cursor_param: 'since&admin=1' cannot be a query parameter name; use letters, "
               "digits, - . _ ~");
    expect_err(POLL("http://h/") "    cursor_param: \"a\\r\\nX: 1\"\n", 10, "cursor_param:");
    expect_err(POLL("http://h/") "    cursor_param: \"a#b\"\n", 10, "cursor_param: 'a#b'");
    load_free(POLL("http://h/") "    cursor_param: since.v-2_x~\n");
}

/* A database's address is checked like a URL's: host, port, no CR/LF. */
static void err_dsn_hosts(void)
{
#define PGX(dsn) MODELS MQUEUES "stages:\n  - name: src\n    kind: pg_extract\n" \
                 "    dsn: " dsn "\n    table: users\n    model: users\n" \
                 "    updated_column: updated_at\n"
    expect_err(PGX("\"host=999.1.1.1 dbname=src\""), 17, "stage 'src': dsn: host '999.1.1.1' "
               "is not a valid IPv4 address");
    expect_err(PGX("\"host=db.example port=07380\""), 17, "dsn: port '07380' is not valid");
    expect_err(PGX("\"host=db.example port=99999\""), 17, "dsn: port '99999' is not valid");
    expect_err(PGX("\"postgresql://u@db.example:99999/src\""), 17, "dsn: port '99999' is not "
               "valid");
    expect_err(PGX("\"postgresql://u@999.1.1.1/src\""), 17, "dsn: host '999.1.1.1'");
    expect_err(PGX("\"host=a,b..c dbname=src\""), 17, "dsn: host 'b..c' is not a valid host");
    expect_err(PGX("\"host=db.example\\r\\ndbname=src\""), 17, "dsn: has a line break (CR or LF)");
    expect_err(PGX("\"host=db.example dbname='unclosed\""), 17, "dsn: is not a valid libpq "
               "connection string");
    expect_err(PGX("\"hostaddr=1.2.3.400 dbname=src\""), 17, "dsn: hostaddr '1.2.3.400' is not "
               "a valid IP address");
    expect_err(MQUEUES "stages:\n  - name: n\n    kind: pg_notify\n    output: validate\n"
               "    dsn: \"host=db.example port=0\"\n    channels: [c]\n", 9,
               "stage 'n': dsn: port '0' is not valid");
    load_free(PGX("\"host=/var/run/postgresql dbname=src\""));
    load_free(PGX("\"host=db1.example,10.0.0.7,::1 port=5432,5433,5434 dbname=src user=u\""));
    load_free(PGX("\"postgresql://u:pw@[::1]:5432,db.example/src?sslmode=require\""));
    load_free(PGX("\"hostaddr=10.0.0.7 port=5432\""));
    load_free(PGX("\"dbname=src\""));
    load_free(PGX("env:SOME_DSN_NOT_SET_AT_CHECK_TIME"));
#undef PGX
}

/* A map with 200,000 keys: a duplicate deep inside is found and named with
 * both lines (the check is a hash set, not a scan per key: see
 * tests/test_check.py for the bound on the work). */
static void err_duplicate_key_deep(void)
{
    enum { N = 200000 };
    size_t cap = (size_t)N * 16 + 256, k = 0;
    char *text = xmalloc(cap), err[512];
    Pipeline *p = NULL;
    k += (size_t)snprintf(text + k, cap - k, "queues:\n");
    for (int i = 0; i < N; i++)
        k += (size_t)snprintf(text + k, cap - k, "  q%d:\n", i);
    size_t body = k;
    k += (size_t)snprintf(text + k, cap - k, "stages:\n  - {name: s, kind: noop, input: q0, "
                          "output: q1}\n");
    T_OK(pipeline_parse("big.yml", text, k, stage_kind_specs, &p, err, sizeof err));
    T_EQ(p->nqueues, N);
    T_CHECK(pipeline_queue(p, "q199999") != NULL && pipeline_queue(p, "q200000") == NULL);
    pipeline_free(p);
    /* the same file with q123456 again at its end (line N + 2) */
    k = body;
    k += (size_t)snprintf(text + k, cap - k, "  q123456:\nstages:\n  - {name: s, kind: noop, "
                          "input: q0, output: q1}\n");
    T_ERR(pipeline_parse("big.yml", text, k, stage_kind_specs, &p, err, sizeof err), PL_EINVAL);
    T_CHECK(p == NULL);
    if (!strstr(err, "big.yml:200002: duplicate key 'q123456' (also at line 123458); remove one"))
        t_fail(__FILE__, __LINE__, "error: %s", err);
    /* keys that differ only in case, or by a prefix, are different keys */
    p = load_ok("queues:\n  a:\n  A:\n  aa:\n  a.:\nstages:\n  - {name: s, kind: noop, "
                "input: a, output: A}\n");
    T_EQ(p->nqueues, 4);
    pipeline_free(p);
    free(text);
}

/* --------------------------------------------------- variables, secrets */

/* The environment's ${VAR}s in any value (the listener, drain, queues,
 * stages); p->text, which the engine keeps in the store, stays as written. */
static void variables_everywhere(void)
{
    static const char text[] = "drain: ${PL_T_DRAIN}\nlisten:\n  port: ${PL_T_PORT}\n"
                               "queues:\n  a: {ttr: 1}\n  b:\n    ttr: ${PL_T_TTR:-7}\n  c:\n"
                               "stages:\n  - name: x\n    kind: http_extract\n    input: a\n"
                               "    output: b\n    url: ${PL_T_API}/records/{id}\n";
    setenv("PL_T_PORT", "9123", 1);
    setenv("PL_T_API", "http://api.example:8080", 1);
    setenv("PL_T_DRAIN", "2.5", 1);
    unsetenv("PL_T_TTR");
    Pipeline *p = load_ok(text);
    T_EQ(p->listen_port, 9123);
    T_CHECK(p->drain_s == 2.5);
    T_EQ(pipeline_queue(p, "b")->conf.ttr_ms, 7000);
    T_CHECK(strcmp(conf_get(p->stages[0].node, "url")->value,
                   "http://api.example:8080/records/{id}") == 0);
    T_CHECK(p->text_len == strlen(text) && strcmp(p->text, text) == 0);
    pipeline_free(p);
    /* an unset one is named at its line */
    unsetenv("PL_T_API");
    expect_err(text, 14, "${PL_T_API} is not set; export PL_T_API, or give a default: "
               "${PL_T_API:-default}");
    /* a value that is not what its key takes is shown as written */
    setenv("PL_T_API", "http://api.example:8080", 1);
    setenv("PL_T_PORT", "not-a-port-hunter2", 1);
    expect_err(text, 3, "listen: port: expected a whole number from 1 to 65535 (got "
               "'${PL_T_PORT}')");
    unsetenv("PL_T_PORT");
    unsetenv("PL_T_API");
    unsetenv("PL_T_DRAIN");
}

/* A reader (qctl, qload: kinds NULL) expands and reads only queues: and
 * models:; the engine's variables need not be set where it runs. */
static void variables_reader_reads_queues_and_models(void)
{
    static const char text[] = "listen:\n  port: ${PL_T_PORT}\n  token: env:PL_T_TOKEN\n"
                               "queues:\n  a:\n    ttr: ${PL_T_TTR:-3}\n  b:\n"
                               "stages:\n  - {name: x, kind: http_extract, input: a, output: b, "
                               "url: \"${PL_T_API}/{id}\"}\n";
    char err[512] = "";
    Pipeline *p = NULL;
    unsetenv("PL_T_PORT");
    unsetenv("PL_T_TOKEN");
    unsetenv("PL_T_API");
    unsetenv("PL_T_TTR");
    const char *path = write_file("r.yml", text);
    T_OK(pipeline_load(path, NULL, &p, err, sizeof err));
    T_EQ(p->nqueues, 2);
    T_EQ(pipeline_queue(p, "a")->conf.ttr_ms, 3000);
    T_EQ(p->nstages, 0);
    T_CHECK(p->listen_token == NULL);
    pipeline_free(p);
    T_OK(pipeline_parse("stored", text, strlen(text), NULL, &p, err, sizeof err));
    pipeline_free(p);
    /* the engine's check needs them all */
    T_ERR(pipeline_load(path, stage_kind_specs, &p, err, sizeof err), PL_EINVAL);
    T_CHECK(strstr(err, ":2: ${PL_T_PORT} is not set") != NULL);
    /* what a reader reads must expand */
    static const char q[] = "queues:\n  a:\n    ttr: ${PL_T_TTR}\n";
    T_ERR(pipeline_parse("stored", q, sizeof q - 1, NULL, &p, err, sizeof err), PL_EINVAL);
    if (strncmp(err, "stored:3: ${PL_T_TTR} is not set", 32) != 0)
        t_fail(__FILE__, __LINE__, "error: %s", err);
}

/* A secret setting (a header value, a dsn, the token) may name where the
 * secret is: env:NAME or file:PATH, read when the stage starts; check
 * checks the form. */
static void secret_refs_checked(void)
{
#define HDR(h) POLL("http://h/") "    headers:\n" h
#define PGDSN(dsn) MODELS MQUEUES "stages:\n  - name: src\n    kind: pg_extract\n" \
                   "    dsn: " dsn "\n    table: users\n    model: users\n" \
                   "    updated_column: updated_at\n"
    unsetenv("PL_T_NOT_SET_AT_CHECK");
    load_free(HDR("      Authorization: env:PL_T_NOT_SET_AT_CHECK\n"
                  "      X-Key: file:/nonexistent/key\n"));
    expect_err(HDR("      Authorization: \"env:\"\n"), 11, "stage 'p': headers: Authorization: "
               "env: needs a variable name");
    expect_err(HDR("      Authorization: \"env:A-B\"\n"), 11, "env: needs a variable name");
    expect_err(HDR("      X-Key: \"file:\"\n"), 11, "headers: X-Key: file: needs a path");
    load_free(PGDSN("file:/nonexistent/dsn"));
    expect_err(PGDSN("\"file:\""), 17, "stage 'src': dsn: file: needs a path");
    expect_err(PGDSN("\"env:\""), 17, "stage 'src': dsn: env: needs a variable name");
    /* a dsn from a variable that libpq refuses: libpq's message (which
     * quotes the string, password and all) is not shown */
    setenv("PL_T_DSN", "postgresql://u:hunter2@db.example:5432/x?nosuchoption=1", 1);
    const char *path = write_file("p.yml", PGDSN("\"${PL_T_DSN}\""));
    char err[512];
    Pipeline *p;
    T_ERR(pipeline_load(path, stage_kind_specs, &p, err, sizeof err), PL_EINVAL);
    if (!strstr(err, ":17: stage 'src': dsn: is not a valid libpq connection string (libpq: its "
                "message is not shown: it may quote the value of ${PL_T_DSN})") ||
        strstr(err, "hunter2"))
        t_fail(__FILE__, __LINE__, "error: %s", err);
    /* written out, libpq's message helps */
    expect_err(PGDSN("\"postgresql://u@db.example/x?nosuchoption=1\""), 17,
               "invalid URI query parameter: \"nosuchoption\"");
    unsetenv("PL_T_DSN");
#undef HDR
#undef PGDSN
}

static void secrets_read(void)
{
    char *v = NULL, why[300];
    setenv("PL_T_S", "s3cret", 1);
    T_OK(pipeline_secret("env:PL_T_S", &v, why, sizeof why));
    T_CHECK(strcmp(v, "s3cret") == 0);
    pipeline_secret_free(v);
    setenv("PL_T_S", "", 1);
    T_ERR(pipeline_secret("env:PL_T_S", &v, why, sizeof why), PL_EINVAL);
    T_CHECK(v == NULL && strstr(why, "environment variable PL_T_S is empty"));
    unsetenv("PL_T_S");
    T_ERR(pipeline_secret("env:PL_T_S", &v, why, sizeof why), PL_EINVAL);
    T_CHECK(strstr(why, "environment variable PL_T_S is not set; export it"));
    /* a file: the newline an editor leaves is not part of it */
    const char *path = write_file("secret", "file-s3cret\r\n");
    char ref[PATH_MAX + 8];
    snprintf(ref, sizeof ref, "file:%s", path);
    T_OK(pipeline_secret(ref, &v, why, sizeof why));
    T_CHECK(strcmp(v, "file-s3cret") == 0);
    pipeline_secret_free(v);
    T_ERR(pipeline_secret("file:/nonexistent/secret", &v, why, sizeof why), PL_EINVAL);
    T_CHECK(strcmp(why, "cannot read /nonexistent/secret: No such file or directory") == 0);
    snprintf(ref, sizeof ref, "file:%s", t_dir());
    T_ERR(pipeline_secret(ref, &v, why, sizeof why), PL_EINVAL);
    T_CHECK(strstr(why, "not a regular file") != NULL);
    /* anything else is the secret itself */
    T_OK(pipeline_secret("Bearer abc", &v, why, sizeof why));
    T_CHECK(strcmp(v, "Bearer abc") == 0);
    pipeline_secret_free(v);
    T_CHECK(pipeline_secret_is_ref("env:X") && pipeline_secret_is_ref("file:/x"));
    T_CHECK(!pipeline_secret_is_ref("Bearer env:X") && !pipeline_secret_is_ref("environment"));
    T_CHECK(pipeline_secret_ref_error("env:X_1") == NULL);
    T_CHECK(pipeline_secret_ref_error("env:1X") != NULL);
    T_CHECK(pipeline_secret_ref_error("file:") != NULL);
}

/* A next page an answer names is followed only on url:'s origin. */
static void url_same_origin(void)
{
    static const struct { const char *a, *b; int same; } v[] = {
        {"http://feed.example/changes", "http://feed.example/changes?page=2", 1},
        {"http://feed.example/changes", "HTTP://Feed.Example:80/x", 1},
        {"https://feed.example/", "https://feed.example:443?p=1", 1},
        {"http://feed.example./a", "http://feed.example/b", 1},
        {"http://127.0.0.1:8080/a", "http://127.0.0.1:8080", 1},
        {"http://[::1]:8080/a", "http://[::1]:8080/b", 1},
        {"http://feed.example/", "https://feed.example/", 0},
        {"http://feed.example/", "http://feed.example:8080/", 0},
        {"http://feed.example/", "http://feed.example.evil/", 0},
        {"http://127.0.0.1:8080/", "http://localhost:8080/", 0},
        {"http://[::1]:8080/", "http://[::1]:8081/", 0},
        {"http://feed.example/", "//feed.example/", 0},
        {"http://feed.example/", "/changes", 0},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        T_EQ(http_url_same_origin(v[i].a, v[i].b), v[i].same);
        T_EQ(http_url_same_origin(v[i].b, v[i].a), v[i].same);
    }
    T_EQ(http_url_origin_len("http://feed.example:81/changes?x=1"), strlen("http://feed.example:81"));
    T_EQ(http_url_origin_len("https://[::1]?x"), strlen("https://[::1]"));
    T_EQ(http_url_origin_len("/changes"), 0);
}

static const TCase cases[] = {
    T_CASE(example_loads),
    T_CASE(defaults_filled),
    T_CASE(route_outputs_union),
    T_CASE(listener_needed),
    T_CASE(env_token),
    T_CASE(missing_file),
    T_CASE(err_yaml),
    T_CASE(err_tabs),
    T_CASE(err_duplicate_key),
    T_CASE(err_unknown_keys),
    T_CASE(health_section),
    T_CASE(err_types_and_ranges),
    T_CASE(err_missing_required),
    T_CASE(err_queues),
    T_CASE(err_stage_rules),
    T_CASE(err_route_cond),
    T_CASE(getters),
    T_CASE(graph_flow_order),
    T_CASE(models_accepted),
    T_CASE(err_models),
    T_CASE(parse_from_memory),
    T_CASE(pg_extract_input_optional),
    T_CASE(err_url_control_chars),
    T_CASE(err_url_hosts_ports),
    T_CASE(err_header_values),
    T_CASE(err_cursor_param),
    T_CASE(err_dsn_hosts),
    T_CASE(err_duplicate_key_deep),
    T_CASE(variables_everywhere),
    T_CASE(variables_reader_reads_queues_and_models),
    T_CASE(secret_refs_checked),
    T_CASE(secrets_read),
    T_CASE(url_same_origin),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, "pipeline", cases);
}
