/* test_conf.c: engine/data/conf.c: the YAML tree (lines of nodes and of
 * keys, quoting, what the reader refuses), the getters' messages (one
 * wording for the pipeline, the models and the stage kinds), and the
 * did-you-mean helpers, the environment's variables (conf_subst).
 * pipeline_load's own checks are in test_pipeline.c. */
#include "t.h"
#include "conf.h"
#include "pl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rd: a tree read from text, or the error that refused it. */
typedef struct Rd {
    ConfNode *root;
    char err[512];
    int rc;
} Rd;

static void rd(Rd *r, const char *text)
{
    ConfErr e = conf_err("c.yml", r->err, sizeof r->err);
    r->err[0] = '\0';
    r->rc = conf_read(&e, text, strlen(text), &r->root);
}

/* has: the message must start with "c.yml:LINE: " and hold want. */
static void has(int tline, const char *err, int line, const char *want)
{
    char at[32];
    snprintf(at, sizeof at, "c.yml:%d: ", line);
    if (strncmp(err, at, strlen(at)) != 0 || !strstr(err, want))
        t_fail(__FILE__, tline, "error\n  %s\nwanted line %d and\n  %s", err, line, want);
}
#define HAS(err, line, want) has(__LINE__, err, line, want)

static void refused(int tline, const char *text, int line, const char *want)
{
    Rd r;
    rd(&r, text);
    if (r.rc != PL_EINVAL || r.root)
        t_fail(__FILE__, tline, "conf_read returned %d, wanted PL_EINVAL", r.rc);
    has(tline, r.err, line, want);
}
#define REFUSED(text, line, want) refused(__LINE__, text, line, want)

static void tree_has_lines_and_quotes(void)
{
    Rd r;
    rd(&r, "# a comment\n"
           "a: 1\n"
           "b:\n"
           "  c: 'x'\n"
           "  d: [p, \"q\"]\n"
           "e:\n"
           "f: ~\n");
    T_OK(r.rc);
    const ConfNode *root = r.root, *b, *d;
    T_EQ(root->type, CONF_MAP);
    T_EQ(root->n, 4);
    T_EQ(conf_index(root, "e"), 2);
    T_EQ(conf_index(root, "zz"), -1);
    T_CHECK(conf_get(root, "zz") == NULL && conf_get(NULL, "a") == NULL);
    T_CHECK(strcmp(conf_get(root, "a")->value, "1") == 0 && !conf_get(root, "a")->quoted);
    b = conf_get(root, "b");
    T_EQ(b->type, CONF_MAP);
    /* the key b: is on line 3, its map (and its first key) on line 4 */
    T_EQ(conf_key_line(root, conf_index(root, "b")), 3);
    T_EQ(b->line, 4);
    T_EQ(conf_key_line(b, 0), 4);
    T_EQ(conf_key_line(b, -1), 4);
    T_CHECK(conf_get(b, "c")->quoted && strcmp(conf_get(b, "c")->value, "x") == 0);
    d = conf_get(b, "d");
    T_EQ(d->type, CONF_SEQ);
    T_EQ(d->n, 2);
    T_CHECK(!d->kids[0]->quoted && d->kids[1]->quoted);
    T_CHECK(conf_is_null(conf_get(root, "e")) && conf_is_null(conf_get(root, "f")));
    T_CHECK(!conf_is_null(conf_get(b, "c")));
    conf_free(r.root);

    rd(&r, "# nothing but a comment\n");
    T_OK(r.rc);
    T_CHECK(r.root == NULL);
    conf_free(NULL);
}

/* key_line_without_key_lines: a tree built elsewhere (no klines) names a
 * key by its value's line. */
static void key_line_without_key_lines(void)
{
    ConfNode v = {.type = CONF_SCALAR, .line = 7, .value = "x"};
    ConfNode *kids[] = {&v};
    char *keys[] = {"k"};
    ConfNode map = {.type = CONF_MAP, .line = 6, .n = 1, .keys = keys, .kids = kids};
    T_EQ(conf_key_line(&map, 0), 7);
    T_EQ(conf_key_line(&map, 1), 6);
    char err[200];
    ConfErr e = conf_err("c.yml", err, sizeof err);
    const char *const names[] = {"kk", NULL};
    T_ERR(conf_keys_check(&e, &map, "m", names), PL_EINVAL);
    HAS(err, 7, "unknown key 'k'; did you mean 'kk'?");
}

