/* pgschema.h: the warehouse's tables against the models: what
 * `qctl schema diff --target DSN` shows and `qload --migrate` applies.
 *
 * A model's table is compared column by column with the model (its
 * properties, and the drift column of drift: keep), and each difference is
 * a SchemaChange with an action:
 *   create  the table is missing: CREATE TABLE (the models' DDL)
 *   add     a property the table lacks: ALTER TABLE ... ADD COLUMN with its
 *           type, NOT NULL and DEFAULT (existing rows get the default)
 *   widen   a string the model made longer (varchar(n) to a larger n, or
 *           to text): ALTER COLUMN ... TYPE, which PostgreSQL does without
 *           rewriting the table
 *   refuse  what qload never does, with the reason: change a column's type,
 *           narrow a column (values already there might not fit), drop a
 *           column the model no longer has, add a key column (it would
 *           change the primary key) or a required column without a default
 *           (the rows already there would have no value)
 * Columns in the same place, of the same type, make no change; neither do
 * NOT NULL and DEFAULT differences of an existing column. Only create, add
 * and widen carry SQL. The comparison reads pg_catalog only. */
#ifndef QLOAD_PGSCHEMA_H
#define QLOAD_PGSCHEMA_H

#include "model.h"
#include "strbuf.h"

#include <libpq-fe.h>
#include <stddef.h>
#include <stdio.h>

typedef enum SchemaAct { SCH_CREATE, SCH_ADD, SCH_WIDEN, SCH_REFUSE } SchemaAct;

typedef struct SchemaChange {
    const Model *m;
    SchemaAct act;
    char column[72];        /* the column; "" for the table (create) */
    char model_type[96];    /* as format_type() spells it; "" none */
    char table_type[96];
    Strbuf sql;             /* create, add, widen: the statement (with its ";") */
    char reason[600];       /* what it is, and for refuse why not and what to do */
} SchemaChange;

typedef struct SchemaDiff {
    SchemaChange *c;
    size_t n, cap;
    const Models *ms;
    const char *only;       /* the model compared alone, or NULL: all */
} SchemaDiff;

/* schema_act_name: "create", "add", "widen", "refuse". */
const char *schema_act_name(SchemaAct a);

/* schema_type_fits tells whether a column of PostgreSQL type category cat
 * (pg_type.typcategory) and base type name base can hold values of model
 * type t as model_csv_row writes them (strings fit any type with a text
 * input: whether they do is the rows' business). */
int schema_type_fits(FieldType t, char cat, const char *base);

/* schema_diff compares the tables of ms (of model only, when not NULL) in
 * pg's database with the models, in load order, into d (which the caller
 * frees with schema_diff_free). 0, or -1 with err set to PostgreSQL's
 * message when a query failed. */
int schema_diff(PGconn *pg, const Models *ms, const char *only, SchemaDiff *d, char *err,
                size_t errlen);
void schema_diff_free(SchemaDiff *d);

/* schema_diff_json appends d as {"in_sync":B,"models":[{"model","table",
 * "changes":[{"column","action","model_type","table_type","sql","reason"}]}]}
 * (null for what a change does not have). */
void schema_diff_json(const SchemaDiff *d, Strbuf *out);

/* schema_diff_print prints d for people: per model its table and either
 * "in sync" or one line per change. */
void schema_diff_print(const SchemaDiff *d, FILE *f);

#endif
