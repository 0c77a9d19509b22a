/* test_model.c: engine/data/model.c: parsing the models: section (the seed's
 * users model, every error with its line and hint, load order) and the
 * names of rules. Validation is in test_model_check.c, CSV, DDL and the
 * JSON export in test_model_sql.c; what they share in t_model.c. */
#include "t.h"
#include "t_model.h"
#include "pl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void seed_users_model_parses(void)
{
    Fx fx;
    PARSE_OK(&fx, tm_seed_yaml);
    const Models *ms = fx.ms;
    T_EQ(ms->n, 4);
    const Model *u = models_find(ms, "users");
    T_CHECK(u && strcmp(u->table, "users") == 0 && u->line == 9);
    T_CHECK(!models_find(ms, "user"));
    T_EQ(u->nfields, 15);
    T_EQ(u->drift, DRIFT_REJECT);
    T_EQ(u->nkey, 2);
    T_CHECK(strcmp(u->fields[u->key[0]].name, "id") == 0);
    T_CHECK(strcmp(u->fields[u->key[1]].name, "tenant") == 0);
    T_CHECK(strcmp(u->fields[u->paranoid].name, "deleted_at") == 0);

    const Field *f = tm_field(u, "id");
    T_CHECK(f->type == FT_SERIAL && f->key && f->line == 10);
    f = tm_field(u, "tenant");
    T_CHECK(f->type == FT_INTEGER && f->required && f->key && f->has_min && f->min == 0 &&
            !f->has_max);
    f = tm_field(u, "email");
    T_CHECK(f->type == FT_STRING && f->unique && f->format == FF_EMAIL && f->has_length);
    T_EQ(f->len_min, 5);
    T_EQ(f->len_max, 99);
    T_CHECK(strcmp(f->messages[RULE_LENGTH],
                   "Please, use an email address between 5 and 99 characters") == 0);
    T_CHECK(strcmp(f->messages[RULE_UNIQUE], "We already have an account with that email") == 0);
    T_CHECK(f->messages[RULE_REQUIRED] == NULL);
    f = tm_field(u, "phone"); /* short form; DataMapper's default length */
    T_CHECK(f->type == FT_STRING && f->has_length && f->len_max == 50 && !f->required);
    f = tm_field(u, "permission");
    T_CHECK(f->has_default && strcmp(f->default_text, "1") == 0);
    T_CHECK(f->default_mp.size == 1 && f->default_mp.data[0] == 1);
    f = tm_field(u, "deleted_at");
    T_CHECK(f->paranoid && f->type == FT_DATETIME && f->has_default);

    T_EQ(u->nrels, 4);
    T_CHECK(strcmp(u->rels[0].name, "tenant_ref") == 0 && !u->rels[0].has_n);
    T_CHECK(strcmp(u->rels[0].model, "tenants") == 0 && u->rels[0].nfields == 1);
    T_CHECK(strcmp(u->rels[1].model, "users") == 0 && u->rels[1].nfields == 2);
    T_CHECK(strcmp(u->rels[1].fields[0], "manager_id") == 0);
    T_CHECK(u->rels[2].has_n && strcmp(u->rels[2].model, "authorities") == 0 &&
            !u->rels[2].through);
    T_CHECK(u->rels[3].has_n && strcmp(u->rels[3].through, "authorities") == 0);

    /* Parents first, whatever the file order (the self reference is ignored). */
    const char *want[] = {"tenants", "users", "authorities", "subscriptions"};
    for (size_t k = 0; k < 4; k++)
        T_CHECK(strcmp(ms->m[ms->order[k]].name, want[k]) == 0);
    tm_fx_free(&fx);
}

static void load_order_keeps_file_order_among_equals(void)
{
    Fx fx;
    PARSE_OK(&fx, "models:\n"
                  "  c: {properties: {id: {type: integer, key: true}, b: integer},"
                  " belongs_to: {bb: {model: b, fields: b}}}\n"
                  "  x: {properties: {id: integer}}\n"
                  "  b: {properties: {id: {type: integer, key: true}, a: integer},"
                  " belongs_to: {aa: {model: a, fields: [a]}}}\n"
                  "  a: {properties: {id: {type: bigint, key: true}}}\n"
                  "  y: {properties: {id: integer}}\n");
    /* Each step takes the first model in file order whose parents are all
     * placed: x, then a (c and b still wait), then b, then c, then y. */
    const char *want[] = {"x", "a", "b", "c", "y"};
    T_EQ(fx.ms->n, 5);
    for (size_t k = 0; k < 5; k++)
        if (strcmp(fx.ms->m[fx.ms->order[k]].name, want[k]) != 0)
            t_fail(__FILE__, __LINE__, "order[%zu] is %s, want %s", k,
                   fx.ms->m[fx.ms->order[k]].name, want[k]);
    tm_fx_free(&fx);
}