static void reader_refuses_what_is_not_plain_data(void)
{
    REFUSED("a: &x 1\nb: *x\n", 1, "anchors (&x) are not supported");
    REFUSED("a: !!int 1\n", 1, "tags (tag:yaml.org,2002:int) are not supported");
    REFUSED("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a' (also at line 1); remove one");
    REFUSED("a: 1\n---\nb: 2\n", 2, "a second YAML document");
    REFUSED("a:\n\tb: 1\n", 2, "tab in the indentation");
    REFUSED("a: [1, 2\n", 2, "invalid YAML");
    REFUSED("? [a]\n: 1\n", 1, "a key must be plain text");
    /* duplicate keys in a large map (the hash table's path) */
    char big[4096] = "";
    size_t m = 0;
    for (int i = 0; i < 40; i++)
        m += (size_t)snprintf(big + m, sizeof big - m, "k%d: %d\n", i, i);
    snprintf(big + m, sizeof big - m, "k17: again\n");
    REFUSED(big, 41, "duplicate key 'k17' (also at line 18)");
}

static void getters_word_their_errors(void)
{
    Rd r;
    char err[300];
    ConfErr e = conf_err("c.yml", err, sizeof err);
    unsigned long long u = 99;
    double d = -1;
    int b = -1;
    const char *s = NULL, **a = NULL;
    size_t n = 0;

    snprintf(e.pfx, sizeof e.pfx, "thing 'x': ");
    rd(&r, "u: 12\nq: \"12\"\nd: 2.5\nb: Yes\ns: ''\nl: [a, b]\nm: {a: 1}\nz:\nh: 0x10\n");
    T_OK(r.rc);
    const ConfNode *t = r.root;
    T_OK(conf_as_uint(&e, "u", conf_get(t, "u"), 1, 20, &u));
    T_EQ(u, 12);
    T_ERR(conf_as_uint(&e, "u", conf_get(t, "u"), 13, 20, &u), PL_EINVAL);
    HAS(err, 1, "thing 'x': u: expected a whole number from 13 to 20 (got '12')");
    T_EQ(u, 12);
    T_ERR(conf_as_uint(&e, "q", conf_get(t, "q"), 0, 20, &u), PL_EINVAL);
    HAS(err, 2, "q: expected a whole number from 0 to 20 (got the string \"12\"); write it "
                "without quotes");
    T_OK(conf_as_num(&e, "d", conf_get(t, "d"), 0, 3, "seconds", &d));
    T_CHECK(d == 2.5);
    T_ERR(conf_as_num(&e, "d", conf_get(t, "d"), 0, 1, "seconds", &d), PL_EINVAL);
    HAS(err, 3, "d: expected a number of seconds from 0 to 1 (got '2.5')");
    T_ERR(conf_as_num(&e, "h", conf_get(t, "h"), -INFINITY, INFINITY, NULL, &d), PL_EINVAL);
    HAS(err, 9, "h: expected a number (got '0x10')");
    T_OK(conf_as_bool(&e, "b", conf_get(t, "b"), &b));
    T_EQ(b, 1);
    T_ERR(conf_as_bool(&e, "q", conf_get(t, "q"), &b), PL_EINVAL);
    HAS(err, 2, "q: expected true or false (got the string \"12\"); write it without quotes");
    T_OK(conf_as_str(&e, "s", conf_get(t, "s"), &s));
    T_CHECK(s && s[0] == '\0');
    s = NULL;
    T_ERR(conf_as_name(&e, "s", conf_get(t, "s"), &s), PL_EINVAL);
    HAS(err, 5, "s: is empty; give a value or remove the key");
    T_CHECK(s == NULL);
    T_ERR(conf_as_name(&e, "m", conf_get(t, "m"), &s), PL_EINVAL);
    HAS(err, 7, "m: expected a string (got a map)");
    T_ERR(conf_as_str(&e, "z", conf_get(t, "z"), &s), PL_EINVAL);
    HAS(err, 8, "z: expected a string (got nothing)");
    T_OK(conf_as_strs(&e, "l", conf_get(t, "l"), &a, &n));
    T_EQ(n, 2);
    T_CHECK(strcmp(a[0], "a") == 0 && strcmp(a[1], "b") == 0 && a[2] == NULL);
    free(a);
    T_OK(conf_as_strs(&e, "u", conf_get(t, "u"), &a, &n));
    T_EQ(n, 1);
    free(a);
    T_ERR(conf_as_strs(&e, "m", conf_get(t, "m"), &a, &n), PL_EINVAL);
    HAS(err, 7, "m: expected a string or a list of strings (got a map)");

    /* the getters by key: absent keys leave *out alone */
    u = 5;
    T_OK(conf_uint("c.yml", t, "nope", 10, &u, err, sizeof err));
    T_EQ(u, 5);
    T_ERR(conf_uint("c.yml", t, "u", 10, &u, err, sizeof err), PL_EINVAL);
    HAS(err, 1, "u: expected a whole number from 0 to 10 (got '12')");
    conf_free(r.root);
}

