/* pipestore.c: pipeline_from_store (staging.h), apart from staging.c so
 * that programs using only batches and rejects need not link the pipeline
 * reader. */
#include "staging.h"

#include "pipeline.h"
#include "pl.h"
#include "row.h"

#include <stdio.h>
#include <string.h>

typedef struct PipeRead {
    Strbuf path, text;
} PipeRead;

static int pipe_read(Txn *t, void *arg)
{
    PipeRead *pr = arg;
    MDB_val k = {8, "pipeline"}, v;
    int rc = mdb_get(t->mdb, txn_dbi(t, DB_META), &k, &v);
    if (rc == MDB_NOTFOUND)
        return PL_ENOPIPELINE;
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