/* ----------------------------------------------------------- parse errors */

static void parse_errors_name_line_and_fix(void)
{
#define M1 "models:\n  users:\n    properties:\n"
    PARSE_ERR(M1 "      id: {type: integer, lenght: 5}\n", 4, "unknown key 'lenght'; did you mean 'length'?");
    PARSE_ERR(M1 "      id: {type: integer, colour: 5}\n", 4, "unknown key 'colour'; a property takes type, required");
    PARSE_ERR(M1 "      id: {type: strng}\n", 4, "type: unknown type 'strng'; did you mean 'string'?");
    PARSE_ERR(M1 "      id: {type: blob}\n", 4, "unknown type 'blob'; use one of serial, integer");
    PARSE_ERR(M1 "      id: blob\n", 4, "unknown type 'blob'");
    PARSE_ERR(M1 "      id: {required: true}\n", 4, "type: is required");
    PARSE_ERR(M1 "      id: [1, 2]\n", 4, "expected a map like {type: string");
    PARSE_ERR(M1 "      id: integer\n      code: {type: string, format: regex, regex: \"^[a-\"}\n",
              5, "regex: cannot compile '^[a-'");
    PARSE_ERR(M1 "      code: {type: string, format: regex}\n", 4, "format: regex needs regex:");
    PARSE_ERR(M1 "      code: {type: string, format: url, regex: \"^a$\"}\n", 4,
              "regex: only with format: regex");
    PARSE_ERR(M1 "      code: {type: string, format: emial}\n", 4, "did you mean 'email'?");
    PARSE_ERR(M1 "      code: {type: integer, format: email}\n", 4, "format: only string and text");
    PARSE_ERR(M1 "      n: {type: integer, length: 5}\n", 4, "length: only string and text properties have a length (this one is integer)");
    PARSE_ERR(M1 "      s: {type: string, min: 5}\n", 4, "use length: for the number of characters");
    PARSE_ERR(M1 "      s: {type: string, length: [9, 2]}\n", 4, "the minimum 9 is more than the maximum 2");
    PARSE_ERR(M1 "      s: {type: string, length: [1, 2, 3]}\n", 4, "length: expected a number of characters or [min, max]");
    PARSE_ERR(M1 "      s: {type: string, length: 0}\n", 4, "length: expected a whole number from 1");
    PARSE_ERR(M1 "      n: {type: integer, min: 5, max: 1}\n", 4, "max: 1 is less than min: 5");
    PARSE_ERR(M1 "      n: {type: integer, min: abc}\n", 4, "min: expected a number (got 'abc')");
    PARSE_ERR(M1 "      n: {type: decimal, precision: 4, scale: 5}\n", 4, "scale: 5 is more than precision: 4");
    PARSE_ERR(M1 "      n: {type: decimal, scale: 2}\n", 4, "scale: needs precision:");
    PARSE_ERR(M1 "      n: {type: integer, precision: 2}\n", 4, "precision: only decimal");
    PARSE_ERR(M1 "      n: {type: integer, key: maybe}\n", 4, "key: expected true or false (got 'maybe')");
    PARSE_ERR(M1 "      d: {type: date, paranoid: true}\n", 4, "paranoid: a soft-delete property must be a datetime (this one is date)");
    PARSE_ERR(M1 "      d: {type: datetime, paranoid: true}\n      e: {type: datetime, paranoid: true}\n", 5,
              "already has a soft-delete property 'd'");
    PARSE_ERR(M1 "      j: {type: json, key: true}\n", 4, "a json property cannot be part of the key");
    PARSE_ERR(M1 "      n: {type: integer, default: abc}\n", 4, "default: expected a whole number");
    PARSE_ERR(M1 "      n: {type: integer, default: 3000000000}\n", 4, "breaks the property's own rules: n must be an integer from");
    PARSE_ERR(M1 "      n: {type: integer, min: 5, default: 1}\n", 4, "default: 1 breaks the property's own rules: n must be at least 5");
    PARSE_ERR(M1 "      s: {type: string, length: [2, 3], default: abcd}\n", 4, "s must be at most 3 characters");
    PARSE_ERR(M1 "      s: {type: string, format: email, default: nope}\n", 4, "must be an email address");
    PARSE_ERR(M1 "      d: {type: date, default: 2026-02-30}\n", 4, "must be a real calendar date");
    PARSE_ERR(M1 "      d: {type: decimal, default: 1.2.3}\n", 4, "default: expected a number like 12.50");
    PARSE_ERR(M1 "      b: {type: boolean, default: maybe}\n", 4, "default: expected true or false");
    PARSE_ERR(M1 "      j: {type: json, default: '{a'}\n", 4, "default: is not valid JSON");
    PARSE_ERR(M1 "      s: {type: string, default: ~}\n", 4, "default: is empty");
    PARSE_ERR(M1 "      s: {type: string, messages: {lenght: x}}\n", 4, "messages: unknown rule 'lenght'; did you mean 'length'?");
    PARSE_ERR(M1 "      s: {type: string, messages: {colour: x}}\n", 4, "the rules are required, type, length");
    PARSE_ERR(M1 "      s: {type: string, messages: {length: \"\"}}\n", 4, "messages: length: is empty; give a value or remove the key");
    /* conf.h's getters: a number in quotes is a string, as everywhere in the file */
    PARSE_ERR(M1 "      s: {type: string, length: \"5\"}\n", 4, "length: expected a whole number from 1 to "
              "10485760 (got the string \"5\"); write it without quotes");
    PARSE_ERR(M1 "      n: {type: integer, required: 'yes'}\n", 4, "required: expected true or false (got "
              "the string \"yes\"); write it without quotes");
    PARSE_ERR(M1 "      bad-name: string\n", 4, "'bad-name' is not a valid property name");
    PARSE_ERR(M1 "      _deleted: boolean\n", 4, "_deleted is reserved");
#undef M1
    PARSE_ERR("models:\n  users:\n    drift: rejct\n    properties: {id: integer}\n", 3,
              "drift: unknown drift 'rejct'; did you mean 'reject'?");
    PARSE_ERR("models:\n  users:\n    drift_column: x\n    properties: {id: integer}\n", 3,
              "drift_column: is only used with drift: keep");
    PARSE_ERR("models:\n  users:\n    drift: keep\n    properties: {id: integer, extra: json}\n", 4,
              "property 'extra' is also the drift column");
    PARSE_ERR("models:\n  users:\n    table: x.users\n    properties: {id: integer}\n", 3,
              "names a schema");
    PARSE_ERR("models:\n  users:\n    tabel: x\n    properties: {id: integer}\n", 3,
              "model 'users': unknown key 'tabel'; did you mean 'table'?");
    /* an unknown key is named at its own line, not its value's */
    PARSE_ERR("models:\n  users:\n    properties: {id: integer}\n    belong_to:\n"
              "      t: {model: users}\n", 4, "unknown key 'belong_to'; did you mean 'belongs_to'?");
    PARSE_ERR("models:\n  users:\n    table: t\n    properties: {id: integer}\n"
              "  other:\n    table: t\n    properties: {id: integer}\n", 6,
              "table 't' is already the table of model 'users'");
    PARSE_ERR("models:\n  users:\n    table: t\n", 3, "properties: is required");
    PARSE_ERR("models:\n  users:\n    properties: {}\n", 3, "properties: expected a map of name");
    PARSE_ERR("models:\n  9users:\n    properties: {id: integer}\n", 3, "'9users' is not a valid model name");
    PARSE_ERR("models:\n  users: string\n", 2, "model 'users': expected a map with properties:");
    PARSE_ERR("models: {}\n", 1, "models: expected a map of models");
    PARSE_ERR("models: [a]\n", 1, "models: expected a map of models");

    /* Relations. */
#define M2 "models:\n  tenants:\n    properties: {id: {type: integer, key: true}, name: string}\n" \
           "  users:\n    properties: {id: {type: integer, key: true}, tenant: integer, t2: string}\n"
    PARSE_ERR(M2 "    belongs_to:\n      t: {model: tenant, fields: [tenant]}\n", 7,
              "belongs_to 't': model: model 'tenant' is not declared; did you mean 'tenants'?");
    PARSE_ERR(M2 "    belongs_to:\n      t: {model: orgs, fields: [tenant]}\n", 7,
              "model 'orgs' is not declared; declare it under models: or fix the name");
    PARSE_ERR(M2 "    belongs_to:\n      t: {model: tenants, fields: [tenant, id]}\n", 7,
              "fields: lists 2 columns but the key of 'tenants' has 1 (id)");
    PARSE_ERR(M2 "    belongs_to:\n      t: {model: tenants}\n", 7,
              "fields: is required; list this model's columns that hold the key of 'tenants' (id)");
    PARSE_ERR(M2 "    belongs_to:\n      t: {model: tenants, fields: [tenant_id]}\n", 7,
              "fields: 'tenant_id' is not a property of model 'users'");
    PARSE_ERR(M2 "    belongs_to:\n      t: {model: tenants, fields: [t2]}\n", 7,
              "fields: 't2' is string but the key field 'id' of 'tenants' is integer");
    PARSE_ERR(M2 "    belongs_to:\n      t: {model: tenants, feilds: [tenant]}\n", 7,
              "unknown key 'feilds'; did you mean 'fields'?");
    PARSE_ERR(M2 "    belongs_to: [tenants]\n", 6, "belongs_to: expected a map");
    PARSE_ERR(M2 "    has_n:\n      posts: {model: posts}\n", 7, "model 'posts' is not declared");
    PARSE_ERR(M2 "    has_n:\n      posts: {}\n", 7, "model 'posts' is not declared; declare it under models: or give model:");
    PARSE_ERR(M2 "    has_n:\n      tenants: {through: tenant}\n", 7,
              "through: model 'tenant' is not declared; did you mean 'tenants'?");
    PARSE_ERR(M2 "  keyless:\n    properties: {id: integer}\n"
              "  x:\n    properties: {k: integer}\n    belongs_to: {k: {model: keyless, fields: [k]}}\n",
              10, "model 'keyless' has no key to refer to");
#undef M2
    /* A cycle between different models names it; a self reference is fine. */
    PARSE_ERR("models:\n"
              "  a:\n    properties: {id: {type: integer, key: true}, b_id: integer}\n"
              "    belongs_to: {b: {model: b, fields: [b_id]}}\n"
              "  b:\n    properties: {id: {type: integer, key: true}, c_id: integer}\n"
              "    belongs_to: {c: {model: c, fields: [c_id]}}\n"
              "  c:\n    properties: {id: {type: integer, key: true}, a_id: integer, c_id: integer}\n"
              "    belongs_to: {a: {model: a, fields: [a_id]}, self: {model: c, fields: [c_id]}}\n",
              4, "belongs_to makes a cycle between models: a -> b -> c -> a");
}