static void errors_stay_one_line(void)
{
    char err[100];
    ConfErr e = conf_err(NULL, err, sizeof err);
    T_ERR(conf_errat(&e, 3, "a\rb\tc\x01" "d"), PL_EINVAL);
    T_CHECK(strcmp(err, "(pipeline):3: a\\rb\\tc\\x01d") == 0);
    char tiny[8];
    e = conf_err("f", tiny, sizeof tiny);
    T_ERR(conf_errat(&e, 12, "long message"), PL_EINVAL);
    T_CHECK(strcmp(tiny, "f:12: l") == 0);
    e = conf_err("f", NULL, 0);
    T_ERR(conf_errat(&e, 1, "x"), PL_EINVAL);
}

static void did_you_mean(void)
{
    const char *const words[] = {"timeout", "concurrency", "input", NULL};
    T_CHECK(strcmp(conf_nearest("timout", words), "timeout") == 0);
    T_CHECK(strcmp(conf_nearest("inptu", words), "input") == 0); /* a swap counts one */
    T_CHECK(conf_nearest("output", words) == NULL);
    T_CHECK(conf_edit_distance("abc", "abc") == 0);
    T_CHECK(conf_edit_distance("", "abc") == 3);
    char buf[16];
    T_CHECK(strcmp(conf_words(words, buf, sizeof buf), "timeout, concur") == 0);

    Rd r;
    char err[300];
    ConfErr e = conf_err("c.yml", err, sizeof err);
    rd(&r, "timeout: 1\ncolour: red\n");
    T_OK(r.rc);
    T_ERR(conf_keys_check(&e, r.root, "a stage", words), PL_EINVAL);
    HAS(err, 2, "unknown key 'colour'; a stage takes timeout, concurrency, input");
    conf_free(r.root);
    rd(&r, "timeout: 1\n\nconcurency:\n  a: 1\n");
    T_OK(r.rc);
    T_ERR(conf_keys_check(&e, r.root, "a stage", words), PL_EINVAL);
    HAS(err, 3, "unknown key 'concurency'; did you mean 'concurrency'?");
    conf_free(r.root);
}

/* ------------------------------------------------------------ variables */

/* subst reads text and expands it: the tree, or NULL with r->err set. */
static ConfNode *subst(Rd *r, const char *text)
{
    ConfErr e = conf_err("c.yml", r->err, sizeof r->err);
    rd(r, text);
    T_OK(r->rc);
    r->rc = conf_subst(&e, r->root);
    if (r->rc) {
        conf_free(r->root);
        r->root = NULL;
    }
    return r->root;
}

static const char *val(const ConfNode *root, const char *key)
{
    const ConfNode *n = conf_get(root, key);
    T_CHECK(n != NULL && n->type == CONF_SCALAR);
    return n->value;
}

static void variables_expand_in_values(void)
{
    Rd r;
    setenv("PL_T_HOST", "db.example", 1);
    setenv("PL_T_PORT", "5433", 1);
    setenv("PL_T_EMPTY", "", 1);
    unsetenv("PL_T_UNSET");
    ConfNode *root = subst(&r, "url: http://${PL_T_HOST}:${PL_T_PORT}/x\n"
                               "port: ${PL_T_PORT}\n"
                               "qport: \"${PL_T_PORT}\"\n"
                               "def: ${PL_T_UNSET:-fallback value}\n"
                               "defempty: ${PL_T_EMPTY:-used}\n"
                               "empty: x${PL_T_EMPTY}y\n"
                               "set: ${PL_T_HOST:-not used}\n"
                               "lit: $${PL_T_HOST} $$ $x {y} ${PL_T_UNSET:-}\n"
                               "plain: no variables\n"
                               "list: [\"${PL_T_HOST}\", {k: \"${PL_T_PORT}\"}]\n");
    T_CHECK(root != NULL);
    T_CHECK(strcmp(val(root, "url"), "http://db.example:5433/x") == 0);
    /* a plain ${PORT} stays plain (a number), a quoted one quoted (a string) */
    T_CHECK(strcmp(val(root, "port"), "5433") == 0 && !conf_get(root, "port")->quoted);
    T_CHECK(strcmp(val(root, "qport"), "5433") == 0 && conf_get(root, "qport")->quoted);
    T_CHECK(strcmp(val(root, "def"), "fallback value") == 0);
    T_CHECK(strcmp(val(root, "defempty"), "used") == 0);
    T_CHECK(strcmp(val(root, "empty"), "xy") == 0);
    T_CHECK(strcmp(val(root, "set"), "db.example") == 0);
    T_CHECK(strcmp(val(root, "lit"), "${PL_T_HOST} $$ $x {y} ") == 0);
    /* the text as written is kept, and messages show it */
    T_CHECK(strcmp(conf_get(root, "url")->raw, "http://${PL_T_HOST}:${PL_T_PORT}/x") == 0);
    T_CHECK(strcmp(conf_text(conf_get(root, "port")), "${PL_T_PORT}") == 0);
    T_CHECK(conf_get(root, "plain")->raw == NULL);
    T_CHECK(strcmp(conf_text(conf_get(root, "plain")), "no variables") == 0);
    const ConfNode *l = conf_get(root, "list");
    T_CHECK(strcmp(l->kids[0]->value, "db.example") == 0);
    T_CHECK(strcmp(conf_get(l->kids[1], "k")->value, "5433") == 0);
    /* expanding twice changes nothing */
    ConfErr e = conf_err("c.yml", r.err, sizeof r.err);
    T_OK(conf_subst(&e, root));
    T_CHECK(strcmp(val(root, "url"), "http://db.example:5433/x") == 0);
    conf_free(root);
    unsetenv("PL_T_HOST");
    unsetenv("PL_T_PORT");
    unsetenv("PL_T_EMPTY");
}

