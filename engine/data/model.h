/* model.h: models, the metadata layer of a pipeline (the `models:` section).
 *
 * One declaration drives validation (the validate stage), the shape of the
 * staged rows that batches hold, the CSV that qload streams with COPY, the
 * DDL that `qload --create-tables` runs, merge keys, load order (parents
 * before children) and the JSON export `qctl schema --json`.
 *
 *   models:
 *     users:
 *       table: users               # default: the model's name
 *       drift: reject              # undeclared fields: reject | ignore | keep
 *       drift_column: extra        # keep: they go into this json column
 *       on_delete: soft            # a deleted row (_deleted): soft | hard
 *       properties:
 *         id:         {type: serial, key: true}
 *         tenant:     {type: integer, required: true, min: 0, key: true}
 *         first_name: {type: string, length: 50, required: true}
 *         email:
 *           type: string
 *           length: [5, 99]
 *           unique: true
 *           format: email
 *           messages: {length: "...", format: "...", unique: "..."}
 *         permission: {type: integer, default: 1}
 *         created_at: {type: datetime, required: true}
 *         deleted_at: {type: datetime, paranoid: true, default: "2999-12-31T00:00:00Z"}
 *       belongs_to:
 *         tenant_ref: {model: tenants, fields: [tenant]}
 *         manager:    {model: users, fields: [tenant, manager_id]}
 *       has_n:
 *         authorities:   {model: authorities}
 *         subscriptions: {model: subscriptions, through: authorities}
 *
 * A property is a column, so its name is an identifier; a source field
 * whose name is not one (public data: "US Gross", "Rotten Tomatoes
 * Rating") is named with from:, and so is a field inside nested objects,
 * by a dotted path:
 *
 *         us_gross:    {type: bigint, from: "US Gross"}
 *         city:        {type: string, from: "address.city"}
 *
 * A row's value for such a property is its source field (a dotted path:
 * the top-level field of that whole name when the row has one, else the
 * path through nested objects); a row without the source field is read by
 * the property's name (the normalised form, which validate writes with the
 * column names). The source fields are declared, not drift.
 *
 * Types: serial, integer, bigint, decimal (precision, scale), boolean,
 * string (length, default 50), text, datetime, date, json. Rules per
 * property: required, key, unique, length (N, or [min, max], in characters),
 * min/max (numbers), format (email, url, or regex: "^...$" as a POSIX
 * extended regex), default, messages (one per rule name: required, type,
 * length, min, max, format, drift). A belongs_to's fields are the child's
 * columns, in the order of the parent's key.
 *
 * Deletes. A row marked "_deleted": true (see model_validate), a tombstone,
 * tells qload's merge that the row is gone: on_delete: soft sets the
 * model's paranoid column (the default when the model has one), hard
 * deletes the row from the table (the default when it has none; soft
 * needs a paranoid property).
 *
 * Versions. A model's version is a hash of what shapes its rows and its
 * table: the table, the drift column, and per property its name, type,
 * length, precision and scale, required, key, unique, paranoid and
 * default, in order (not its validation rules, messages or relations).
 * Staged rows and batches record the version they were validated with,
 * so qload loads a batch with that version's columns even after the
 * pipeline changed (see staging.h). */
#ifndef PL_MODEL_H
#define PL_MODEL_H

#include "conf.h"
#include "row.h"

#include <msgpack.h>
#include <regex.h>
#include <stddef.h>
#include <stdint.h>

typedef enum FieldType {
    FT_SERIAL, FT_INTEGER, FT_BIGINT, FT_DECIMAL, FT_BOOLEAN, FT_STRING, FT_TEXT,
    FT_DATETIME, FT_DATE, FT_JSON
} FieldType;

typedef enum FieldFormat { FF_NONE, FF_EMAIL, FF_URL, FF_REGEX } FieldFormat;

typedef enum DriftPolicy { DRIFT_REJECT, DRIFT_IGNORE, DRIFT_KEEP } DriftPolicy;

typedef enum OnDelete { ON_DELETE_SOFT, ON_DELETE_HARD } OnDelete;

