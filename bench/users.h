/* users.h: the seed's users model (DESIGN.md, 13 columns) and a
 * deterministic generator of varied rows for the benchmarks that load or
 * carry them (loadbench, pipebench).
 *
 * Row i (0-based) is a pure function of i: names with quotes, commas and
 * non-ASCII letters, NULLs in the optional columns, timestamps with and
 * without fractions. users_row writes it as the normalised msgpack map the
 * validate stage stages (the 13 declared fields in declaration order,
 * defaults filled in), so the same bytes can be staged, sent as JSON, or
 * written as CSV. */
#ifndef PL_BENCH_USERS_H
#define PL_BENCH_USERS_H

#include "model.h"
#include "row.h"

#include <msgpack.h>
#include <stddef.h>

/* USERS_MODEL_YAML: the users model under a `models:` key, to append to a
 * pipeline file (table users, drift reject). */
extern const char USERS_MODEL_YAML[];

/* users_row appends row i to sb (msgpack map of 13 fields). */
void users_row(size_t i, msgpack_sbuffer *sb);

/* UsersGen: a generator that checks its rows against the model. A sample
 * of rows goes through model_validate; each must be valid, and when the
 * normalised form differs from users_row's bytes (model.c normalises
 * something the generator did not foresee), every row goes through
 * model_validate from then on, so the rows are always what the validate
 * stage would stage. Not thread-safe; one per thread. */
typedef struct UsersGen {
    const Model *m;
    msgpack_sbuffer sb, vb;
    msgpack_zone zone;
    Strbuf errs;
    int validated;        /* every row is validated (see above) */
} UsersGen;

void users_gen_init(UsersGen *g, const Model *m);
void users_gen_free(UsersGen *g);

/* users_gen_row makes row i and sets *p, *n to its msgpack bytes (valid
 * until the next call). Exits with a message if a row breaks the model. */
void users_gen_row(UsersGen *g, size_t i, const char **p, size_t *n);

/* users_gen_json appends row i as a JSON object to out. */
void users_gen_json(UsersGen *g, size_t i, Strbuf *out);

/* users_gen_csv appends row i as a CSV line (model_csv_row) to out. */
void users_gen_csv(UsersGen *g, size_t i, Strbuf *out);

#endif
