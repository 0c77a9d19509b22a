/* conf.h: the YAML tree of a pipeline file, and the getters that read it.
 *
 * conf_read reads YAML text with libyaml's event API into a tree of
 * ConfNodes that remember their line (and a map, the line of each key).
 * Anchors, aliases and tags are refused, and so are duplicate keys, a
 * second document and nesting deeper than 64 levels: a pipeline file is
 * plain data, and each of these is an error that says how to write it.
 *
 * The loaders check the tree with the getters below: pipeline.c the file,
 * model.c its models: section, the stage kinds their own keys. A getter
 * takes the value's node and the name to call it by, and words its error
 * one way for all of them, "FILE:LINE: PFX KEY: expected ... (got ...);
 * hint", through a ConfErr. Nothing in a tree is converted: values are
 * the text as written, and the getters read them (YAML 1.1 booleans, whole
 * and decimal numbers; a quoted value is a string, never a number).
 *
 * conf_subst expands ${NAME} and ${NAME:-default} from the environment in
 * the values of a tree (Vector's and Benthos's syntax), before the getters
 * read them; a node keeps the text as written (raw), and messages show
 * that, never the expansion (it may hold a secret). */
#ifndef PL_CONF_H
#define PL_CONF_H

#include <stddef.h>

/* ---------------------------------------------------------------- tree */

enum { CONF_SCALAR, CONF_MAP, CONF_SEQ };

typedef struct ConfNode ConfNode;
struct ConfNode {
    int type;
    int line;            /* 1-based line in the file */
    char *value;         /* CONF_SCALAR: the text (NUL-terminated) */
    int quoted;          /* CONF_SCALAR: written in quotes (a string, never a number) */
    size_t n;            /* CONF_MAP / CONF_SEQ: number of children */
    char **keys;         /* CONF_MAP: keys[i] names kids[i] */
    ConfNode **kids;
    int *klines;         /* CONF_MAP: the line of keys[i]; NULL in a tree built elsewhere */
    char *raw;           /* CONF_SCALAR: the text as written when conf_subst changed it
                          * (value is then the expansion); NULL otherwise */
};

/* ConfErr: where a loader's messages go; pfx names the part being checked
 * ("stage 'extract': ") and is copied into nested contexts. conf_err makes
 * one for file (NULL: "(pipeline)"). conf_errat writes "FILE:LINE: PFX
 * message" into err, as one line of printable text (a CR, tab or other
 * control character quoted in it shows as \r, \t or \xNN), and returns
 * PL_EINVAL; with err NULL or errlen 0 it only returns. */