/* names_are_stable: the names of rules, types, drift policies and formats
 * are what the file says and what qctl and qload print. */
static void names_are_stable(void)
{
    static const char *const want[] = {"required", "type", "length", "min", "max", "format",
                                       "drift", "unique"};
    for (int r = 0; r < RULE_COUNT; r++)
        T_CHECK(strcmp(model_rule_name((Rule)r), want[r]) == 0);
    T_CHECK(strcmp(model_rule_name(RULE_COUNT), "unknown") == 0);
    static const char *const types[] = {"serial", "integer", "bigint", "decimal", "boolean",
                                        "string", "text", "datetime", "date", "json"};
    for (int t = FT_SERIAL; t <= FT_JSON; t++)
        T_CHECK(strcmp(model_type_name((FieldType)t), types[t]) == 0);
    T_CHECK(strcmp(model_type_name((FieldType)(FT_JSON + 1)), "unknown") == 0);
    T_CHECK(strcmp(model_drift_name(DRIFT_REJECT), "reject") == 0);
    T_CHECK(strcmp(model_drift_name(DRIFT_KEEP), "keep") == 0);
    T_CHECK(strcmp(model_drift_name((DriftPolicy)7), "unknown") == 0);
    T_CHECK(strcmp(model_format_name(FF_NONE), "none") == 0);
    T_CHECK(strcmp(model_format_name(FF_REGEX), "regex") == 0);
    T_CHECK(strcmp(model_format_name((FieldFormat)9), "unknown") == 0);
    T_CHECK(models_find(NULL, "x") == NULL);
    models_free(NULL);
}

static const TCase cases[] = {
    T_CASE(seed_users_model_parses),
    T_CASE(load_order_keeps_file_order_among_equals),
    T_CASE(parse_errors_name_line_and_fix),
    T_CASE(names_are_stable),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, "model", cases);
}
