/* common.h: what the stage kinds share (stages/common.c), and the few
 * functions one kind exports to another or to tests (each named by the
 * kind's file: async_submit_*, pg_extract_*). */
#ifndef PL_STAGES_COMMON_H
#define PL_STAGES_COMMON_H

#include "model.h"
#include "stage.h"
#include "staging.h"

/* ---------------------------------------------------------- the kinds' keys */

/* Keys and hints several kinds declare (ConfKey, pipeline.h). */
#define STAGE_KEY_HEADERS {"headers", KEY_HEADERS, 0, 0, 0, NULL, NULL}
#define STAGE_URL_HINT "give the URL to call, like http://127.0.0.1:8080/"
#define STAGE_MERGE_HINT "map response fields to row fields, like merge: {lat: latitude}"
#define STAGE_MODEL_HINT "name the model its rows belong to, like model: users (declared under models:)"
#define STAGE_DSN_HINT "give a libpq conninfo, or env:NAME or file:PATH to read it from $NAME or a file"

/* stage_conf_str, stage_conf_strs, stage_conf_num and stage_conf_uint read
 * key name of stage s, which its kind declares (asserted), with the
 * conf_* getters (pipeline.h): the numbers with the range the kind
 * declares, the one pipeline_load checked them against. *out is left alone
 * when the key is not given. 0 or PL_EINVAL with err set. */
int stage_conf_str(const Stage *s, const char *name, const char **out, char *err, size_t errlen);
int stage_conf_strs(const Stage *s, const char *name, const char ***out, size_t *n, char *err,
                    size_t errlen);
int stage_conf_num(const Stage *s, const char *name, double *out, char *err, size_t errlen);
int stage_conf_uint(const Stage *s, const char *name, unsigned long long *out, char *err,
                    size_t errlen);

/* stage_check_dsn is a ConfKey check (pipeline.h) for a libpq conninfo
 * (keywords or a postgresql:// URI) whose hosts and ports are valid, or
 * env:NAME or file:PATH (read when the stage starts: stage_pg_dsn). A dsn
 * with a ${VAR} in it is refused without libpq's message, which would
 * quote the variable's value. */
int stage_check_dsn(const ConfErr *e, const char *key, const ConfNode *v);

/* stage_pg_dsn resolves a stage's dsn setting into *out (free it with
 * pipeline_secret_free): "env:NAME" reads $NAME, "file:PATH" the file
 * (pipeline_secret), anything else is the libpq conninfo itself. PL_EINVAL
 * with err naming the stage and the line when the variable is not set, the
 * file cannot be read, or what they hold is not a conninfo (the message
 * never shows it). */
int stage_pg_dsn(const Stage *s, const char *dsn, char **out, char *err, size_t errlen);

/* ---------------------------------------------------------------- helpers */

/* JobRef: a job body that points at a staged row (staging.h):
 * {"model":M,"key":K,"row_id":N}, or a legacy one without row_id. */
typedef StagedRef JobRef;

/* stage_job_ref reads a reference from the slot's body (slot_body). Returns 0
 * or PL_EINVAL with err set. */
int stage_job_ref(Slot *s, JobRef *ref, char *err, size_t errlen);

/* stage_ref_body writes the reference {"model":M,"key":K,"row_id":N} (row 0: a
 * legacy one, without row_id) into out. */
void stage_ref_body(Strbuf *out, const char *model, const char *key, uint64_t row);

/* Callback tokens (async_submit.c): 36 bytes from the kernel's CSPRNG,
 * base64url, CALLBACK_TOKEN_LEN characters of [A-Za-z0-9_-].
 * async_submit_token_new writes a new one and its NUL into tok: 0 or an errno.
 * async_submit_token_ok tells whether s[0..n) has a token's shape.
 * async_submit_secret_equal compares n bytes in a time that does not depend on
 * where they differ: 1 when equal. */
