/* metrics.c: GET /metrics, the Prometheus text format (0.0.4): every
 * family once, with its HELP and TYPE, all its samples together (what
 * `promtool check metrics` asks; tests/test_observe.py runs it).
 *
 * From the snapshot (observe.h): the queues (jobs by state, oldest ready,
 * totals), the batches and their rows by model and state, the rejects by
 * model, field and rule, the map and the disk, readiness. From memory: the
 * stages (in flight, done/retried/buried, latency histogram, dependency
 * failures in a row), the commits (latency histogram, ops), the loop. */
#include "observe.h"

#include "engine_int.h"
#include "pl.h"

#include <stdio.h>
#include <string.h>

/* family writes the HELP and TYPE lines of a family. */
static void family(Strbuf *b, const char *name, const char *type, const char *help)
{
    sb_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* label appends a label value, escaped as the format says (\\, \", \n). */
static void label(Strbuf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            sb_addf(b, "\\%c", *v);
        else if (*v == '\n')
            sb_adds(b, "\\n");
        else
            sb_add(b, v, 1);
    }
}

/* sample1 appends `name{key="v"} value` (key NULL: no label). */
static void sample1(Strbuf *b, const char *name, const char *key, const char *v, double value)
{
    sb_adds(b, name);
    if (key) {
        sb_addf(b, "{%s=\"", key);
        label(b, v);
        sb_adds(b, "\"}");
    }
    sb_addf(b, " %.17g\n", value);
}

/* count2 appends `name{key="v",key2="word"} n`: a count by a label and a
 * word of a fixed set (a state, an outcome: no escaping needed). */
static void count2(Strbuf *b, const char *name, const char *key, const char *v, const char *key2,
                   const char *word, uint64_t n)
{
    sb_addf(b, "%s{%s=\"", name, key);
    label(b, v);
    sb_addf(b, "\",%s=\"%s\"} %llu\n", key2, word, (unsigned long long)n);
}

static void histogram(Strbuf *b, const char *name, const char *key, const char *v,
                      const uint64_t *buckets, const double *bounds, int nbounds, double sum)
{
    uint64_t cum = 0;
    for (int k = 0; k <= nbounds; k++) {
        cum += buckets[k];
        sb_addf(b, "%s_bucket{", name);
        if (key) {
            sb_addf(b, "%s=\"", key);
            label(b, v);
            sb_adds(b, "\",");
        }
        if (k < nbounds)
            sb_addf(b, "le=\"%g\"} %llu\n", bounds[k], (unsigned long long)cum);
        else
            sb_addf(b, "le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    sb_addf(b, "%s_sum", name);
    if (key) {
        sb_addf(b, "{%s=\"", key);
        label(b, v);
        sb_adds(b, "\"}");
    }
    sb_addf(b, " %.9f\n%s_count", sum, name);
    if (key) {
        sb_addf(b, "{%s=\"", key);
        label(b, v);
        sb_adds(b, "\"}");
    }
    sb_addf(b, " %llu\n", (unsigned long long)cum);
}

static const char *const job_states[] = {"ready", "delayed", "reserved", "buried"};

/* holds writes the gauge family name of each queue's jobs the engine holds
 * (held) or works (!held), as holds_count counts them. */
static void holds(Strbuf *b, Engine *e, const Snapshot *s, const char *name, const char *help,
                  int held)
{
    family(b, name, "gauge", help);
    for (size_t i = 0; i < s->nqueues; i++) {
        uint64_t nheld, nworking;
        holds_count(e, s->queues[i].name, &nheld, &nworking);
        sample1(b, name, "queue", s->queues[i].name, (double)(held ? nheld : nworking));
    }
}

static void queues(Strbuf *b, Engine *e, const Snapshot *s)
{
    family(b, "pickline_queue_jobs", "gauge",
           "Jobs in the queue, by state on disk (the jobs the engine works are held in memory and "
           "ready on disk; reserved: leases of workers outside the engine).");
    for (size_t i = 0; i < s->nqueues; i++) {
        const QueueStats *q = &s->queues[i];
        const uint64_t v[] = {q->ready, q->delayed, q->reserved, q->buried};
        for (int k = 0; k < 4; k++)
            count2(b, "pickline_queue_jobs", "queue", q->name, "state", job_states[k], v[k]);
    }
    holds(b, e, s, "pickline_queue_working_jobs",
          "Ready jobs of the queue the engine's slots are working or committing.", 0);
    holds(b, e, s, "pickline_queue_held_jobs",
          "Ready jobs of the queue the engine holds in memory: working, or read ahead for its slots.",
          1);
    family(b, "pickline_queue_oldest_ready_seconds", "gauge",
           "Age of the oldest ready job of the queue (0 when none is ready).");
    for (size_t i = 0; i < s->nqueues; i++)
        sample1(b, "pickline_queue_oldest_ready_seconds", "queue", s->queues[i].name,
                (double)s->queues[i].oldest_ready_ms / 1000.0);
    family(b, "pickline_queue_paused", "gauge", "1 while the queue is paused.");
    for (size_t i = 0; i < s->nqueues; i++)
        sample1(b, "pickline_queue_paused", "queue", s->queues[i].name, s->queues[i].paused ? 1 : 0);
    static const struct {
        const char *name, *help;
        size_t off;
    } totals[] = {
        {"pickline_queue_puts_total", "Jobs put on the queue.", offsetof(QueueStats, puts)},
        {"pickline_queue_reserves_total", "Reserves of the queue's jobs.", offsetof(QueueStats, reserves)},
        {"pickline_queue_acks_total", "Jobs of the queue acknowledged (done).", offsetof(QueueStats, acks)},
        {"pickline_queue_releases_total", "Jobs of the queue released for a later attempt.",
         offsetof(QueueStats, releases)},
        {"pickline_queue_buries_total", "Jobs of the queue buried.", offsetof(QueueStats, buries)},
        {"pickline_queue_expiries_total", "Leases of the queue's jobs that expired.",
         offsetof(QueueStats, expiries)},
    };
    for (size_t t = 0; t < sizeof totals / sizeof *totals; t++) {
        family(b, totals[t].name, "counter", totals[t].help);
        for (size_t i = 0; i < s->nqueues; i++) {
            uint64_t v;
            memcpy(&v, (const char *)&s->queues[i] + totals[t].off, sizeof v);
            sample1(b, totals[t].name, "queue", s->queues[i].name, (double)v);
        }
    }
}

/* by_batch_state writes the gauge family name of each model's batches
 * (rows 0) or the rows in them (rows 1), by batch state. */
static void by_batch_state(Strbuf *b, const Snapshot *s, const char *name, const char *help,
                           int rows)
{
    family(b, name, "gauge", help);
    for (size_t i = 0; i < s->nmodels; i++) {
        const ObsModel *m = &s->models[i];
        for (int k = 0; k < OBSERVE_NBATCH; k++)
            count2(b, name, "model", m->name, "state", batch_state_name(k),
                   rows ? m->rows[k] : m->batches[k]);
    }
}

static void batches(Strbuf *b, const Snapshot *s)
{
    by_batch_state(b, s, "pickline_batches", "Batches of staged rows, by model and state "
                   "(loaded ones until qctl batches prune forgets them).", 0);
    by_batch_state(b, s, "pickline_batch_rows", "Rows in the batches, by model and state: "
                   "state loaded counts the rows loaded (less those qload rejected).", 1);
    family(b, "pickline_batch_oldest_waiting_seconds", "gauge",
           "How long the oldest sealed batch of the model has waited for qload (0: none waits).");
    for (size_t i = 0; i < s->nmodels; i++) {
        const ObsModel *m = &s->models[i];
        sample1(b, "pickline_batch_oldest_waiting_seconds", "model", m->name,
                m->waiting_ms && s->ms > m->waiting_ms ? (double)(s->ms - m->waiting_ms) / 1000.0 : 0);
    }
    family(b, "pickline_rejects", "gauge", "Rejected rows kept in the store, by model, field and "
           "rule (a reject that broke several rules counts under each).");
    for (size_t i = 0; i < s->nreasons; i++) {
        const ObsReason *r = &s->reasons[i];
        sb_adds(b, "pickline_rejects{model=\"");
        label(b, r->model);
        sb_adds(b, "\",field=\"");
        label(b, r->field);
        sb_adds(b, "\",rule=\"");
        label(b, r->rule);
        sb_addf(b, "\"} %llu\n", (unsigned long long)r->n);
    }
}

static void stages(Strbuf *b, Engine *e)
{
    family(b, "pickline_stage_in_flight", "gauge", "Jobs the stage is working or committing.");
    for (size_t i = 0; i < e->nstages; i++)
        sample1(b, "pickline_stage_in_flight", "stage", e->stages[i].conf->name, e->stages[i].in_flight);
    family(b, "pickline_stage_jobs_total", "counter",
           "Jobs the stage ended since the engine started, by outcome (done, retried, buried).");
    for (size_t i = 0; i < e->nstages; i++) {
        const Stage *st = &e->stages[i];
        const uint64_t v[] = {st->ctr.done, st->ctr.retried, st->ctr.buried};
        const char *out[] = {"done", "retried", "buried"};
        for (int k = 0; k < 3; k++)
            count2(b, "pickline_stage_jobs_total", "stage", st->conf->name, "outcome", out[k], v[k]);
    }
    family(b, "pickline_stage_dependency_failures", "gauge",
           "Attempts at the stage's dependency (a service, a database) that failed in a row.");
    for (size_t i = 0; i < e->nstages; i++)
        sample1(b, "pickline_stage_dependency_failures", "stage", e->stages[i].conf->name,
                (double)e->stages[i].ctr.dep_failures);
    family(b, "pickline_stage_latency_seconds", "histogram",
           "Time from a job's start in the stage to its committed hand-off.");
    for (size_t i = 0; i < e->nstages; i++) {
        const Stage *st = &e->stages[i];
        histogram(b, "pickline_stage_latency_seconds", "stage", st->conf->name, st->ctr.lat_buckets,
                  stage_lat_bounds, STAGE_LAT_BOUNDS, st->ctr.lat_sum);
    }
}

static void engine_metrics(Strbuf *b, Engine *e, const Snapshot *s, size_t unready)
{
    CommitStats cs;
    engine_commit_stats(e, &cs);
    family(b, "pickline_commit_seconds", "histogram",
           "Time of one group commit: applying its operations and the two flushes.");
    histogram(b, "pickline_commit_seconds", NULL, NULL, cs.lat_buckets, commit_lat_bounds,
              COMMIT_LAT_BOUNDS, (double)cs.commit_ns_total / 1e9);
    family(b, "pickline_commit_ops_total", "counter", "Operations committed by the group commits.");
    sample1(b, "pickline_commit_ops_total", NULL, NULL, (double)cs.ops);
    family(b, "pickline_commit_ops_max", "gauge", "The most operations one commit carried.");
    sample1(b, "pickline_commit_ops_max", NULL, NULL, (double)cs.max_ops_per_commit);
    family(b, "pickline_commit_seconds_max", "gauge", "The longest commit since the start.");
    sample1(b, "pickline_commit_seconds_max", NULL, NULL, (double)cs.commit_ns_max / 1e9);
    family(b, "pickline_loop_block_seconds_max", "gauge",
           "The longest time the event loop spent in one iteration since the start.");
    sample1(b, "pickline_loop_block_seconds_max", NULL, NULL, (double)engine_loop_block_max(e) / 1e9);

    const StoreInfo *in = &s->info;
    uint64_t used = in->last_page > in->free_pages ? (uint64_t)(in->last_page - in->free_pages) * in->page_size : 0;
    family(b, "pickline_map_used_bytes", "gauge", "Bytes of the store's map in use (pages in use "
           "less the free ones).");
    sample1(b, "pickline_map_used_bytes", NULL, NULL, (double)used);
    family(b, "pickline_map_size_bytes", "gauge", "The store's map size now (it grows).");
    sample1(b, "pickline_map_size_bytes", NULL, NULL, (double)in->map_size);
    family(b, "pickline_map_limit_bytes", "gauge", "The map's limit, map_max (0: none but the disk).");
    sample1(b, "pickline_map_limit_bytes", NULL, NULL, (double)in->map_max);
    family(b, "pickline_data_file_bytes", "gauge", "Size of data.mdb on disk (with the room reserved ahead).");
    sample1(b, "pickline_data_file_bytes", NULL, NULL, (double)in->file_size);
    if (s->disk_known) {
        family(b, "pickline_disk_free_bytes", "gauge", "Bytes free for the engine on the data directory's disk.");
        sample1(b, "pickline_disk_free_bytes", NULL, NULL, (double)s->disk_free);
    }
    family(b, "pickline_ready", "gauge", "1 when GET /ready says ready, else 0.");
    sample1(b, "pickline_ready", NULL, NULL, unready ? 0 : 1);
    family(b, "pickline_start_time_seconds", "gauge", "When the engine started (Unix time).");
    sample1(b, "pickline_start_time_seconds", NULL, NULL, (double)e->started_ms / 1000.0);
}

static void count_reason(void *arg, const char *reason)
{
    (void)reason;
    (void)arg;
}

void metrics_answer(Engine *e, const Snapshot *s, Exchange *x)
{
    Strbuf b;
    sb_init(&b);
    if (s->rc) {
        char msg[200];
        snprintf(msg, sizeof msg, "cannot read the store: %s", pl_strerror(s->rc));
        exchange_error(x, 500, msg);
        return;
    }
    queues(&b, e, s);
    batches(&b, s);
    stages(&b, e);
    engine_metrics(&b, e, s, observe_reasons(e, s, count_reason, NULL));
    exchange_respond(x, 200, "text/plain; version=0.0.4; charset=utf-8", b.buf, b.len);
    sb_free(&b);
}
