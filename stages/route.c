/* route.c: sends each job to one or more queues by conditions on its
 * fields (those of the job's body, or of the staged row it points at).
 * A reference sent to several queues is several jobs naming one staged row
 * instance: the instance holds one more reference per extra queue, in the
 * same commit (staging.h).
 *
 *   routes:
 *     - when: {field: address, exists: true}
 *       to: geocode
 *     - when: {field: country, in: [NL, BE]}
 *       to: [identity, audit]
 *   default: final */
#include "common.h"
#include "engine.h"
#include "pl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { C_EQUALS, C_NOT_EQUALS, C_EXISTS, C_IN };

typedef struct Route {
    const char *field;
    int op;
    int exists;
    const char **values;   /* NULL-terminated (equals/not_equals: one) */
    const char **to;
    size_t nto;
} Route;

/* RouteJob: a slot's fan-out of a reference, for the commit. */
typedef struct RouteJob {
    JobRef ref;
    uint32_t extra;         /* references more than the one taken in */
    Strbuf row, val;        /* the staged row read, a field's text */
} RouteJob;

typedef struct RouteStage {
    Route *r;
    size_t n;
    const char **dflt;
    size_t ndflt;
} RouteStage;

static const ConfKey route_keys[] = {
    {"routes", KEY_ROUTES, 1, 0, 0, "list the routes, like routes: [{when: {field: x, exists: true}, "
                                    "to: q}]", NULL},
    {"default", KEY_QUEUES, 0, 0, 0, NULL, NULL},
    {0},
};

static int route_init(Stage *s, char *err, size_t errlen)
{
    const char *file = engine_pipeline(s->engine)->path;
    const ConfNode *rs = conf_get(s->conf->node, "routes");
    RouteStage *k = xcalloc(1, sizeof *k);
    s->data = k;
    if (!rs || rs->type != CONF_SEQ) {
        snprintf(err, errlen, "%s:%d: stage '%s': routes must be a list", file, s->conf->line, s->conf->name);
        return PL_EINVAL;
    }
    k->r = xcalloc(rs->n ? rs->n : 1, sizeof *k->r);
    k->n = rs->n;
    for (size_t i = 0; i < rs->n; i++) {
        Route *r = &k->r[i];
        const ConfNode *w = conf_get(rs->kids[i], "when");
        int rc;
        if ((rc = conf_str(file, w, "field", &r->field, err, errlen)) != 0 ||
            (rc = conf_strs(file, rs->kids[i], "to", &r->to, &r->nto, err, errlen)) != 0)
            return rc;
        size_t nv;
        if (conf_get(w, "equals")) {
            r->op = C_EQUALS;
            rc = conf_strs(file, w, "equals", &r->values, &nv, err, errlen);
        } else if (conf_get(w, "not_equals")) {
            r->op = C_NOT_EQUALS;
            rc = conf_strs(file, w, "not_equals", &r->values, &nv, err, errlen);
        } else if (conf_get(w, "in")) {
            r->op = C_IN;
            rc = conf_strs(file, w, "in", &r->values, &nv, err, errlen);
        } else {
            r->op = C_EXISTS;
            r->exists = 1;
            rc = conf_bool(file, w, "exists", &r->exists, err, errlen);
        }
        if (rc)
            return rc;
    }
    return stage_conf_strs(s, "default", &k->dflt, &k->ndflt, err, errlen);
}

static void route_fini(Stage *s)
{
    RouteStage *k = s->data;
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++) {
        free(k->r[i].values);
        free(k->r[i].to);
    }
    free(k->r);
    free(k->dflt);
    free(k);
}

static void route_slot_init(Slot *s)
{
    RouteJob *j = s->data;
    sb_init(&j->row);
    sb_init(&j->val);
}

static void route_slot_fini(Slot *s)
{
    RouteJob *j = s->data;
    sb_free(&j->row);
    sb_free(&j->val);
}

/* The value of field in the body, else in the staged row it points at. */
static int field_text(const msgpack_object *body, const msgpack_object *row, const char *f, Strbuf *out)
{
    sb_reset(out);
    if (row_field_text(body, f, out) == 0)
        return 0;
    if (row && row_field_text(row, f, out) == 0)
        return 0;
    return -1;
}

static int matches(const Route *r, const msgpack_object *body, const msgpack_object *row, Strbuf *v)
{
    int have = field_text(body, row, r->field, v) == 0;
    switch (r->op) {
    case C_EXISTS:
        return have == r->exists;
    case C_EQUALS:
        return have && !strcmp(v->buf, r->values[0]);
    case C_NOT_EQUALS:
        return !have || strcmp(v->buf, r->values[0]) != 0;
    default:
        if (have)
            for (const char **p = r->values; *p; p++)
                if (!strcmp(v->buf, *p))
                    return 1;
        return 0;
    }
}

static void add_to(Slot *s, const char **to, size_t n, const char **sent, size_t *nsent)
{
    for (size_t i = 0; i < n; i++) {
        int dup = 0;
        for (size_t j = 0; j < *nsent; j++)
            dup |= !strcmp(sent[j], to[i]);
        if (dup || *nsent >= 64)
            continue;
        sent[(*nsent)++] = to[i];
        slot_put(s, to[i], s->body.buf, s->body.len, NULL);
    }
}

/* hold runs in the commit: the jobs sent on name the same instance. */
static int hold(Txn *t, void *arg)
{
    RouteJob *j = arg;
    return staging_row_hold(t, j->ref.model, j->ref.key, j->ref.row, j->extra);
}

static void route_start(Slot *s)
{
    RouteStage *k = s->stage->data;
    RouteJob *j = s->data;
    const msgpack_object *body;
    char err[256];
    if (slot_body(s, &body, err, sizeof err) != 0) {
        slot_buryf(s, "job body: %s", err);
        return;
    }
    RowView row;
    int have_row = 0;
    int is_ref = stage_job_ref(s, &j->ref, err, sizeof err) == 0;
    if (is_ref && stage_row(s->stage, j->ref.model, j->ref.key, j->ref.row, &j->row) == 0 &&
        row_view(&row, j->row.buf, j->row.len) == 0)
        have_row = 1;
    const char *sent[64];
    size_t nsent = 0;
    for (size_t i = 0; i < k->n; i++)
        if (matches(&k->r[i], body, have_row ? &row.root : NULL, &j->val))
            add_to(s, k->r[i].to, k->r[i].nto, sent, &nsent);
    if (!nsent)
        add_to(s, k->dflt, k->ndflt, sent, &nsent);
    if (have_row)
        row_view_free(&row);
    if (!nsent) {
        slot_bury(s, "no route matched and the stage has no default");
        return;
    }
    if (is_ref && j->ref.row && nsent > 1) {
        j->extra = (uint32_t)(nsent - 1);
        slot_extra(s, hold, j);
    }
    slot_done(s);
}

const StageKind kind_route = {
    .spec = {.name = "route", .article = "a", .flags = KIND_ROUTE, .keys = route_keys},
    .slot_size = sizeof(RouteJob),
    .init = route_init, .slot_init = route_slot_init, .start = route_start, .fini = route_fini,
    .slot_fini = route_slot_fini};