#define CALLBACK_TOKEN_LEN 48
int async_submit_token_new(char tok[CALLBACK_TOKEN_LEN + 1]);
int async_submit_token_ok(const char *s, size_t n);
int async_submit_secret_equal(const char *a, const char *b, size_t n);

/* stage_conf_headers reads the optional `headers` map of a stage into a
 * NULL-terminated "Name: value" list (free with stage_headers_free). */
int stage_conf_headers(const Stage *s, char ***out, char *err, size_t errlen);
void stage_headers_free(char **h);

/* stage_put_fields appends to out the fields of row (a msgpack map) named
 * in send (n names), or with send NULL every field of row, as the members
 * of a JSON object ("name":value, comma-separated, no braces); a named
 * field the row lacks is null. */
void stage_put_fields(Strbuf *out, const msgpack_object *row, const char *const *send, size_t n);

/* stage_ref_row reads the staged row ref names into out (msgpack). When it
 * cannot, it buries the slot's job with "staged row M/K: not found" (and
 * missing after it, when given) or the error, and returns that error. */
int stage_ref_row(Slot *s, const JobRef *ref, Strbuf *out, const char *missing);

/* ---------------------------------------------------------- merging data from outside */

/* STAGE_MERGE_MAX: the most fields one merge: sets (stage_check_merge):
 * what one slot_row_merge carries. */
#define STAGE_MERGE_MAX SLOT_MERGE_MAX

/* StageMerge: a stage's merge: map, fields of the service's answer (or of
 * a callback) to fields of the row. The names point into the pipeline. */
typedef struct StageMerge {
    const char **from, **to;
    size_t n;
} StageMerge;

/* STAGE_KEY_MERGE: the merge: key of a kind (required), and its check: a
 * map of at most STAGE_MERGE_MAX names to names. */
#define STAGE_KEY_MERGE {"merge", KEY_MERGE, 1, 0, 0, STAGE_MERGE_HINT, stage_check_merge}
int stage_check_merge(const ConfErr *e, const char *key, const ConfNode *v);

/* stage_conf_merge reads s's merge: into mg (a name without a value maps
 * to itself); stage_merge_free frees it. 0, or PL_EINVAL with err when it
 * is not a non-empty map. */
int stage_conf_merge(const Stage *s, StageMerge *mg, char *err, size_t errlen);
void stage_merge_free(StageMerge *mg);

/* stage_merge_check checks the values of src (a msgpack map: a service's
 * answer, a callback) that mg merges against their fields of model md, as
 * model_validate checks them in a row (model_check_field: type, length,
 * format ...; a field md does not declare by its drift policy), and packs
 * them, normalised, into norm (reset first) as a map {to: value}: the row
 * fields to set, to merge with slot_row_merge or staging_row_merge from
 * mg->to to mg->to. A field several merges set takes the last value src
 * has; a field src lacks is left out. With md NULL (the pipeline declares
 * no model of the row's name) the values are packed as sent. Each failed
 * rule is appended to errors (reset first) as a JSON array member
 * {"field","rule","message"}. Returns the number of failed rules: 0 when
 * every value may go into the row. */
size_t stage_merge_check(const StageMerge *mg, const Model *md, const msgpack_object *src,
                         msgpack_sbuffer *norm, Strbuf *errors);

/* stage_first_error writes the first of errors (JSON array members, as
 * model_validate writes them) into buf as "field 'F' rule R: message",
 * with " (and more)" when there are others. */
void stage_first_error(const char *errors, size_t len, char *buf, size_t n);

/* ---------------------------------------------------------- calling a service */

/* StageAnswer handles a service's 2xx answer to a slot's call (stage_http):
 * json is the JSON object it sent, decoded (mp, len bytes of msgpack),
 * valid during the call; NULL when the call did not ask for one. The
 * handler ends the slot. */
typedef void (*StageAnswer)(Slot *s, const msgpack_object *json, const void *mp, size_t len);

