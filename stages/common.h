/* common.h: what the stage kinds share (stages/common.c). */
#ifndef PL_STAGES_COMMON_H
#define PL_STAGES_COMMON_H

#include "../engine/stage.h"
#include "../engine/staging.h"

/* JobRef: a job body that points at a staged row (engine/staging.h):
 * {"model":M,"key":K,"row_id":N}, or a legacy one without row_id. */
typedef StagedRef JobRef;

/* job_ref reads a reference from the slot's body. Returns 0 or PL_EINVAL
 * with err set. */
int job_ref(const Slot *s, JobRef *ref, char *err, size_t errlen);

/* ref_body writes the reference {"model":M,"key":K,"row_id":N} (row 0: a
 * legacy one, without row_id) into out. */
void ref_body(Strbuf *out, const char *model, const char *key, uint64_t row);

/* Callback tokens (async_submit.c): 36 bytes from the kernel's CSPRNG,
 * base64url, CALLBACK_TOKEN_LEN characters of [A-Za-z0-9_-].
 * callback_token_new writes a new one and its NUL into tok: 0 or an errno.
 * callback_token_ok tells whether s[0..n) has a token's shape.
 * callback_secret_equal compares n bytes in a time that does not depend on
 * where they differ: 1 when equal. */
#define CALLBACK_TOKEN_LEN 48
int callback_token_new(char tok[CALLBACK_TOKEN_LEN + 1]);
int callback_token_ok(const char *s, size_t n);
int callback_secret_equal(const char *a, const char *b, size_t n);

/* conf_headers reads the optional `headers` map of a stage into a
 * NULL-terminated "Name: value" list (free with headers_free). */
int conf_headers(const Stage *s, char ***out, char *err, size_t errlen);
void headers_free(char **h);

/* http_outcome handles a failed HttpResult the same way in every kind:
 * permanent -> bury, transient -> retry (honouring Retry-After), canceled
 * -> retry now (drain). Returns 1 if it ended the slot, 0 on HTTP_OK. */
int http_outcome(Slot *s, const HttpResult *r, const char *what);

/* idem_key writes the Idempotency-Key header line for the slot's job. */
void idem_header(const Slot *s, char *buf, size_t n);

/* The kinds. */
extern const StageKind kind_noop, kind_route, kind_http_extract, kind_http_enrich, kind_http_poll,
    kind_async_submit, kind_validate, kind_batch;
extern const StageKind kind_pg_extract, kind_pg_notify;

/* pg_extract_wake asks pg_extract stage s for a watermark extract now (a
 * change notice came, or a pg_notify stage reconnected: catch up). A no-op
 * when s is draining. s must be a pg_extract stage. */
void pg_extract_wake(Stage *s);

/* pg_dsn resolves a stage's dsn setting into *out (free it): "env:NAME"
 * reads $NAME, anything else is the libpq conninfo itself. PL_EINVAL with
 * err naming the stage when the variable is not set. */
int pg_dsn(const Stage *s, const char *dsn, char **out, char *err, size_t errlen);

#endif
