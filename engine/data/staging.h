/* staging.h: batches of staged rows, and rejects, in the store.
 *
 * Layout (keys big-endian, see store.h for the sub-databases):
 *   DB_META  "b/" id u64        -> batch record (msgpack, below)
 *   DB_META  "bo/" model        -> id u64 of the model's open batch
 *   DB_META  "next_bid", "next_rid" -> u64 counters; "uuid" -> 32 hex chars
 *   DB_STAGE 0x01 id u64 seq u32 -> a normalised row (msgpack map) of a batch
 *   DB_STAGE 0x02 id u64         -> reject record (msgpack)
 *   DB_STAGE model 0 key 0 row u64 -> a staged row instance (see "staged rows")
 *   DB_STAGE model 0 key         -> a legacy staged row (ditto)
 *   DB_META  "next_row"          -> u64 counter of staged row instances
 *   DB_META  "mv/" model 0 version u64 -> [1, path, text]: the pipeline that
 *                                declared that version of the model
 * Staging refuses a model name that starts with byte 0x01 or 0x02, so the
 * batch rows and rejects never meet the staged rows of the stages.
 *
 * A batch is open while rows are appended, then sealed (at N rows or after
 * T seconds), or held (its rejects passed the validate stage's threshold:
 * an operator looks, then releases or fails it), then loading (qload has
 * begun a load), loaded (the warehouse's ledger holds it; its rows are
 * dropped), or failed (qload gave up: the error says why; `qctl batches
 * retry` seals it again). Every function here works inside the caller's
 * transaction (store_run, or a CommitOp) and follows CommitOp.apply's rules.
 *
 * Model versions. A row validated against a model records the model's
 * version (model.h) with it: a staged row instance, and the batch it is
 * appended to, whose rows are all of one version. The engine keeps, for
 * every version of every model it ran, the pipeline file that declared it
 * ("mv/"), so qload loads a batch with the columns of exactly the version
 * its rows were validated with, even after the model changed: a merge then
 * never touches a column the rows did not have. Version 0 means not
 * recorded (rows staged before versions, or never validated): qload uses
 * the current model for those. */
#ifndef PL_STAGING_H
#define PL_STAGING_H

#include "row.h"
#include "store.h"

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

enum { BATCH_OPEN, BATCH_SEALED, BATCH_HELD, BATCH_LOADING, BATCH_LOADED, BATCH_FAILED };

/* batch_state_name: "open", "sealed", ...; batch_state_parse: -1 if none. */
const char *batch_state_name(int state);
int batch_state_parse(const char *s);

typedef struct BatchRec {
    uint64_t id;
    char model[128];
    int state;
    uint64_t rows;          /* rows appended: seqs 0..rows-1 */
    uint64_t removed;       /* of those, moved to the rejects by qload */
    uint64_t rejects;       /* rows of the model the validate stage rejected while open */
    uint64_t created_ms, sealed_ms, loaded_ms;
    uint32_t attempts;      /* load attempts */
    char error[512];        /* held: why; failed: the last load error */
    uint64_t version;       /* the model version of its rows (0: not recorded) */
} BatchRec;

typedef struct SealPolicy {
    uint64_t rows;          /* seal at this many rows; 0: no limit */
    double after_s;         /* seal this long after the batch opened; 0: never */
    uint64_t max_rejects;   /* hold when rejects exceed this; UINT64_MAX: none */
    double max_reject_rate; /* hold when rejects / (rows + rejects) exceeds this; >= 1: none */
} SealPolicy;

/* staging_uuid returns the store's identity (created on first use in a
 * write transaction): 32 hex chars and a NUL. The ledger in the warehouse
 * keys batches by (uuid, batch id). In a read transaction of a store that
 * has none yet: MDB_NOTFOUND. */
int staging_uuid(Txn *t, char out[33]);

/* staging_append appends row (a msgpack map, validated against version
 * `version` of model; 0: unknown) to the open batch of model, opening one
 * if none, and seals it when policy says so (rows reached, or a hold). An
 * open batch that holds rows of another version is sealed (by policy)
 * first, and the row opens the next one. *out (may be NULL) gets the
 * batch record afterwards. */
int staging_append(Txn *t, const char *model, uint64_t version, const void *row, size_t len,
                   const SealPolicy *policy, BatchRec *out);

/* staging_note_reject counts one rejected row against the open batch of
 * model (opening one if none), for the hold threshold. */
int staging_note_reject(Txn *t, const char *model);

/* staging_seal_due seals (or holds, by policy) the open batch of model
 * (NULL: of every model) if it is non-empty and older than policy->after_s
 * (or force is set). *sealed (may be NULL) gets the id of the last batch
 * sealed, or 0 when nothing was. */