/* The rules, for messages and for the "rule" of a validation error. */
typedef enum Rule {
    RULE_REQUIRED, RULE_TYPE, RULE_LENGTH, RULE_MIN, RULE_MAX, RULE_FORMAT, RULE_DRIFT,
    RULE_UNIQUE, RULE_COUNT
} Rule;

/* model_type_name, model_rule_name, model_drift_name and model_format_name
 * return the name of a type, rule, drift policy or format as the pipeline
 * file writes it ("integer", "length", "keep", "email"), "unknown" for a
 * value out of range. */
const char *model_type_name(FieldType t);
const char *model_rule_name(Rule r);
const char *model_drift_name(DriftPolicy d);
const char *model_format_name(FieldFormat f);

typedef struct Field {
    const char *name;
    const char *from;               /* the source field (from:), or NULL: the name */
    char **path;                    /* from split at its dots (npath 1: no dot) */
    size_t npath;
    FieldType type;
    int line;
    int required, key, unique, paranoid;
    unsigned precision, scale;      /* decimal; 0: unconstrained numeric */
    int has_length;
    uint64_t len_min, len_max;      /* characters (code points) */
    int has_min, has_max;
    double min, max;
    FieldFormat format;
    const char *regex_src;          /* FF_REGEX: as written */
    regex_t regex;                  /* FF_REGEX: compiled (REG_EXTENDED|REG_NOSUB) */
    int has_default;
    const char *default_text;       /* the default as written in the file */
    msgpack_sbuffer default_mp;     /* the default as a msgpack value (validated) */
    const char *messages[RULE_COUNT]; /* NULL: the built-in message */
} Field;

typedef struct Relation {
    const char *name;
    const char *model;              /* the other model */
    int line;
    int has_n;                      /* 0: belongs_to, 1: has n */
    const char *through;            /* has n ... through: a model name, or NULL */
    const char **fields;            /* belongs_to: the child's columns; n = parent's nkey */
    size_t nfields;
} Relation;

typedef struct Model {
    const char *name, *table;
    int line;
    DriftPolicy drift;
    const char *drift_column;       /* DRIFT_KEEP: the json column (default "extra") */
    Field *fields;                  /* declaration order = column order */
    size_t nfields;
    size_t *key;                    /* indexes into fields of the key, in order */
    size_t nkey;
    int paranoid;                   /* index of the paranoid field, or -1 */
    size_t nfrom;                   /* fields with a from: */
    OnDelete on_delete;             /* what a tombstone does in the warehouse */
    uint64_t version;               /* the hash of its shape (never 0), see above */
    Relation *rels;
    size_t nrels;
} Model;

typedef struct Models {
    Model *m;
    size_t n;
    size_t *order;                  /* load order: parents before children (self refs ignored) */
} Models;

/* models_parse checks the `models:` map node of the pipeline file and
 * builds the models. Unknown keys, bad types, a belongs_to to an undeclared
 * model, a fields list that does not match the parent's key, a bad regex,
 * a default that breaks its own rules, or a cycle of belongs_to between
 * different models are errors "FILE:LINE: what; hint". Views point into
 * node, which must outlive the result. Returns 0 and *out, or PL_EINVAL. */
int models_parse(const char *file, const ConfNode *node, Models **out, char *err, size_t errlen);
void models_free(Models *ms);
const Model *models_find(const Models *ms, const char *name);

/* ---------------------------------------------------------------- validate */

/* model_validate checks row (a msgpack map) against every rule of m and
 * writes the normalised row to out: the declared fields in declaration
 * order (absent optional fields as nil, defaults filled in), then, under
 * DRIFT_KEEP, the undeclared fields as a map in drift_column. Types are
 * checked, never coerced: an integer field takes a JSON integer (a string
 * "12" or "12abc" is a type error); decimal takes a JSON number or a string
 * holding exactly one; datetime takes an ISO 8601 string
 * (YYYY-MM-DD[T ]HH:MM[:SS[.frac]][Z|+HH[:MM]|-HH[:MM]]; without a zone it
 * is UTC), date YYYY-MM-DD, both checked against the calendar; a datetime
 * keeps at most 6 fractional digits (more only as zeros) and its instant in
 * UTC lies in the years 1 to 9999. A json value holds no object with a key
 * twice.
 *
 * A row with "_deleted": true is a soft delete: only the key fields are
 * checked and out holds the key fields, the paranoid field (its value in
 * the row, else the time now) and "_deleted": true.
 *
 * Each failed rule appends {"field":F,"rule":R,"message":M} to errors (a
 * JSON array's members, comma-separated, without the brackets) and counts
 * in *nerrors. Returns 0 when the row is valid (out is filled), PL_EINVAL
 * when not (out is undefined), PL_EFORMAT when row is not a map. */
