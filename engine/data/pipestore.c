/* pipestore.c: pipeline_from_store and the line kept in the store
 * (staging.h), apart from staging.c so that programs using only batches and
 * rejects need not link the pipeline reader. */
#include "staging.h"
#include "staging_int.h"

#include "pipeline.h"
#include "pl.h"
#include "row.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct PipeRead {
    Strbuf path, text;
} PipeRead;

static int pipe_read(Txn *t, void *arg)
{
    PipeRead *pr = arg;
    MDB_val v;
    int rc = staging_get(t, DB_META, "pipeline", 8, PL_ENOPIPELINE, &v);
    if (rc)
        return rc;
    RowView rv;
    if ((rc = row_view(&rv, v.mv_data, v.mv_size)) != 0)
        return rc;
    const msgpack_object *o = &rv.root;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
        o->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
        o->via.array.ptr[1].type != MSGPACK_OBJECT_STR) {
        row_view_free(&rv);
        return PL_EFORMAT;
    }
    sb_add(&pr->path, o->via.array.ptr[0].via.str.ptr, o->via.array.ptr[0].via.str.size);
    sb_add(&pr->text, o->via.array.ptr[1].via.str.ptr, o->via.array.ptr[1].via.str.size);
    row_view_free(&rv);
    return 0;
}

int pipeline_from_store(Store *s, const char *file, struct Pipeline **out, char *err,
                        size_t errlen)
{
    *out = NULL;
    if (file)
        return pipeline_load(file, NULL, out, err, errlen);
    PipeRead pr;
    sb_init(&pr.path);
    sb_init(&pr.text);
    int rc = store_read(s, pipe_read, &pr);
    if (rc == PL_ENOPIPELINE) {
        snprintf(err, errlen, "no pipeline file is stored in %s; run `pickline run FILE` once "
                 "with this data directory, or pass --pipeline FILE", store_path(s));
    } else if (rc) {
        snprintf(err, errlen, "%s: cannot read the stored pipeline: %s", store_path(s),
                 pl_strerror(rc));
    } else {
        char name[600];
        snprintf(name, sizeof name, "%s (as stored in %s)", pr.path.len ? pr.path.buf : "pipeline",
                 store_path(s));
        rc = pipeline_parse(name, pr.text.buf ? pr.text.buf : "", pr.text.len, NULL, out, err,
                            errlen);
    }
    sb_free(&pr.path);
    sb_free(&pr.text);
    return rc;
}

typedef struct VersionRead {
    const char *model;
    uint64_t version;
    PipeRead pr;
} VersionRead;

static int version_read(Txn *t, void *arg)
{
    VersionRead *vr = arg;
    return staging_model_version_get(t, vr->model, vr->version, &vr->pr.path, &vr->pr.text);
}

int pipeline_of_version(Store *s, const char *model, uint64_t version, struct Pipeline **out,
                        char *err, size_t errlen)
{
    VersionRead vr = {model, version, {SB_INIT, SB_INIT}};
    *out = NULL;
    int rc = store_read(s, version_read, &vr);
    if (rc == PL_ENOPIPELINE) {
        snprintf(err, errlen, "%s holds no pipeline that declares version %016llx of model %s "
                 "(the rows were staged by a pickline that kept no model versions, or the "
                 "store is damaged)", store_path(s), (unsigned long long)version, model);
    } else if (rc) {
        snprintf(err, errlen, "%s: cannot read version %016llx of model %s: %s", store_path(s),
                 (unsigned long long)version, model, pl_strerror(rc));
    } else {
        char name[600];
        snprintf(name, sizeof name, "%s (version %016llx of model %s, as stored in %s)",
                 vr.pr.path.len ? vr.pr.path.buf : "pipeline", (unsigned long long)version, model,
                 store_path(s));
        rc = pipeline_parse(name, vr.pr.text.buf ? vr.pr.text.buf : "", vr.pr.text.len, NULL, out,
                            err, errlen);
    }
    sb_free(&vr.pr.path);
    sb_free(&vr.pr.text);
    return rc;
}