/* StageCall: what a kind keeps to call a service, one per slot (or per
 * source): the URL and body it renders, and the header list it sends,
 * grown as needed (the stage's headers: are never cut) and reused call
 * after call. */
typedef struct StageCall {
    Strbuf url;                 /* read-write: the URL of the next call */
    Strbuf body;                /* read-write: the body a POST sends */
    /* private */
    char *const *headers;       /* the stage's (stage_conf_headers), not owned */
    Strbuf idem, hv;            /* the Idempotency-Key line; the header pointers */
    msgpack_sbuffer mp;         /* the answer, decoded */
    Slot *slot;
    StageAnswer answer;
    int json;
} StageCall;

/* stage_call_init readies c for a stage whose headers: are headers (NULL:
 * none; they must outlive c); stage_call_free releases it. */
void stage_call_init(StageCall *c, char *const *headers);
void stage_call_free(StageCall *c);

/* stage_call_headers returns the header list of one request: the lines of
 * own (NULL-terminated; NULL: none), then the stage's headers, then NULL.
 * The list lives until c's next call; http_request copies what it needs. */
const char *const *stage_call_headers(StageCall *c, const char *const *own);

/* StageRowCall: a slot's call to a service about the staged row its job
 * names (http_enrich, async_submit): the reference, the row as read when
 * the job started (msgpack), and the call. */
typedef struct StageRowCall {
    JobRef ref;
    Strbuf row;
    StageCall call;
} StageRowCall;

/* stage_rowcall_init readies c (headers as for stage_call_init);
 * stage_rowcall_free releases it. */
void stage_rowcall_init(StageRowCall *c, char *const *headers);
void stage_rowcall_free(StageRowCall *c);

/* stage_rowcall_read reads the reference in the job of slot s and the
 * staged row it names into c, and decodes the row into v (a map; free it
 * with row_view_free). Returns 0, or non-zero when it buried the job: the
 * body is not a reference, the row is gone, or it is not a map. */
int stage_rowcall_read(Slot *s, StageRowCall *c, RowView *v);

/* stage_http calls a service for the job of slot s: method (GET, POST) to
 * c->url, a POST with c->body, sending the job's Idempotency-Key
 * ("pickline-STAGE-JOB"), then own's lines and the stage's headers. The
 * outcome ends the slot the same way in every kind: a permanent failure (a
 * 4xx but 408 and 429, a bad URL) buries the job with the reason, a
 * transient one (a 5xx, 408, 429, a timeout, a refused or reset
 * connection) releases it for a retry after its backoff or the answer's
 * Retry-After, whichever is later, and a canceled one (drain) releases it
 * at once. A 2xx goes to answer: stage_http_json first decodes its body,
 * which must be a JSON object (anything else buries the job, "malformed
 * JSON from URL: ..."); stage_http reads no body (json NULL). */
void stage_http(Slot *s, StageCall *c, const char *method, const char *const *own,
                StageAnswer answer);
void stage_http_json(Slot *s, StageCall *c, const char *method, const char *const *own,
                     StageAnswer answer);

/* stage_template renders "http://h/x/{field}/{a.b}" with fields of a JSON object
 * (percent-encoded: all but A-Z a-z 0-9 - _ . ~, and a value "." or ".."
 * as %2E or %2E%2E). Returns 0, or PL_EINVAL with err naming the field that
 * is missing, holds a NUL, or in the path (before ?) is empty or holds a
 * "." or ".." segment (between / or \): no value moves the request to
 * another path or host. */
int stage_template(const char *tmpl, const msgpack_object *fields, Strbuf *out, char *err, size_t errlen);

/* pg_extract_wake asks pg_extract stage s for a watermark extract now (a
 * change notice came, or a pg_notify stage reconnected: catch up). A no-op
 * when s is draining. s must be a pg_extract stage. */
void pg_extract_wake(Stage *s);

#endif