int model_validate(const Model *m, const msgpack_object *row, msgpack_sbuffer *out,
                   Strbuf *errors, size_t *nerrors);

/* model_check_field checks value v for field name of m as model_validate
 * checks it in a row (data from outside merged into a row: an async
 * callback): the field's type and rules (nil fails a required or key
 * field); for a name m does not declare, m's drift policy (reject fails,
 * ignore and keep take the value). The value's normalised form is packed
 * into pk (nothing when it fails). Each failed rule appends
 * {"field","rule","message"} to errors (JSON array members, as
 * model_validate) and counts in *nerrors (may be NULL). Returns 0 when v is
 * valid, else PL_EINVAL. */
int model_check_field(const Model *m, const char *name, const msgpack_object *v,
                      msgpack_packer *pk, Strbuf *errors, size_t *nerrors);

/* model_row_key writes the row's key as text ("7" or "3/7": key fields
 * joined by '/') for staging and rejects, reading each key field as
 * model_validate does (its source field, else its name). PL_EINVAL if a
 * key field is missing or not a scalar. */
int model_row_key(const Model *m, const msgpack_object *row, Strbuf *out);

/* ---------------------------------------------------------------- load */

/* model_columns appends the quoted column list for COPY and INSERT:
 * "id","tenant",... (plus the drift column under DRIFT_KEEP). */
void model_columns(const Model *m, Strbuf *out);

/* model_csv_row appends one CSV line (ending in "\n") of a normalised row
 * in column order, for COPY ... (FORMAT csv): nil as an empty unquoted
 * field (NULL), every string quoted (so "" is the empty string) with
 * quotes doubled, numbers as written, booleans t/f, json as its JSON text.
 * With op set, a last column holds "d" for a soft delete, else "u".
 * Returns 0, or PL_EFORMAT when row is not a map or a json column holds
 * what JSON cannot write (row_put_object); out is then left as it was. */
int model_csv_row(const Model *m, const msgpack_object *row, int op, Strbuf *out);

/* model_ddl appends CREATE TABLE IF NOT EXISTS for m: column types
 * (serial bigint, integer, bigint, numeric(p,s), boolean, varchar(n), text,
 * timestamptz, date, jsonb), NOT NULL for required and key fields,
 * DEFAULT, PRIMARY KEY (the key), UNIQUE, and a FOREIGN KEY per belongs_to
 * referencing the parent's key. models_ddl writes every model in load
 * order. */
void model_ddl(const Models *ms, const Model *m, Strbuf *out);
void models_ddl(const Models *ms, Strbuf *out);

/* model_column_ddl appends f's column as model_ddl declares it: "name" type
 * [NOT NULL] [DEFAULT value] (for ALTER TABLE ... ADD COLUMN). */
void model_column_ddl(const Field *f, Strbuf *out);

/* model_pg_type appends f's column type as PostgreSQL's format_type() spells
 * it ("character varying(50)", "timestamp with time zone", "numeric(12,4)",
 * "bigint"), to compare with a table's columns; NULL: the drift column's
 * "jsonb". */
void model_pg_type(const Field *f, Strbuf *out);

/* models_json appends the metadata as one JSON object for downstream
 * tools: {"models":[{"name","table","drift","drift_column","key":[..],
 * "paranoid","on_delete","version" (16 hex digits),"fields":[{"name",
 * "type","required","key","unique","length":[min,max],"min","max",
 * "format","regex","default","paranoid","messages":{..},"from" (the source
 * field, or null)}],"belongs_to":[..],
 * "has_n":[..]}],"load_order":[..]}. */
void models_json(const Models *ms, Strbuf *out);

/* model_sql_ident appends s as a quoted SQL identifier ("a""b"). */
void model_sql_ident(Strbuf *out, const char *s);

#endif
