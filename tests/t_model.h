/* t_model.h: what test_model.c, test_model_check.c and test_model_sql.c
 * share (t_model.c). */
#ifndef T_MODEL_H
#define T_MODEL_H

#include "model.h"
#include "row.h"

#include <msgpack.h>
#include <stddef.h>

/* Fx: a parsed models: section and the tree its names point into. */
typedef struct Fx {
    ConfNode *tree;
    Models *ms;
    char err[600];
    int rc;
} Fx;

/* tm_fx_parse parses the models: section of yaml into fx (fx->rc, fx->err);
 * tm_fx_free frees what it made. */
int tm_fx_parse(Fx *fx, const char *yaml);
void tm_fx_free(Fx *fx);

/* PARSE_OK: yaml parses. PARSE_ERR: it fails at "models.yml:WLINE: " with
 * want in the message (T_SHOW_ERRORS=1 prints each message). */
void tm_parse_ok(const char *file, int line, Fx *fx, const char *yaml);
void tm_parse_err(const char *file, int line, const char *yaml, int wline, const char *want);
#define PARSE_OK(fx, yaml) tm_parse_ok(__FILE__, __LINE__, fx, yaml)
#define PARSE_ERR(yaml, wline, want) tm_parse_err(__FILE__, __LINE__, yaml, wline, want)

/* tm_pack_json packs the JSON text json (which must be valid) into sb. */
void tm_pack_json(msgpack_sbuffer *sb, const char *json);

/* tm_validate runs model_validate on the JSON row; out gets the normalised
 * row as JSON, errs the error array (with brackets). */
int tm_validate(const Model *m, const char *json, Strbuf *out, Strbuf *errs, size_t *nerr);

/* tm_errs_are_json: errs must be a JSON array of nerr {field, rule, message}. */
void tm_errs_are_json(const char *file, int line, const Strbuf *errs, size_t nerr);

/* V_OK: json is valid and normalises to want (NULL: not checked). V_BAD:
 * invalid, with want in the errors' JSON text; V_BADN: with n errors. */
void tm_v_ok(const char *file, int line, const Model *m, const char *json, const char *want);
void tm_v_bad(const char *file, int line, const Model *m, const char *json, size_t wantn,
              const char *want);
#define V_OK(m, json, want) tm_v_ok(__FILE__, __LINE__, m, json, want)
#define V_BAD(m, json, want) tm_v_bad(__FILE__, __LINE__, m, json, 0, want)
#define V_BADN(m, json, n, want) tm_v_bad(__FILE__, __LINE__, m, json, n, want)
/* V_EACH checks the row {"id":1,"FIELD":"V"} for each string V of the array
 * values: valid (as V_OK, any output) with want NULL, else refused with want
 * in its errors (as V_BAD). */
#define V_EACH(m, field, values, want) \
    tm_v_each(__FILE__, __LINE__, m, field, values, sizeof values / sizeof *values, want)
void tm_v_each(const char *file, int line, const Model *m, const char *field,
               const char *const *values, size_t n, const char *want);

/* tm_seed_yaml: the seed's models (users, tenants, authorities,
 * subscriptions), with the line of every fifth line marked. */
extern const char tm_seed_yaml[];

/* tm_field returns m's field name (the test fails without one). */
const Field *tm_field(const Model *m, const char *name);

#endif