int staging_seal_due(Txn *t, const char *model, const SealPolicy *policy, int force,
                     uint64_t *sealed);

int batch_get(Txn *t, uint64_t id, BatchRec *out);   /* PL_ENOBATCH if none */
int batch_save(Txn *t, const BatchRec *b);

/* batch_each calls fn for every batch in id order (all states when state
 * is -1); a non-zero return from fn stops and is returned. */
int batch_each(Txn *t, int state, int (*fn)(const BatchRec *b, void *arg), void *arg);

/* batch_rows calls fn for the rows of batch id with seq >= from, in seq
 * order, at most max of them (0: all); views are valid in the transaction.
 * A non-zero return from fn stops and is returned. */
int batch_rows(Txn *t, uint64_t id, uint32_t from, uint32_t max,
               int (*fn)(uint32_t seq, const void *mp, size_t len, void *arg), void *arg);

/* batch_row_get reads one row (a view); PL_ENOBATCH if none. */
int batch_row_get(Txn *t, uint64_t id, uint32_t seq, const void **mp, size_t *len);

/* batch_row_reject moves row seq of batch id into the rejects with the
 * warehouse's message (rule "warehouse"), and counts it as removed. key is
 * the reject's key: the row's model key (model_row_key), as the validate
 * stage's rejects have; NULL for a row without one: then "batch N row M".
 * PL_ENOBATCH when there is no such batch or row (moved already). */
int batch_row_reject(Txn *t, uint64_t id, uint32_t seq, const char *key, const char *message,
                     uint64_t *rid);

/* batch_forget deletes the record of loaded batch id and any rows left of
 * it (`qctl batches prune`: the ledger in the warehouse keeps the history).
 * PL_ESTATE for a batch that is not loaded, PL_ENOBATCH if none. */
int batch_forget(Txn *t, uint64_t id);

/* batch_drop_rows deletes the rows of batch id (after it was loaded),
 * at most max per call (0: all); *more is set when some are left. */
int batch_drop_rows(Txn *t, uint64_t id, size_t max, int *more);

/* ---------------------------------------------------------------- staged rows
 *
 * The working rows of the line. A stage that lands a row (http_extract,
 * validate with a raw row, a reject replay) stores a new INSTANCE of the
 * staged row (model, key) and hands on reference jobs that name it:
 * {"model":M,"key":K,"row_id":N}. Instance ids come from a counter and are
 * never reused, so two jobs for the same key never share a row: each one
 * merges into and batches its own. An instance counts the live reference
 * jobs that name it (refs): a stage that sends one reference to several
 * queues (route, validate with several outputs) holds one more per extra
 * copy, and those jobs share the instance (their merges meet in it). A
 * stage that consumes a reference (batch appends the row, validate rejects
 * it) drops one, and the last drop deletes the instance in that same
 * commit. So the staged rows are the rows in flight, and the store stays
 * flat under a stream of new keys.
 *
 *   model 0 key 0 row -> [1, refs, row]: a msgpack array whose header has
 *                        a fixed 12 bytes (0x93 0x01 0xce refs:u32 0xc6
 *                        len:u32), then the row (a msgpack map) as the bin
 *   model 0 key       -> the msgpack map: a LEGACY row, staged by a
 *                        pickline before instances (references without
 *                        row_id; every job of the key shared it). Read and
 *                        merged as before; the line never deletes one (it
 *                        cannot know that no job names it any more).
 *
 * Keys never hold a NUL byte, so the two layouts never collide. Row 0 names
 * the legacy row. Errors: PL_ENOROW when the row is missing, PL_EINVAL for
 * a model or key that cannot be staged (an empty model, one that starts
 * with byte 0x01 or 0x02, a model over STAGING_MODEL_MAX or a key over
 * STAGING_KEY_MAX bytes), PL_ECORRUPT for a record that does not decode. */

#define STAGING_MODEL_MAX 127
#define STAGING_KEY_MAX 255

/* StagedRef: what a reference job names. */
typedef struct StagedRef {
    char model[STAGING_MODEL_MAX + 1];
    char key[STAGING_KEY_MAX + 1];
    uint64_t row;           /* the instance; 0: the legacy row (model, key) */
} StagedRef;

/* staging_ref_json appends the body of a reference job to out:
 * {"model":M,"key":K,"row_id":N} (without row_id when row is 0). */
void staging_ref_json(Strbuf *out, const char *model, const char *key, uint64_t row);

/* staging_ref_parse reads a reference from a decoded job body (a msgpack
 * map): "model" and "key" scalars (as text), and "row_id", a positive
 * integer, when present (else 0: a legacy reference). PL_EINVAL when body
 * is not a reference (a field missing, too long, or of the wrong type). */