typedef struct ConfErr {
    const char *file;
    char *err;
    size_t errlen;
    char pfx[200];
} ConfErr;
ConfErr conf_err(const char *file, char *err, size_t errlen);
int conf_errat(const ConfErr *e, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* conf_read reads text (len bytes) into *root: NULL for a text with no
 * document (empty, or comments only). Returns 0, or PL_EINVAL with e's
 * message naming the line ("invalid YAML: ...; check the indentation and
 * the quoting", "tab in the indentation", "duplicate key 'x' (also at
 * line 3)" ...). conf_free frees a tree conf_read built; NULL is a no-op. */
int conf_read(const ConfErr *e, const char *text, size_t len, ConfNode **root);
void conf_free(ConfNode *root);

/* conf_subst expands the environment's variables in every scalar value of
 * the tree n (n included): ${NAME} is the value of NAME, which must be set
 * (empty is a value); ${NAME:-default} is default (the text up to the next
 * '}') when NAME is unset or empty; $${ is a literal ${. NAME is a letter
 * or '_', then letters, digits and '_'. A value keeps its quoted flag (a
 * plain ${PORT} can be a number, a quoted "${PORT}" is a string), and the
 * text as written goes to raw. Keys are not expanded: a "${" in one is an
 * error. Returns 0, or PL_EINVAL with e's message at the value's line, the
 * first problem: "${NAME} is not set; export NAME, or give a default:
 * ${NAME:-default}", an unterminated ${, a bad name. */
int conf_subst(const ConfErr *e, ConfNode *n);

/* conf_text returns the text of scalar n as written in the file: raw when
 * conf_subst expanded it, else value. Messages quote this. */
const char *conf_text(const ConfNode *n);

/* conf_get returns map's child named key, or NULL (also for a non-map).
 * conf_index returns the index of key among map's keys, or -1.
 * conf_key_line returns the line of map's key i: where it was written, or
 * in a tree built without key lines its value's line (i < 0: the map's). */
const ConfNode *conf_get(const ConfNode *map, const char *key);
int conf_index(const ConfNode *map, const char *key);
int conf_key_line(const ConfNode *map, int i);

/* conf_is_null says whether n is YAML's nothing: a plain empty scalar, ~,
 * or null (Null, NULL). conf_desc describes n for a message: 'text', the
 * string "text" (quoted in the file), a map, a list, nothing; buf (64
 * bytes will do) holds the text when it is used. A value with variables is
 * described as written, never by its expansion: '${PORT}' (and "which is
 * empty" when it expanded to nothing). */
int conf_is_null(const ConfNode *n);
const char *conf_desc(const ConfNode *n, char *buf, size_t size);

/* ------------------------------------------------------------- getters
 *
 * Each reads value node n of the key called key (in messages) and returns
 * 0 with *out set, or PL_EINVAL with e's message; *out is left alone then. */

/* conf_as_str: a string, empty or not (not a map, a list or nothing). */
int conf_as_str(const ConfErr *e, const char *key, const ConfNode *n, const char **out);
/* conf_as_name: a non-empty string. */
int conf_as_name(const ConfErr *e, const char *key, const ConfNode *n, const char **out);
/* conf_as_uint: a whole number from min to max, unquoted. */
int conf_as_uint(const ConfErr *e, const char *key, const ConfNode *n, unsigned long long min,
                 unsigned long long max, unsigned long long *out);
/* conf_as_num: a decimal number (1, -2.5, .5, 1e3; no hex, inf or nan),
 * unquoted, from min to max; unit ("seconds", may be NULL) names what it
 * counts. With min and max both infinite any finite number is taken, and
 * the message names no range. */
int conf_as_num(const ConfErr *e, const char *key, const ConfNode *n, double min, double max,
                const char *unit, double *out);
/* conf_as_bool: true/false, yes/no, on/off in any case, unquoted. */
int conf_as_bool(const ConfErr *e, const char *key, const ConfNode *n, int *out);
/* conf_as_strs: a string, or a list of strings, into a new NULL-terminated
 * array of views into the tree (free the array, not the strings); *nout
 * counts them. */
int conf_as_strs(const ConfErr *e, const char *key, const ConfNode *n, const char ***out,
                 size_t *nout);

/* conf_str, conf_num, conf_uint, conf_bool, conf_strs: the getters for a
 * key of map, for code that reads a node the loader has checked already
 * (a stage kind its own keys): as conf_as_*, with messages for file into
 * err; *out is left alone when the key is absent. conf_uint's minimum is 0. */
int conf_str(const char *file, const ConfNode *map, const char *key, const char **out, char *err,
             size_t errlen);
int conf_num(const char *file, const ConfNode *map, const char *key, double min, double max,
             double *out, char *err, size_t errlen);
int conf_uint(const char *file, const ConfNode *map, const char *key, unsigned long long max,
              unsigned long long *out, char *err, size_t errlen);
int conf_bool(const char *file, const ConfNode *map, const char *key, int *out, char *err,
              size_t errlen);
int conf_strs(const char *file, const ConfNode *map, const char *key, const char ***out, size_t *n,
              char *err, size_t errlen);

/* ------------------------------------------------------------ did you mean */

/* conf_edit_distance is the edit distance of a and b (insertions,
 * deletions, changes and swaps of neighbours each count 1), for "did you
 * mean" hints; words over 40 bytes count as far apart (SIZE_MAX). */
size_t conf_edit_distance(const char *a, const char *b);

/* ConfNear finds the candidate closest to word within two edits, the
 * first of the closest: start it with CONF_NEAR(word), offer each
 * candidate to conf_near_try, then read best (NULL: none is close).
 * conf_nearest does it for a NULL-terminated list. */
typedef struct ConfNear {
    const char *word, *best;
    size_t d;
} ConfNear;
#define CONF_NEAR(w) {(w), NULL, (size_t)-1}
void conf_near_try(ConfNear *nr, const char *cand);
const char *conf_nearest(const char *word, const char *const *list);

/* conf_join appends ", s" (s alone first) to the list of words in buf
 * (size bytes, *m used), cutting it at buf's end. conf_words writes the
 * words of a NULL-terminated list that way and returns buf. */
void conf_join(char *buf, size_t size, size_t *m, const char *s);
const char *conf_words(const char *const *list, char *buf, size_t size);

/* conf_keys_check fails on the first key of map that names (NULL-
 * terminated) lacks, at the key's line: "unknown key 'K'; did you mean
 * 'N'?" when one is close, else "unknown key 'K'; WHAT takes A, B, C". */
int conf_keys_check(const ConfErr *e, const ConfNode *map, const char *what,
                    const char *const *names);

#endif
