/* prog_stagefill: fill a data directory's staging with rows, for tests of
 * qload and qctl (what the validate and batch stages do in the engine,
 * without the engine).
 *
 *   prog_stagefill DIR PIPELINE.yml MODEL [--batch-rows N] [--no-seal] [--reject]
 *                  < rows.ndjson
 *
 * Each line of stdin is a JSON object, validated with MODEL (model_validate).
 * Valid rows are appended (normalised) to MODEL's open batch, which is
 * sealed every N rows (default: never) and at the end (unless --no-seal).
 * The pipeline text is stored so that qload and qctl find the models (and
 * the rows are staged under the model's version, as the engine does).
 * Sealed batch ids are printed one per line. An invalid line is printed on
 * stderr with its errors and the exit status is 1; with --reject it is
 * stored as a reject (stage "prog_stagefill", no queue) instead. */
#include "model.h"
#include "pipeline.h"
#include "pl.h"
#include "row.h"
#include "staging.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct Fill {
    const Model *m;
    Strbuf *lines;          /* lines of this transaction */
    size_t n;
    uint64_t batch_rows;
    int reject, bad;
    FILE *sealed;           /* sealed ids are written here */
} Fill;

static int fill_txn(Txn *t, void *arg)
{
    Fill *f = arg;
    SealPolicy pol = {f->batch_rows, 0, UINT64_MAX, 1.0};
    int rc = 0;
    f->bad = 0;
    rewind(f->sealed);
    for (size_t i = 0; i < f->n && !rc; i++) {
        msgpack_sbuffer in, out;
        msgpack_sbuffer_init(&in);
        msgpack_sbuffer_init(&out);
        char err[256];
        Strbuf errs;
        sb_init(&errs);
        size_t nerr = 0;
        RowView v = {0};
        if (row_from_json_object(f->lines[i].buf, f->lines[i].len, &in, err, sizeof err) != 0) {
            fprintf(stderr, "line %zu: %s\n", i + 1, err);
            f->bad++;
        } else if (row_view(&v, in.data, in.size) != 0 ||
                   model_validate(f->m, &v.root, &out, &errs, &nerr) != 0) {
            if (f->reject) {
                Strbuf key, ea;
                sb_init(&key);
                sb_init(&ea);
                if (model_row_key(f->m, &v.root, &key) != 0)
                    sb_addf(&key, "line %zu", i + 1);
                sb_adds(&ea, "[");
                sb_add(&ea, errs.buf, errs.len);
                sb_adds(&ea, "]");
                RejectRec r = {0};
                r.model = f->m->name;
                r.key = key.buf;
                r.stage = "prog_stagefill";
                r.queue = "";
                r.row = in.data;
                r.row_len = in.size;
                r.errors = ea.buf;
                r.errors_len = ea.len;
                rc = reject_add(t, &r, NULL);
                if (!rc)
                    rc = staging_note_reject(t, f->m->name);
                sb_free(&key);
                sb_free(&ea);
            } else {
                fprintf(stderr, "line %zu: [%s]\n", i + 1, errs.buf ? errs.buf : "");
                f->bad++;
            }
        } else {
            BatchRec b;
            rc = staging_append(t, f->m->name, f->m->version, out.data, out.size, &pol, &b);
            if (!rc && b.state != BATCH_OPEN)
                fprintf(f->sealed, "%llu\n", (unsigned long long)b.id);
        }
        row_view_free(&v);
        sb_free(&errs);
        msgpack_sbuffer_destroy(&in);
        msgpack_sbuffer_destroy(&out);
    }
    return rc;
}

typedef struct Final {
    const char *model, *path, *text;
    size_t len;
    const Models *ms;
    int seal;
    uint64_t sealed;
} Final;

static int final_txn(Txn *t, void *arg)
{
    Final *f = arg;
    char uuid[33];
    int rc = staging_pipeline_put(t, f->path, f->text, f->len, f->ms);
    if (!rc)
        rc = staging_uuid(t, uuid);
    if (!rc && f->seal)
        rc = staging_seal_due(t, f->model, NULL, 1, &f->sealed);
    return rc;
}

static void flush_sealed(FILE *tmp)
{
    char buf[64];
    fflush(tmp);
    long end = ftell(tmp);
    rewind(tmp);
    while (ftell(tmp) < end && fgets(buf, sizeof buf, tmp))
        fputs(buf, stdout);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: prog_stagefill DIR PIPELINE.yml MODEL [--batch-rows N] "
                "[--no-seal] [--reject] < rows.ndjson\n");
        return 2;
    }
    const char *dir = argv[1], *pfile = argv[2], *model = argv[3];
    Fill f = {0};
    int seal = 1;
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--batch-rows") == 0 && i + 1 < argc)
            f.batch_rows = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--no-seal") == 0)
            seal = 0;
        else if (strcmp(argv[i], "--reject") == 0)
            f.reject = 1;
        else {
            fprintf(stderr, "prog_stagefill: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    char err[1024];
    Pipeline *p;
    if (pipeline_load(pfile, NULL, &p, err, sizeof err) != 0) {
        fprintf(stderr, "prog_stagefill: %s\n", err);
        return 1;
    }
    if (!p->models || !(f.m = models_find(p->models, model))) {
        fprintf(stderr, "prog_stagefill: model '%s' is not declared in %s\n", model, pfile);
        return 1;
    }
    StoreOpts so = {0};
    so.create = 1;
    Store *s;
    int rc = store_open(dir, &so, &s);
    if (rc) {
        fprintf(stderr, "prog_stagefill: %s: %s\n", dir, pl_strerror(rc));
        return 1;
    }
    f.sealed = tmpfile();
    size_t cap = 20000, bad = 0;
    f.lines = xcalloc(cap, sizeof *f.lines);
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    int more = 1;
    while (more) {
        f.n = 0;
        while (f.n < cap && (got = getline(&line, &lcap, stdin)) >= 0) {
            while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
                got--;
            if (got == 0)
                continue;
            sb_init(&f.lines[f.n]);
            sb_add(&f.lines[f.n], line, (size_t)got);
            f.n++;
        }
        more = f.n == cap;
        if (f.n) {
            rc = store_run(s, fill_txn, &f);
            if (rc) {
                fprintf(stderr, "prog_stagefill: staging failed: %s\n", pl_strerror(rc));
                return 1;
            }
            bad += (size_t)f.bad;
            flush_sealed(f.sealed);
            for (size_t i = 0; i < f.n; i++)
                sb_free(&f.lines[i]);
        }
    }
    free(line);
    Final fin = {model, p->path, p->text, p->text_len, p->models, seal, 0};
    if ((rc = store_run(s, final_txn, &fin)) != 0) {
        fprintf(stderr, "prog_stagefill: %s\n", pl_strerror(rc));
        return 1;
    }
    if (fin.sealed)
        printf("%llu\n", (unsigned long long)fin.sealed);
    fclose(f.sealed);
    free(f.lines);
    store_close(s);
    pipeline_free(p);
    return bad ? 1 : 0;
}