int staging_ref_parse(const msgpack_object *body, StagedRef *out);

/* staging_row_new stores mp (a msgpack map) as a new instance of staged
 * row (model, key) held by refs references (at least 1) and sets *row to
 * its id. Refused like a put when there is no room (store_room). */
int staging_row_new(Txn *t, const char *model, const char *key, const void *mp, size_t len,
                    uint32_t refs, uint64_t *row);

/* staging_row_new_valid is staging_row_new for a row validated against
 * version `version` of model (recorded with it, see "Model versions";
 * staging_row_new records 0: not validated). */
int staging_row_new_valid(Txn *t, const char *model, const char *key, uint64_t version,
                          const void *mp, size_t len, uint32_t refs, uint64_t *row);

/* staging_row_get reads instance row of (model, key): *mp and *len view the
 * row (valid until the next write in t or its end), *refs (may be NULL)
 * gets its references (0 for a legacy row). */
int staging_row_get(Txn *t, const char *model, const char *key, uint64_t row, const void **mp,
                    size_t *len, uint32_t *refs);

/* staging_row_put replaces the row of instance row, keeping its refs and
 * its model version. Row 0 writes the legacy row, created if missing (a
 * reject replay of old). */
int staging_row_put(Txn *t, const char *model, const char *key, uint64_t row, const void *mp,
                    size_t len);

/* staging_row_put_valid replaces the row of instance row (not 0) with mp,
 * its normalised form under version `version` of model, which it records;
 * refs are kept. */
int staging_row_put_valid(Txn *t, const char *model, const char *key, uint64_t row,
                          uint64_t version, const void *mp, size_t len);

/* staging_row_version sets *version to the model version instance row
 * was validated with (0: not validated, or the legacy row). */
int staging_row_version(Txn *t, const char *model, const char *key, uint64_t row,
                        uint64_t *version);

/* staging_row_merge sets fields to[i] of the row from fields from[i] of src
 * (a msgpack map), as row_merge does (fields missing in src are skipped),
 * keeping its model version; PL_EINVAL when the row or src is not a map. */
int staging_row_merge(Txn *t, const char *model, const char *key, uint64_t row, const void *src,
                      size_t len, const char *const *from, const char *const *to, size_t n);

/* staging_row_hold adds n references to instance row (n more jobs name
 * it). A no-op for the legacy row (0). */
int staging_row_hold(Txn *t, const char *model, const char *key, uint64_t row, uint32_t n);

/* staging_row_drop gives up one reference of instance row; the last one
 * deletes the instance, and then *deleted (may be NULL) is set. The legacy
 * row (0) is left as it is. */
int staging_row_drop(Txn *t, const char *model, const char *key, uint64_t row, int *deleted);

/* staging_job_gone gives up the reference a job holds when the job goes
 * without being worked (qctl delete, ack, purge): when body (the job's body,
 * JSON, len bytes) names an instance, one reference of it is dropped, and
 * the last one deletes the row (staging_row_drop). A body that names no
 * instance (not a reference, a legacy one, an instance already gone) is
 * left as it is: 0. *dropped (may be NULL) is set when a reference went. */
int staging_job_gone(Txn *t, const void *body, size_t len, int *dropped);

/* staging_row_del deletes instance row (the legacy row for 0) whatever its
 * references. */
int staging_row_del(Txn *t, const char *model, const char *key, uint64_t row);

/* StagedCount: the staged rows of one model. */
typedef struct StagedCount {
    char model[STAGING_MODEL_MAX + 1];
    uint64_t rows;          /* instances */
    uint64_t refs;          /* the references they count */
    uint64_t legacy;        /* legacy rows */
    uint64_t bytes;         /* bytes of their rows (keys and headers not counted) */
} StagedCount;

/* staging_row_count calls fn once per model that has staged rows, in name
 * order. It walks every staged row in one cursor pass (for qctl, never on
 * the engine's hot path). A non-zero return from fn stops and is returned. */
int staging_row_count(Txn *t, int (*fn)(const StagedCount *c, void *arg), void *arg);

/* Rejects. Strings are views (in the transaction, or the caller's). */
typedef struct RejectRec {
    uint64_t id;
    const char *model, *key, *stage, *queue; /* queue: where a replay puts job; "" none */
    uint64_t batch;                          /* qload's rejects: the batch; else 0 */
    uint64_t time_ms;
    const void *row;                         /* msgpack map: the row as it was */
    size_t row_len;
    const char *errors;                      /* JSON array of {field, rule, message} */
    size_t errors_len;
    const char *job;                         /* the job body to replay (JSON), or NULL */
    size_t job_len;
} RejectRec;