/* ---------------------------------------------------------------- the line */

#define LINE_FORMAT 1

int staging_line_put(Txn *t, const Pipeline *p)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    staging_rec_begin(&sb, &pk, 2, LINE_FORMAT);
    msgpack_pack_array(&pk, p->nstages);
    for (size_t i = 0; i < p->nstages; i++) {
        const StageConf *c = &p->stages[i];
        msgpack_pack_array(&pk, 4);
        staging_pack_str(&pk, c->name);
        staging_pack_str(&pk, c->kind);
        if (c->input)
            staging_pack_str(&pk, c->input);
        else
            msgpack_pack_nil(&pk);
        msgpack_pack_array(&pk, c->noutputs);
        for (size_t k = 0; k < c->noutputs; k++)
            staging_pack_str(&pk, c->outputs[k]);
    }
    int rc = staging_put_changed(t, "line", &sb);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* line_str copies string o into *at (advanced) and returns it; NULL when o
 * is not a string. */
static const char *line_str(const msgpack_object *o, char **at)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return NULL;
    char *s = *at;
    memcpy(s, o->via.str.ptr, o->via.str.size);
    s[o->via.str.size] = '\0';
    *at += o->via.str.size + 1;
    return s;
}

int staging_line_get(Txn *t, Line *out)
{
    memset(out, 0, sizeof *out);
    MDB_val v;
    int rc = staging_get(t, DB_META, "line", 4, PL_ENOPIPELINE, &v);
    if (rc)
        return rc;
    RowView rv;
    if ((rc = row_view(&rv, v.mv_data, v.mv_size)) != 0)
        return PL_ECORRUPT;
    const msgpack_object *o = &rv.root;
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
        o->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        row_view_free(&rv);
        return PL_ECORRUPT;
    }
    if (o->via.array.ptr[0].via.u64 != LINE_FORMAT) {
        row_view_free(&rv);
        return PL_EFORMAT;
    }
    const msgpack_object *st = &o->via.array.ptr[1];
    if (st->type != MSGPACK_OBJECT_ARRAY) {
        row_view_free(&rv);
        return PL_ECORRUPT;
    }
    /* One block: the stages, the output pointers, then the strings (the
     * record's size bounds them, with a NUL each). */
    size_t n = st->via.array.size, nout = 0;
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *e = &st->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 4 ||
            e->via.array.ptr[3].type != MSGPACK_OBJECT_ARRAY) {
            row_view_free(&rv);
            return PL_ECORRUPT;
        }
        nout += e->via.array.ptr[3].via.array.size;
    }
    size_t strs = v.mv_size + 4 * (n + nout) + 1;
    char *mem = xmalloc(n * sizeof(LineStage) + nout * sizeof(char *) + strs);
    LineStage *ls = (LineStage *)(void *)mem;
    const char **outs = (const char **)(void *)(mem + n * sizeof(LineStage));
    char *at = (char *)(outs + nout);
    rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const msgpack_object *e = st->via.array.ptr[i].via.array.ptr;
        ls[i].name = line_str(&e[0], &at);
        ls[i].kind = line_str(&e[1], &at);
        ls[i].input = e[2].type == MSGPACK_OBJECT_NIL ? NULL : line_str(&e[2], &at);
        ls[i].outputs = outs;
        ls[i].noutputs = e[3].via.array.size;
        for (size_t j = 0; j < ls[i].noutputs && !rc; j++)
            if (!(*outs++ = line_str(&e[3].via.array.ptr[j], &at)))
                rc = PL_ECORRUPT;
        if (!ls[i].name || !ls[i].kind || (e[2].type != MSGPACK_OBJECT_NIL && !ls[i].input))
            rc = PL_ECORRUPT;
    }
    row_view_free(&rv);
    if (rc) {
        free(mem);
        return rc;
    }
    out->stages = ls;
    out->n = n;
    out->mem = mem;
    return 0;
}

void staging_line_free(Line *l)
{
    if (!l)
        return;
    free(l->mem);
    memset(l, 0, sizeof *l);
}