static void variables_messages_show_the_text_as_written(void)
{
    Rd r;
    char err[300], buf[64];
    unsigned long long u;
    ConfErr e = conf_err("c.yml", err, sizeof err);
    setenv("PL_T_SECRET", "hunter2-very-secret", 1);
    setenv("PL_T_EMPTY", "", 1);
    ConfNode *root = subst(&r, "a: 1\nport: ${PL_T_SECRET}\nq: \"${PL_T_EMPTY}\"\n");
    T_CHECK(root != NULL);
    T_ERR(conf_as_uint(&e, "port", conf_get(root, "port"), 1, 65535, &u), PL_EINVAL);
    HAS(err, 2, "port: expected a whole number from 1 to 65535 (got '${PL_T_SECRET}')");
    T_CHECK(strstr(err, "hunter2") == NULL);
    T_CHECK(strcmp(conf_desc(conf_get(root, "q"), buf, sizeof buf),
                   "\"${PL_T_EMPTY}\", which is empty") == 0);
    conf_free(root);
    unsetenv("PL_T_SECRET");
    unsetenv("PL_T_EMPTY");
}

static void variables_refused(void)
{
    Rd r;
    unsetenv("PL_T_UNSET");
    T_CHECK(subst(&r, "a: 1\nb:\n  c: [x, \"${PL_T_UNSET}\"]\n") == NULL);
    HAS(r.err, 3, "${PL_T_UNSET} is not set; export PL_T_UNSET, or give a default: "
                  "${PL_T_UNSET:-default}");
    T_CHECK(subst(&r, "a: x${\n") == NULL);
    HAS(r.err, 1, "'${' must be followed by a variable name");
    T_CHECK(subst(&r, "a: ${9LIVES}\n") == NULL);
    HAS(r.err, 1, "'${' must be followed by a variable name");
    T_CHECK(subst(&r, "a: ${PL_T_UNSET\n") == NULL);
    HAS(r.err, 1, "${PL_T_UNSET is not closed: write ${PL_T_UNSET} or ${PL_T_UNSET:-default}");
    T_CHECK(subst(&r, "a: ${PL_T_UNSET:-open\n") == NULL);
    HAS(r.err, 1, "${PL_T_UNSET:-... has no closing '}'");
    T_CHECK(subst(&r, "a: ${PL_T_UNSET-x}\n") == NULL);
    HAS(r.err, 1, "${PL_T_UNSET is not closed");
    T_CHECK(subst(&r, "a: ${PL_T_UNSET:-${HOME}}\n") == NULL);
    HAS(r.err, 1, "a default cannot hold another ${...}");
    T_CHECK(subst(&r, "a: 1\n\n${PL_T_UNSET}: 2\n") == NULL);
    HAS(r.err, 3, "key '${PL_T_UNSET}': variables are expanded in values, not in keys");
    /* In flow style a ${VAR} must be quoted (YAML's rule): the message says so. */
    REFUSED("a: 1\nb: {c: ${PL_T_UNSET}}\n", 2, "(inside { } or [ ], write a ${VAR} in quotes: "
            "\"${VAR}\")");
}

static const TCase cases[] = {
    T_CASE(tree_has_lines_and_quotes),
    T_CASE(key_line_without_key_lines),
    T_CASE(reader_refuses_what_is_not_plain_data),
    T_CASE(getters_word_their_errors),
    T_CASE(errors_stay_one_line),
    T_CASE(did_you_mean),
    T_CASE(variables_expand_in_values),
    T_CASE(variables_messages_show_the_text_as_written),
    T_CASE(variables_refused),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, "conf", cases);
}