/* reject_add stores r (r->id and r->time_ms are assigned) and returns its id. */
int reject_add(Txn *t, const RejectRec *r, uint64_t *id);
/* reject_get decodes reject id into out: the names are NUL-terminated
 * copies in out, row, errors and job are views valid in the transaction.
 * PL_ENOREJECT if none. */
typedef struct RejectRead {
    RejectRec r;
    char model[128], key[256], stage[128], queue[128];
} RejectRead;
int reject_get(Txn *t, uint64_t id, RejectRead *out);
/* reject_each calls fn for every reject (of model, or all when NULL) in id
 * order; a non-zero return stops and is returned. */
int reject_each(Txn *t, const char *model, int (*fn)(const RejectRead *r, void *arg), void *arg);
/* reject_set_row replaces the row of reject id with row (msgpack; an
 * operator's fix before the replay: qctl edit --reject), and its key with
 * key (NULL: kept; a replay stages a reference's row under it), keeping
 * everything else. PL_ENOREJECT if none, PL_EINVAL for a key over 255
 * bytes. */
int reject_set_row(Txn *t, uint64_t id, const void *row, size_t len, const char *key);
/* reject_del deletes reject id; PL_ENOREJECT if none. */
int reject_del(Txn *t, uint64_t id);

/* reject_replay puts the reject back on the line in one transaction, with
 * row (the fixed row, msgpack; NULL: the stored one): when the stored job
 * is a reference, row becomes a new instance of the staged row (model, key)
 * and a reference to it goes on the reject's queue; when it carries its row
 * inline ({"model":M,"row":{...}}), it goes on the queue with row in place
 * of the old one; any other job goes on the queue as it was stored. A
 * reject without a queue (qload's, pg_extract's) is appended to its
 * model's open batch instead, as a row of model version `version` (the one
 * the caller validated row with; 0: the version of the reject's batch, if
 * it has one and it is kept, else unknown). Then the reject is deleted.
 * *job (may be NULL) gets the new job's id, or 0. PL_ENOREJECT if there is
 * no reject id (dropped or replayed since). */
int reject_replay(Txn *t, uint64_t id, const void *row, size_t len, uint64_t version,
                  uint64_t *job);

/* The pipeline file the engine runs, kept in the store (DB_META
 * "pipeline": msgpack [path, text]) so that qctl and qload read the same
 * models without being told where the file is; and for each model of ms
 * (parsed from text; may be NULL) whose version the store has not seen,
 * the same file under "mv/" (see "Model versions"). */
struct Models;
int staging_pipeline_put(Txn *t, const char *path, const char *text, size_t len,
                         const struct Models *ms);

/* staging_model_version_get appends the path and text of the pipeline
 * that declared version `version` of model to path and text.
 * PL_ENOPIPELINE when the store has none. */
int staging_model_version_get(Txn *t, const char *model, uint64_t version, Strbuf *path,
                              Strbuf *text);

struct Pipeline;

/* The line the engine runs, kept in the store beside the pipeline file
 * (DB_META "line": msgpack [1, [[name, kind, input or nil, [outputs]], ...]],
 * written by the engine at each start and reload) so that qctl top draws
 * the stages as the engine sees them, without the stage kinds to read the
 * file's stages: section. LineStage strings are the Line's. */
typedef struct LineStage {
    const char *name, *kind;
    const char *input;          /* NULL: a source */
    const char **outputs;
    size_t noutputs;
} LineStage;
typedef struct Line {
    LineStage *stages;
    size_t n;
    void *mem;                  /* private */
} Line;

/* staging_line_put keeps the stages of p (pipeline.h) in the store. */
int staging_line_put(Txn *t, const struct Pipeline *p);
/* staging_line_get reads them into *out (staging_line_free frees it):
 * PL_ENOPIPELINE when no engine of this format kept one, PL_EFORMAT for a
 * newer format. */
int staging_line_get(Txn *t, Line *out);
void staging_line_free(Line *l);

/* pipeline_from_store parses the pipeline kept in s (file, when not NULL,
 * is read instead) for its models and queues: its stages are skipped
 * (pipeline_load with no kinds). PL_ENOPIPELINE with err "no pipeline file stored in DIR;
 * run `pickline run FILE` once, or pass --pipeline FILE" when none. */
int pipeline_from_store(Store *s, const char *file, struct Pipeline **out, char *err,
                        size_t errlen);

/* pipeline_of_version parses the pipeline that declared version `version`
 * of model (staging_model_version_get) for its models, as
 * pipeline_from_store does. PL_ENOPIPELINE with err naming the model and
 * version when the store has none. */
int pipeline_of_version(Store *s, const char *model, uint64_t version, struct Pipeline **out,
                        char *err, size_t errlen);

#endif
