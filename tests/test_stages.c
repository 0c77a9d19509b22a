/* test_stages.c: the stage kinds' logic, in-process: a job at a time
 * through the real runtime on a real store (t_engine.h), against a service
 * on loopback (t_service.h): URL templates, what a service's answer does to
 * the job (HTTP status -> done, retry or bury; Retry-After), the headers a
 * stage sends, merges and the model check of merged data, route matching,
 * and sealing. The whole line, with the binary, is the python tests'. */
#include "t.h"
#include "t_engine.h"
#include "t_service.h"
#include "pl.h"
#include "queue.h"
#include "staging.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- helpers */

/* pipe_text formats a pipeline text (a static buffer). */
static const char *pipe_text(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *pipe_text(const char *fmt, ...)
{
    static char buf[16384];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    T_CHECK(n > 0 && (size_t)n < sizeof buf);
    return buf;
}

/* take_ref takes the next job of queue, a staged-row reference. */
static StagedRef take_ref(Engine *e, const char *queue, Strbuf *body)
{
    StagedRef ref;
    msgpack_sbuffer mp;
    RowView v;
    T_OK(te_take(e, queue, body));
    msgpack_sbuffer_init(&mp);
    T_OK(row_from_json_object(body->buf, body->len, &mp, NULL, 0));
    T_OK(row_view(&v, mp.data, mp.size));
    T_OK(staging_ref_parse(&v.root, &ref));
    row_view_free(&v);
    msgpack_sbuffer_destroy(&mp);
    return ref;
}

/* row_id_of returns the instance a reference body names. */
static uint64_t row_id_of(const Strbuf *ref)
{
    StagedRef r;
    msgpack_sbuffer mp;
    RowView v;
    msgpack_sbuffer_init(&mp);
    T_OK(row_from_json_object(ref->buf, ref->len, &mp, NULL, 0));
    T_OK(row_view(&v, mp.data, mp.size));
    T_OK(staging_ref_parse(&v.root, &r));
    row_view_free(&v);
    msgpack_sbuffer_destroy(&mp);
    return r.row;
}

#define EXPECT_IN(hay, needle) \
    do { if (!strstr((hay), (needle))) \
             t_fail(__FILE__, __LINE__, "'%s' not in '%s'", (needle), (hay)); } while (0)

/* expect_end works body through stage and checks how the job ended (TE_*)
 * and, when want is set, that its error holds want. */
#define EXPECT_END(e, stage, body, end, want) expect_end(__LINE__, e, stage, body, end, want)
static TeJob expect_end(int line, Engine *e, const char *stage, const char *body, int end,
                        const char *want)
{
    TeJob j = te_work(e, stage, body);
    if (j.end != end)
        t_fail(__FILE__, line, "the job ended %d, wanted %d (%s)", j.end, end, j.error);
    if (want && !strstr(j.error, want))
        t_fail(__FILE__, line, "'%s' not in '%s'", want, j.error);
    return j;
}

/* drain_count takes every job of queue and returns how many there were. */
static int drain_count(Engine *e, const char *queue)
{
    Strbuf b;
    int n = 0;
    sb_init(&b);
    while (te_take(e, queue, &b) == 0)
        n++;
    sb_free(&b);
    return n;
}

#define MODEL_USERS \
    "models:\n" \
    "  users:\n" \
    "    properties:\n" \
    "      id: {type: string, length: 20, key: true}\n" \
    "      name: {type: string, length: 20}\n" \
    "      address: {type: string}\n" \
    "      lat: {type: decimal, precision: 8, scale: 5}\n" \
    "      lon: {type: decimal, precision: 8, scale: 5}\n" \
    "      visits: {type: integer, min: 0}\n"

/* An http_extract stage "ex" from queue in to out; url after the base. */
static const char *extract_pipe(const char *url, const char *more)
{
    return pipe_text(MODEL_USERS
                     "queues:\n  in: {backoff: 0.2}\n  out:\n"
                     "stages:\n"
                     "  - name: ex\n    kind: http_extract\n    input: in\n    output: out\n"
                     "    url: %s%s\n    key_field: id\n    model: users\n%s",
                     ts_base(), url, more ? more : "");
}

/* ---------------------------------------------------------------- http_extract */

static void extract_renders_the_url_and_lands_the_record(void)
{
    ts_start();
    ts_answer("/records/u 1", 200, NULL, "{\"id\":\"u 1\",\"name\":\"Ann\",\"visits\":3}");
    Engine *e = te_open(extract_pipe("/records/{id}?tenant={tenant}", NULL));
    TeJob j = EXPECT_END(e, "ex", "{\"id\":\"u 1\",\"tenant\":7}", TE_DONE, NULL);
    T_EQ(ts_count(), 1);
    TsRequest r = ts_request(0);
    T_CHECK(!strcmp(r.method, "GET"));
    T_CHECK(!strcmp(r.target, "/records/u%201?tenant=7"));
    char idem[128];
    snprintf(idem, sizeof idem, "pickline-ex-%llu", (unsigned long long)j.id);
    T_CHECK(ts_header(&r, "Idempotency-Key") && !strcmp(ts_header(&r, "Idempotency-Key"), idem));
    T_CHECK(ts_header(&r, "Accept") && !strcmp(ts_header(&r, "Accept"), "application/json"));
    ts_request_free(&r);
    /* The record is a new instance of the staged row; the output names it. */
    Strbuf b, row;
    sb_init(&b);
    sb_init(&row);
    StagedRef ref = take_ref(e, "out", &b);
    T_CHECK(!strcmp(ref.model, "users") && !strcmp(ref.key, "u 1") && ref.row > 0);
    T_OK(te_row(e, "users", "u 1", ref.row, &row));
    T_CHECK(!strcmp(row.buf, "{\"id\":\"u 1\",\"name\":\"Ann\",\"visits\":3}"));
    /* A second fetch of the same key lands an instance of its own. */
    EXPECT_END(e, "ex", "{\"id\":\"u 1\",\"tenant\":7}", TE_DONE, NULL);
    StagedRef ref2 = take_ref(e, "out", &b);
    T_CHECK(ref2.row != ref.row);
    sb_free(&b);
    sb_free(&row);
    te_close(e);
    ts_stop();
}

static void extract_buries_a_job_no_template_can_render(void)
{
    ts_start();
    Engine *e = te_open(extract_pipe("/records/{id}", NULL));
    EXPECT_END(e, "ex", "{\"name\":\"no id\"}", TE_BURY, "'id' is missing");
    EXPECT_END(e, "ex", "{\"id\":\"..\"}", TE_BURY, "dot segment");
    EXPECT_END(e, "ex", "{\"id\":\"\"}", TE_BURY, "is empty");
    EXPECT_END(e, "ex", "[1, 2]", TE_BURY, "job body");
    T_EQ(ts_count(), 0); /* none of them was sent */
    te_close(e);
    ts_stop();
}

/* What an answer does to the job: a 2xx JSON object is done, a 4xx (but
 * 408 and 429) buries, a 5xx, 408 or 429 retries after the backoff or the
 * Retry-After, whichever is later, and a 2xx that is not a JSON object
 * buries. */
static void an_answer_ends_the_job_by_its_status(void)
{
    ts_start();
    ts_answer("/s/ok", 200, NULL, "{\"id\":\"ok\"}");
    ts_answer("/s/404", 404, NULL, "no such record");
    ts_answer("/s/400", 400, NULL, "bad request");
    ts_answer("/s/500", 500, NULL, "boom");
    ts_answer("/s/408", 408, NULL, "");
    ts_answer("/s/429", 429, "Retry-After: 7", "slow down");
    ts_answer("/s/503", 503, "Retry-After: 120", "maintenance");
    ts_answer("/s/text", 200, NULL, "this is not JSON");
    ts_answer("/s/array", 200, NULL, "[1,2,3]");
    Engine *e = te_open(extract_pipe("/s/{id}", NULL));
    EXPECT_END(e, "ex", "{\"id\":\"ok\"}", TE_DONE, NULL);

    EXPECT_END(e, "ex", "{\"id\":\"404\"}", TE_BURY, "/s/404: HTTP 404: no such record");
    EXPECT_END(e, "ex", "{\"id\":\"400\"}", TE_BURY, "HTTP 400");

    TeJob j = EXPECT_END(e, "ex", "{\"id\":\"500\"}", TE_RETRY, "/s/500: HTTP 500: boom");
    T_CHECK(j.delay_s > 0.1 && j.delay_s < 1.0); /* the queue's backoff, 0.2 s with jitter */
    EXPECT_END(e, "ex", "{\"id\":\"408\"}", TE_RETRY, "HTTP 408");
    j = EXPECT_END(e, "ex", "{\"id\":\"429\"}", TE_RETRY, "HTTP 429");
    T_CHECK(j.delay_s > 6.0 && j.delay_s <= 7.0); /* Retry-After: 7 */
    j = EXPECT_END(e, "ex", "{\"id\":\"503\"}", TE_RETRY, "HTTP 503");
    T_CHECK(j.delay_s > 119.0 && j.delay_s <= 120.0);

    EXPECT_END(e, "ex", "{\"id\":\"text\"}", TE_BURY, "malformed JSON from http://127.0.0.1:");
    EXPECT_END(e, "ex", "{\"id\":\"array\"}", TE_BURY, "malformed JSON from ");
    /* Only the good one landed anything. */
    T_EQ(drain_count(e, "out"), 1);
    te_close(e);
    ts_stop();
}

/* Every header the stage declares is sent, with the stage's own. */
static void every_declared_header_is_sent(void)
{
    enum { N = 40 }; /* more than the 30 a pipeline could declare when the kinds had fixed arrays */
    char more[4096] = "    headers:\n";
    for (int i = 0; i < N; i++)
        snprintf(more + strlen(more), sizeof more - strlen(more), "      X-H%02d: value %d\n", i,
                 i);
    ts_start();
    ts_answer("/r/1", 200, NULL, "{\"id\":\"1\"}");
    Engine *e = te_open(extract_pipe("/r/{id}", more));
    EXPECT_END(e, "ex", "{\"id\":\"1\"}", TE_DONE, NULL);
    TsRequest r = ts_request(0);
    for (int i = 0; i < N; i++) {
        char name[32], want[32];
        snprintf(name, sizeof name, "X-H%02d", i);
        snprintf(want, sizeof want, "value %d", i);
        const char *v = ts_header(&r, name);
        if (!v || strcmp(v, want) != 0)
            t_fail(__FILE__, __LINE__, "header %s: %s", name, v ? v : "(not sent)");
    }
    T_CHECK(ts_header(&r, "Idempotency-Key") != NULL);
    T_CHECK(ts_header(&r, "Accept") != NULL);
    ts_request_free(&r);
    te_close(e);
    ts_stop();
}

/* ---------------------------------------------------------------- http_poll */

static int polled_thrice(Engine *e, void *arg)
{
    (void)e, (void)arg;
    return ts_count() >= 4;
}

/* A feed is read page by page (next), each change a job keyed by its id;
 * once drained, the cursor the feed gave goes into the next poll's query.
 * The stage's headers go with every poll. */
static void poll_follows_pages_and_keeps_the_cursor(void)
{
    char page1[512];
    ts_start();
    snprintf(page1, sizeof page1, "{\"changes\":[{\"id\":\"a\"},{\"id\":\"b\",\"v\":1}],"
             "\"cursor\":\"c 1\",\"next\":\"%s/more\"}", ts_base());
    ts_answer("/changes", 200, NULL, page1);
    ts_answer("/more", 200, NULL,
              "{\"changes\":[{\"id\":\"c\"},{\"id\":\"a\"}],\"cursor\":\"c/2\"}");
    Engine *e = te_open(pipe_text("queues:\n  out:\n"
                                  "stages:\n"
                                  "  - name: p\n    kind: http_poll\n    output: out\n"
                                  "    url: %s/changes\n    interval: 0.05\n"
                                  "    cursor_param: since\n    cursor_field: cursor\n"
                                  "    next_field: next\n    key_field: id\n"
                                  "    headers: {X-Feed: yes}\n",
                                  ts_base()));
    te_begin(e, "p");
    te_run_until(e, polled_thrice, NULL);
    /* the third poll starts over with the cursor (escaped), and follows next again */
    static const char *const want[] = {"/changes", "/more", "/changes?since=c%2F2", "/more"};
    for (size_t i = 0; i < 4; i++) {
        TsRequest r = ts_request(i);
        if (strcmp(r.target, want[i]) != 0)
            t_fail(__FILE__, __LINE__, "request %zu: %s, wanted %s", i, r.target, want[i]);
        T_CHECK(ts_header(&r, "X-Feed") && !strcmp(ts_header(&r, "X-Feed"), "yes"));
        T_CHECK(ts_header(&r, "Accept") != NULL);
        ts_request_free(&r);
    }
    /* a, b, c: the second "a" has a's key (idempotency), and the second
     * round brings them all again, adding nothing */
    Strbuf b;
    sb_init(&b);
    static const char *const bodies[] = {"{\"id\":\"a\"}", "{\"id\":\"b\",\"v\":1}",
                                         "{\"id\":\"c\"}"};
    for (size_t i = 0; i < 3; i++) {
        T_OK(te_take(e, "out", &b));
        T_CHECK(!strcmp(b.buf, bodies[i]));
    }
    T_ERR(te_take(e, "out", &b), PL_EEMPTY);
    sb_free(&b);
    te_close(e);
    ts_stop();
}

/* ---------------------------------------------------------------- http_enrich */

static const char *enrich_pipe(const char *method_url, const char *merge)
{
    return pipe_text(MODEL_USERS
                     "queues:\n  in: {backoff: 0.2}\n  out:\n"
                     "stages:\n"
                     "  - name: geo\n    kind: http_enrich\n    input: in\n    output: out\n"
                     "    %s\n    merge: %s\n",
                     method_url, merge);
}

static void enrich_merges_chosen_fields_into_the_row(void)
{
    ts_start();
    ts_answer("/geo", 200, NULL, "{\"lat\":52.1,\"lon\":4.25,\"city\":\"Leiden\"}");
    char mu[256];
    snprintf(mu, sizeof mu, "url: %s/geo?address={address}", ts_base());
    Engine *e = te_open(enrich_pipe(mu, "{lat: lat, lon: lon}"));
    Strbuf ref, row, b;
    sb_init(&ref);
    sb_init(&row);
    sb_init(&b);
    te_land(e, "users", "u1", "{\"id\":\"u1\",\"address\":\"Main St 1\"}", &ref);
    EXPECT_END(e, "geo", ref.buf, TE_DONE, NULL);
    TsRequest r = ts_request(0);
    T_CHECK(!strcmp(r.target, "/geo?address=Main%20St%201"));
    ts_request_free(&r);
    /* The job goes on as it came; its row has the two fields, no more. */
    T_OK(te_take(e, "out", &b));
    T_CHECK(!strcmp(b.buf, ref.buf));
    T_OK(te_row(e, "users", "u1", row_id_of(&ref), &row));
    T_CHECK(!strcmp(row.buf,
                    "{\"id\":\"u1\",\"address\":\"Main St 1\",\"lat\":52.1,\"lon\":4.25}"));
    sb_free(&ref);
    sb_free(&row);
    sb_free(&b);
    te_close(e);
    ts_stop();
}

static void enrich_posts_the_send_fields(void)
{
    ts_start();
    ts_answer("/check/u2", 200, NULL, "{\"visits\":4}");
    char mu[256];
    snprintf(mu, sizeof mu,
             "method: POST\n    send: [name, address, nothing]\n    url: %s/check/{id}", ts_base());
    Engine *e = te_open(enrich_pipe(mu, "{visits: visits}"));
    Strbuf ref;
    sb_init(&ref);
    te_land(e, "users", "u2", "{\"id\":\"u2\",\"name\":\"Bo\",\"address\":\"x\\\"y\"}", &ref);
    EXPECT_END(e, "geo", ref.buf, TE_DONE, NULL);
    TsRequest r = ts_request(0);
    T_CHECK(!strcmp(r.method, "POST"));
    T_CHECK(!strcmp(r.body, "{\"name\":\"Bo\",\"address\":\"x\\\"y\",\"nothing\":null}"));
    const char *ct = ts_header(&r, "Content-Type");
    T_CHECK(ct && !strcmp(ct, "application/json"));
    ts_request_free(&r);
    sb_free(&ref);
    te_close(e);
    ts_stop();
}

static void enrich_buries_a_job_whose_row_is_gone(void)
{
    ts_start();
    char mu[256];
    snprintf(mu, sizeof mu, "url: %s/geo", ts_base());
    Engine *e = te_open(enrich_pipe(mu, "{lat: lat}"));
    EXPECT_END(e, "geo", "{\"model\":\"users\",\"key\":\"nobody\",\"row_id\":99}", TE_BURY,
               "staged row users/nobody: not found");
    EXPECT_END(e, "geo", "{\"id\":\"not a reference\"}", TE_BURY, "not a staged-row reference");
    T_EQ(ts_count(), 0);
    te_close(e);
    ts_stop();
}

/* Data from a service is checked against the model before it touches the
 * row (DESIGN.md, invariant 8): a value that breaks its field's rules buries
 * the job with the reasons and leaves the row as it was; good values are
 * merged in their normalised form. A row of a model the pipeline does not
 * declare takes the values as sent. */
static void enrich_checks_the_answer_against_the_model(void)
{
    ts_start();
    ts_answer("/geo/u1", 200, NULL, "{\"lat\":\"north\",\"lon\":4.25}");
    ts_answer("/geo/u2", 200, NULL, "{\"lat\":1.5,\"visits\":-1}");
    ts_answer("/geo/u3", 200, NULL, "{\"lat\":\"52.125\",\"lon\":4.25,\"visits\":2}");
    ts_answer("/geo/t1", 200, NULL, "{\"lat\":\"north\"}");
    char mu[256];
    snprintf(mu, sizeof mu, "url: %s/geo/{id}", ts_base());
    Engine *e = te_open(enrich_pipe(mu, "{lat: lat, lon: lon, visits: visits}"));
    Strbuf ref, row;
    sb_init(&ref);
    sb_init(&row);
    static const char *const rows[] = {"{\"id\":\"u1\",\"lat\":1}", "{\"id\":\"u2\"}",
                                       "{\"id\":\"u3\"}"};
    for (int i = 0; i < 3; i++) {
        char key[8];
        snprintf(key, sizeof key, "u%d", i + 1);
        te_land(e, "users", key, rows[i], &ref);
        TeJob j = te_work(e, "geo", ref.buf);
        T_OK(te_row(e, "users", key, row_id_of(&ref), &row));
        if (i == 0) {
            T_EQ(j.end, TE_BURY);
            EXPECT_IN(j.error, "model 'users'");
            EXPECT_IN(j.error, "field 'lat' rule type");
            T_CHECK(!strcmp(row.buf, rows[0])); /* as it was: lon, which was good, too */
        } else if (i == 1) {
            T_EQ(j.end, TE_BURY);
            EXPECT_IN(j.error, "field 'visits' rule min");
            T_CHECK(!strcmp(row.buf, rows[1]));
        } else {
            T_EQ(j.end, TE_DONE);
            T_CHECK(!strcmp(row.buf, "{\"id\":\"u3\",\"lat\":52.125,\"lon\":4.25,\"visits\":2}"));
        }
    }
    T_EQ(drain_count(e, "out"), 1);
    te_land(e, "things", "t1", "{\"id\":\"t1\"}", &ref);
    EXPECT_END(e, "geo", ref.buf, TE_DONE, NULL);
    T_OK(te_row(e, "things", "t1", row_id_of(&ref), &row));
    T_CHECK(!strcmp(row.buf, "{\"id\":\"t1\",\"lat\":\"north\"}"));
    sb_free(&ref);
    sb_free(&row);
    te_close(e);
    ts_stop();
}

/* A merge of more fields than a commit can carry is refused when the
 * pipeline is checked (it was accepted, and http_enrich's first answer
 * stopped the engine on an assertion). */
static void a_merge_of_too_many_fields_is_refused_at_the_check(void)
{
    char merge[4096] = "{";
    for (int i = 0; i < 65; i++)
        snprintf(merge + strlen(merge), sizeof merge - strlen(merge), "%sf%d: f%d", i ? ", " : "",
                 i, i);
    strcat(merge, "}");
    char err[1024] = "";
    const char *mu = "url: http://127.0.0.1:9/geo";
    Engine *e = NULL;
    int rc = te_try_open(enrich_pipe(mu, merge), &e, err, sizeof err);
    if (rc != PL_EINVAL || e)
        t_fail(__FILE__, __LINE__, "65 merge fields: %d %s", rc, err);
    EXPECT_IN(err, "merge: 65 fields; a stage merges at most 64");
    /* 64 are fine */
    strcpy(strstr(merge, ", f64: f64"), "}");
    e = te_open(enrich_pipe(mu, merge));
    te_close(e);
}

/* pg_extract reads columns by the properties' names: a model that reads a
 * property from: another field is refused at start, not extracted with
 * NULLs where the column has another name. */
static void pg_extract_refuses_from_fields(void)
{
    Engine *e = NULL;
    char err[512] = "";
    int rc = te_try_open(pipe_text(
        "models:\n  films:\n    properties:\n      id: {type: bigint, key: true}\n"
        "      us_gross: {type: bigint, from: \"US Gross\"}\n"
        "      updated_at: {type: datetime}\n"
        "queues:\n  out:\n"
        "stages:\n  - name: src\n    kind: pg_extract\n    dsn: \"host=/nonexistent dbname=x\"\n"
        "    table: films\n    model: films\n    updated_column: updated_at\n"), &e, err, sizeof err);
    if (rc == 0 || e)
        t_fail(__FILE__, __LINE__, "a model with from: was taken by pg_extract: %d %s", rc, err);
    EXPECT_IN(err, "reads property 'us_gross' from 'US Gross' (from:), but pg_extract selects");
}

/* ---------------------------------------------------------------- route */

static const char *route_pipe(const char *dflt)
{
    return pipe_text(MODEL_USERS
                     "queues:\n  in:\n  geo:\n  nl:\n  audit:\n  named:\n  rest:\n"
                     "stages:\n"
                     "  - name: r\n    kind: route\n    input: in\n"
                     "    routes:\n"
                     "      - when: {field: address, exists: true}\n        to: geo\n"
                     "      - when: {field: country, in: [NL, BE]}\n        to: [nl, audit]\n"
                     "      - when: {field: name, equals: Ann}\n        to: [named, audit]\n"
                     "      - when: {field: visits, not_equals: '0'}\n        to: audit\n"
                     "%s",
                     dflt ? dflt : "");
}


static void route_sends_a_job_where_its_fields_match(void)
{
    Engine *e = te_open(route_pipe("    default: rest\n"));
    /* exists, in, and not_equals (no visits: not equal); audit once */
    EXPECT_END(e, "r", "{\"address\":\"a\",\"country\":\"NL\"}", TE_DONE, NULL);
    T_EQ(drain_count(e, "geo"), 1);
    T_EQ(drain_count(e, "nl"), 1);
    T_EQ(drain_count(e, "audit"), 1);
    T_EQ(drain_count(e, "rest"), 0);
    /* equals; visits 0 does not match not_equals 0; numbers compare as text */
    EXPECT_END(e, "r", "{\"name\":\"Ann\",\"country\":\"DE\",\"visits\":0}", TE_DONE, NULL);
    T_EQ(drain_count(e, "named"), 1);
    T_EQ(drain_count(e, "audit"), 1);
    T_EQ(drain_count(e, "nl") + drain_count(e, "geo") + drain_count(e, "rest"), 0);
    /* nothing matches: the default */
    EXPECT_END(e, "r", "{\"name\":\"Bo\",\"country\":\"DE\",\"visits\":0}", TE_DONE, NULL);
    T_EQ(drain_count(e, "rest"), 1);
    T_EQ(drain_count(e, "audit") + drain_count(e, "named"), 0);
    /* a reference: the fields of the row it names count too */
    Strbuf ref;
    sb_init(&ref);
    te_land(e, "users", "u3", "{\"id\":\"u3\",\"address\":\"b\"}", &ref);
    EXPECT_END(e, "r", ref.buf, TE_DONE, NULL);
    T_EQ(drain_count(e, "geo"), 1);
    T_EQ(drain_count(e, "audit"), 1); /* no visits */
    sb_free(&ref);
    te_close(e);
}

static void route_buries_what_matches_nothing_without_a_default(void)
{
    Engine *e = te_open(route_pipe(NULL));
    EXPECT_END(e, "r", "{\"name\":\"Bo\",\"visits\":0}", TE_BURY, "no route matched");
    EXPECT_END(e, "r", "not json", TE_BURY, "job body: ");
    te_close(e);
}

/* ---------------------------------------------------------------- validate */

/* Rejects: the rejects of a model as "key|stage|queue|errors" lines. */
static int reject_line(const RejectRead *r, void *arg)
{
    sb_addf(arg, "%s|%s|%s|%.*s\n", r->key, r->stage, r->queue, (int)r->r.errors_len,
            r->r.errors);
    return 0;
}

static int read_rejects(Txn *t, void *arg)
{
    sb_reset(arg);
    return reject_each(t, "users", reject_line, arg);
}

/* A valid row replaces the staged one in its normalised form and a
 * reference goes to every output; an invalid one becomes a reject with its
 * reasons, and nothing goes on; a row inline in the job lands as a new
 * instance when valid. */
static void validate_normalises_or_rejects(void)
{
    Engine *e = te_open(pipe_text(MODEL_USERS
                                  "queues:\n  in:\n  a:\n  b:\n"
                                  "stages:\n"
                                  "  - name: v\n    kind: validate\n    input: in\n"
                                  "    model: users\n    output: [a, b]\n"));
    Strbuf ref, row, b, rej;
    sb_init(&ref);
    sb_init(&row);
    sb_init(&b);
    sb_init(&rej);
    static const char norm[] = "{\"id\":\"u1\",\"name\":\"Ann\",\"address\":null,\"lat\":1.50,"
                               "\"lon\":null,\"visits\":null}";
    te_land(e, "users", "u1", "{\"lat\":\"1.50\",\"name\":\"Ann\",\"id\":\"u1\"}", &ref);
    EXPECT_END(e, "v", ref.buf, TE_DONE, NULL);
    T_OK(te_row(e, "users", "u1", row_id_of(&ref), &row));
    if (strcmp(row.buf, norm) != 0)
        t_fail(__FILE__, __LINE__, "normalised: %s", row.buf);
    T_OK(te_take(e, "a", &b));
    T_CHECK(!strcmp(b.buf, ref.buf));
    T_OK(te_take(e, "b", &b));
    T_CHECK(!strcmp(b.buf, ref.buf));
    /* invalid: a reject, the row let go, no output */
    te_land(e, "users", "u2", "{\"id\":\"u2\",\"visits\":-1}", &ref);
    EXPECT_END(e, "v", ref.buf, TE_DONE, NULL);
    T_ERR(te_row(e, "users", "u2", row_id_of(&ref), &row), PL_ENOROW);
    T_EQ(drain_count(e, "a") + drain_count(e, "b"), 0);
    T_OK(store_read(engine_store(e), read_rejects, &rej));
    EXPECT_IN(rej.buf, "u2|v|in|[{\"field\":\"visits\",\"rule\":\"min\"");
    /* inline and valid: a new instance, referenced from both outputs */
    EXPECT_END(e, "v", "{\"model\":\"users\",\"row\":{\"id\":\"u3\"}}", TE_DONE, NULL);
    StagedRef r = take_ref(e, "a", &b);
    T_CHECK(!strcmp(r.key, "u3") && r.row > 0);
    T_OK(te_row(e, "users", "u3", r.row, &row));
    EXPECT_IN(row.buf, "{\"id\":\"u3\",\"name\":null");
    /* a job for another model is buried */
    EXPECT_END(e, "v", "{\"model\":\"things\",\"key\":\"t\"}", TE_BURY,
               "the job is for model 'things' but stage 'v' validates 'users'");
    sb_free(&ref);
    sb_free(&row);
    sb_free(&b);
    sb_free(&rej);
    te_close(e);
}

/* ---------------------------------------------------------------- batch: sealing */

static const char *batch_pipe(const char *more)
{
    return pipe_text(MODEL_USERS
                     "queues:\n  in:\n"
                     "stages:\n"
                     "  - name: b\n    kind: batch\n    input: in\n    model: users\n%s",
                     more);
}

/* Batches: what batch_each finds, by state. */
typedef struct Batches {
    size_t open, sealed;
    uint64_t rows_sealed, rows_open;
} Batches;

static int count_batch(const BatchRec *b, void *arg)
{
    Batches *n = arg;
    if (b->state == BATCH_OPEN) {
        n->open++;
        n->rows_open += b->rows;
    } else if (b->state == BATCH_SEALED) {
        n->sealed++;
        n->rows_sealed += b->rows;
    }
    return 0;
}

static int read_batches(Txn *t, void *arg)
{
    memset(arg, 0, sizeof(Batches));
    return batch_each(t, -1, count_batch, arg);
}

static Batches batches(Engine *e)
{
    Batches n;
    T_OK(store_read(engine_store(e), read_batches, &n));
    return n;
}

static int all_sealed(Engine *e, void *arg)
{
    (void)arg;
    Batches n = batches(e);
    return n.open == 0 && n.rows_sealed == 3;
}

/* A batch is sealed by the append that fills it, and an open one by the
 * seal timer once it is older than `seconds`; the rows go in whole, and the
 * staged rows with their last reference. */
static void batch_seals_at_rows_and_after_seconds(void)
{
    Engine *e = te_open(batch_pipe("    rows: 2\n    seconds: 0.2\n"));
    Strbuf ref, row;
    sb_init(&ref);
    sb_init(&row);
    for (int i = 1; i <= 3; i++) {
        char key[8], json[64];
        snprintf(key, sizeof key, "u%d", i);
        snprintf(json, sizeof json, "{\"id\":\"u%d\",\"visits\":%d}", i, i);
        te_land(e, "users", key, json, &ref);
        EXPECT_END(e, "b", ref.buf, TE_DONE, NULL);
        T_ERR(te_row(e, "users", key, row_id_of(&ref), &row), PL_ENOROW); /* in its batch now */
        Batches n = batches(e);
        if (i == 2) /* the second row filled the first batch */
            T_CHECK(n.sealed == 1 && n.rows_sealed == 2);
        if (i == 3) /* the third opened the next one, which waits for the timer */
            T_CHECK(n.sealed == 1 && n.open == 1 && n.rows_open == 1);
    }
    te_run_until(e, all_sealed, NULL);
    T_EQ(batches(e).sealed, 2);
    sb_free(&ref);
    sb_free(&row);
    te_close(e);
}

static void batch_buries_what_it_cannot_put_in_a_batch(void)
{
    Engine *e = te_open(batch_pipe(""));
    EXPECT_END(e, "b", "{\"model\":\"users\",\"key\":\"nobody\",\"row_id\":5}", TE_BURY,
               "staged row users/nobody: not found; nothing to put in a batch");
    EXPECT_END(e, "b", "{\"model\":\"things\",\"key\":\"k\",\"row_id\":5}", TE_BURY,
               "model 'things' is not declared");
    EXPECT_END(e, "b", "{\"id\":1}", TE_BURY, "a batch stage takes references to staged rows");
    Batches n = batches(e);
    T_EQ(n.open + n.sealed, 0);
    te_close(e);
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    static const TCase cases[] = {
        T_CASE(extract_renders_the_url_and_lands_the_record),
        T_CASE(extract_buries_a_job_no_template_can_render),
        T_CASE(an_answer_ends_the_job_by_its_status),
        T_CASE(every_declared_header_is_sent),
        T_CASE(poll_follows_pages_and_keeps_the_cursor),
        T_CASE(enrich_merges_chosen_fields_into_the_row),
        T_CASE(enrich_posts_the_send_fields),
        T_CASE(enrich_buries_a_job_whose_row_is_gone),
        T_CASE(enrich_checks_the_answer_against_the_model),
        T_CASE(a_merge_of_too_many_fields_is_refused_at_the_check),
        T_CASE(route_sends_a_job_where_its_fields_match),
        T_CASE(route_buries_what_matches_nothing_without_a_default),
        T_CASE(validate_normalises_or_rejects),
        T_CASE(batch_seals_at_rows_and_after_seconds),
        T_CASE(batch_buries_what_it_cannot_put_in_a_batch),
        T_CASE(pg_extract_refuses_from_fields),
        {NULL, NULL},
    };
    return t_main(argc, argv, "stages", cases);
}
