/* test_pipefuzz.c: a bounded, seeded fuzz of the pipeline loader
 * (engine/data/pipeline.c, and model.c under it). Seeds are the shipped
 * examples (examples/reference.yml, examples/x/pipeline.yml), the pipelines
 * of the python tests (the triple-quoted strings in tests/test_x.py that
 * hold queues: and stages:) and a few built in here; each iteration mutates
 * one (bytes flipped to YAML's and URLs' special characters, tokens
 * inserted, spans cut, lines doubled, swapped or re-indented, values
 * replaced) and loads it. Whatever comes in, the loader must:
 *   - not crash, and (under ASan) read nothing out of bounds and leak
 *     nothing (the sanitizers check at the test process's exit);
 *   - succeed with a pipeline whose graph prints, or fail with PL_EINVAL,
 *     no pipeline and one line "NAME:LINE: message", LINE within the file.
 *
 * Deterministic: iteration i of seed S mutates with its own generator
 * (S, i), so a failure names what to replay. The environment may change
 * the run: PICKLINE_FUZZ_SEED (default 20261206), PICKLINE_FUZZ_ITERS
 * (default 3000 a case), PICKLINE_FUZZ_ONLY (one iteration, printed). */
#include "t.h"
#include "pipeline.h"
#include "pl.h"
#include "kinds.h"

#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- seeds */

typedef struct Text {
    char *p;
    size_t len, cap;
} Text;

static void text_add(Text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->p = xrealloc(t->p, t->cap);
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void text_adds(Text *t, const char *s)
{
    text_add(t, s, strlen(s));
}

typedef struct Seeds {
    Text *t;
    size_t n;
    int examples, py, py_dropped; /* how many came from each place */
} Seeds;

static void seed_add(Seeds *s, Text t)
{
    s->t = xrealloc(s->t, (s->n + 1) * sizeof *s->t);
    s->t[s->n++] = t;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    Text t = {0};
    char buf[8192];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0)
        text_add(&t, buf, got);
    fclose(f);
    if (!t.p)
        text_add(&t, "", 0);
    *len = t.len;
    return t.p;
}

/* fill returns what a python test's ${name} becomes, from where it stands:
 * a whole line of extra settings goes, a URL's base is a URL, a DSN a
 * socket directory, a port and a token themselves, anything else 1. */
static const char *fill(const char *line, const char *v, const char *after)
{
    int alone = 1;
    for (const char *p = line; p < v; p++)
        alone &= *p == ' ';
    if (alone)
        return "";
    if (strncmp(v, "${port}", 7) == 0 || strncmp(v, "${deadport}", 11) == 0)
        return "7390";
    if (strncmp(v, "${token}", 8) == 0)
        return "a-token-of-32-characters-or-so-x";
    if (v - line >= 9 && strncmp(v - 9, "address: ", 9) == 0)
        return "127.0.0.1";
    if (*after == '/' || (v - line >= 5 && strncmp(v - 5, "url: ", 5) == 0) ||
        (v - line >= 6 && strncmp(v - 6, "base: ", 6) == 0))
        return "http://127.0.0.1:9";
    for (const char *p = line; p < v; p++)
        if (strncmp(p, "dsn:", 4) == 0)
            return "host=/tmp dbname=src";
    return "1";
}

/* py_seed adds the pipeline text of a python test (a template, its
 * ${name}s filled in as fill says) when it loads. */
static void py_seed(Seeds *s, const char *text)
{
    Text t = {0};
    for (const char *p = text; *p;) {
        const char *v = strstr(p, "${");
        const char *c = v ? strchr(v, '}') : NULL;
        if (!v || !c) {
            text_adds(&t, p);
            break;
        }
        text_add(&t, p, (size_t)(v - p));
        const char *line = v;
        while (line > text && line[-1] != '\n')
            line--;
        text_adds(&t, fill(line, v, c + 1));
        p = c + 1;
    }
    char err[512];
    Pipeline *p = NULL;
    if (pipeline_parse("seed.yml", t.p, t.len, stage_kind_specs, &p, err, sizeof err) == 0) {
        seed_add(s, t);
        s->py++;
    } else {
        free(t.p);
        s->py_dropped++;
    }
    pipeline_free(p);
}

/* py_pipelines adds the python tests' pipelines that load once their
 * ${name}s are filled in: the files of tests/pipelines/, and the
 * triple-quoted strings with queues: and stages: in tests/test_x.py. */
static void py_pipelines(Seeds *s, const char *top)
{
    char dir[2 * PATH_MAX], path[3 * PATH_MAX];
    snprintf(dir, sizeof dir, "%s/tests/pipelines", top);
    DIR *d = opendir(dir);
    T_CHECK(d != NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t nl = strlen(e->d_name), len;
        if (nl < 5 || strcmp(e->d_name + nl - 4, ".yml") != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        char *src = slurp(path, &len);
        T_CHECK(src != NULL);
        py_seed(s, src);
        free(src);
    }
    closedir(d);
    snprintf(dir, sizeof dir, "%s/tests", top);
    d = opendir(dir);
    T_CHECK(d != NULL);
    while ((e = readdir(d))) {
        size_t nl = strlen(e->d_name);
        if (strncmp(e->d_name, "test_", 5) != 0 || nl < 4 || strcmp(e->d_name + nl - 3, ".py") != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len;
        char *src = slurp(path, &len);
        T_CHECK(src != NULL);
        for (char *a = strstr(src, "\"\"\""); a; ) {
            char *b = strstr(a + 3, "\"\"\"");
            if (!b)
                break;
            *b = '\0';
            if (strstr(a + 3, "queues:") && strstr(a + 3, "stages:"))
                py_seed(s, a + 3);
            a = strstr(b + 3, "\"\"\"");
        }
        free(src);
    }
    closedir(d);
}

static const char *const builtin[] = {
    "queues:\n  a:\n  b: {ttr: 5, max_attempts: 3, backoff: 1, backoff_max: 10}\n"
    "stages:\n  - name: s\n    kind: noop\n    input: a\n    output: b\n    concurrency: 4\n",
    "listen: {address: 127.0.0.1, port: 7380, max_body: 4096}\ndrain: 2\n"
    "queues:\n  a:\n  b:\n  c:\nstages:\n"
    "  - name: p\n    kind: http_poll\n    output: a\n    url: http://127.0.0.1:8081/changes?x=1\n"
    "    cursor_param: since\n    headers:\n      Accept: application/json\n      X-Key: \"k\\tv\"\n"
    "  - name: x\n    kind: http_extract\n    input: a\n    output: b\n"
    "    url: \"http://[::1]:8082/records/{id}?t={tenant}\"\n    key_field: id\n"
    "  - name: r\n    kind: route\n    input: b\n    routes:\n"
    "      - when: {field: f, in: [1, 2]}\n        to: [c]\n    default: c\n",
    "models:\n  users:\n    properties:\n      id: {type: serial, key: true}\n"
    "      email: {type: string, length: [5, 99], format: email, unique: true}\n"
    "      tenant: {type: integer, min: 0, required: true}\n"
    "      deleted_at: {type: datetime, paranoid: true, default: '2999-12-31T00:00:00Z'}\n"
    "queues:\n  validate:\n  final:\n"
    "stages:\n  - name: src\n    kind: pg_extract\n    dsn: \"host=/tmp port=5432 dbname=src\"\n"
    "    table: users\n    model: users\n    updated_column: updated_at\n"
    "  - name: v\n    kind: validate\n    input: validate\n    output: final\n    model: users\n"
    "  - name: b\n    kind: batch\n    input: final\n    model: users\n    rows: 100\n",
    "listen:\nqueues: {a: , b: }\nstages:\n  - name: i\n    kind: async_submit\n    input: a\n"
    "    output: b\n    url: https://id.example/verify\n    merge: {person: person_id}\n"
    "    send: [id, email]\n    callback_base: http://127.0.0.1:7380\n    deadline: 30\n",
};

static Seeds seeds_load(void)
{
    Seeds s = {0};
    const char *top = t_root();
    char path[3 * PATH_MAX];
    size_t len;
    snprintf(path, sizeof path, "%s/examples/reference.yml", top);
    char *p = slurp(path, &len);
    T_CHECK(p != NULL);
    seed_add(&s, (Text){p, len, len + 1});
    s.examples++;
    char dir[2 * PATH_MAX];
    snprintf(dir, sizeof dir, "%s/examples", top);
    DIR *d = opendir(dir);
    T_CHECK(d != NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s/pipeline.yml", dir, e->d_name);
        if ((p = slurp(path, &len))) {
            seed_add(&s, (Text){p, len, len + 1});
            s.examples++;
        }
    }
    closedir(d);
    py_pipelines(&s, top);
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++) {
        Text t = {0};
        text_adds(&t, builtin[i]);
        seed_add(&s, t);
    }
    return s;
}

static void seeds_free(Seeds *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->t[i].p);
    free(s->t);
}

/* ------------------------------------------------------------ mutation */

typedef struct Rng {
    uint64_t s;
} Rng;

static uint64_t rnd(Rng *r) /* splitmix64 */
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t below(Rng *r, size_t n)
{
    return n ? (size_t)(rnd(r) % n) : 0;
}

static const char special[] = "\r\n\t :{}[],-#&*!|>'\"%@\\?.~/=";

static const char *const tokens[] = {
    "\r\n", "\n", "\n  ", "\n    ", ": ", ":", "{", "}", "[", "]", "- ", ", ", "&a ", "*a", "!!str ",
    "!!map ", "'", "\"", "\\r\\n", "\\u0000", "\\x01", "\"\\r\\nX: 1\"", "999.1.1.1", ":07380",
    ":99999", "%zz", "{id}", "{", "..", "/../", "http://", "https://[::1]:1/", "http://u:p@h/",
    "\xc3", "\xff\xfe", "\xef\xbb\xbf", "~", "null", "-1", "0", "1e999", "0x10", ".5",
    "99999999999999999999", "true", "yes", "env:", "env:PICKLINE_FUZZ_NOPE", "---\n", "...\n",
    "? ", "<<: ", "%YAML 1.1\n", "#", " # c", "queues:", "stages:", "models:", "listen:",
    "kind: route", "kind: http_poll", "type: decimal", "type: string", "length: [1, 0]",
    "format: regex", "regex: '(a'", "belongs_to: users", "has_n: {x: users}", "key: true",
    "paranoid: true", "default: 'x'", "headers: {\"A B\": x}", "Content-Length: 1", "host=a..b",
    "port=0", "dsn: \"host=x\\ny\"",
};

/* line_span finds the line around offset at in t: [*b, *e) without its \n. */
static void line_span(const Text *t, size_t at, size_t *b, size_t *e)
{
    size_t i = at > t->len ? t->len : at;
    while (i > 0 && t->p[i - 1] != '\n')
        i--;
    *b = i;
    const char *nl = memchr(t->p + i, '\n', t->len - i);
    *e = nl ? (size_t)(nl - t->p) : t->len;
}

static void splice(Text *t, size_t at, size_t cut, const char *ins, size_t n)
{
    if (at > t->len)
        at = t->len;
    if (cut > t->len - at)
        cut = t->len - at;
    Text o = {0};
    text_add(&o, t->p, at);
    text_add(&o, ins, n);
    text_add(&o, t->p + at + cut, t->len - at - cut);
    free(t->p);
    *t = o;
}

static void mutate(Rng *r, Text *t, const Seeds *s)
{
    size_t at = below(r, t->len + 1), b, e, b2, e2;
    char c;
    switch (below(r, 10)) {
    case 0: /* a byte becomes a special one, or any byte */
        if (!t->len)
            break;
        c = below(r, 4) ? special[below(r, sizeof special - 1)] : (char)below(r, 256);
        t->p[below(r, t->len)] = c;
        break;
    case 1:
    case 2: { /* a token goes in */
        const char *k = tokens[below(r, sizeof tokens / sizeof tokens[0])];
        splice(t, at, 0, k, strlen(k));
        break;
    }
    case 3: /* a span goes */
        splice(t, at, 1 + below(r, 24), "", 0);
        break;
    case 4: { /* a line twice (duplicate keys, stages, queues) */
        line_span(t, at, &b, &e);
        char *l = xstrndup(t->p + b, e - b);
        splice(t, e, 0, "\n", 1);
        splice(t, e + 1, 0, l, strlen(l));
        free(l);
        break;
    }
    case 5: { /* two lines swap */
        line_span(t, at, &b, &e);
        line_span(t, below(r, t->len + 1), &b2, &e2);
        if (b2 < b) {
            size_t x = b, y = e;
            b = b2, e = e2, b2 = x, e2 = y;
        }
        if (e > b2)
            break;
        char *l1 = xstrndup(t->p + b, e - b), *l2 = xstrndup(t->p + b2, e2 - b2);
        splice(t, b2, e2 - b2, l1, strlen(l1));
        splice(t, b, e - b, l2, strlen(l2));
        free(l1);
        free(l2);
        break;
    }
    case 6: /* a line moves in or out by two spaces */
        line_span(t, at, &b, &e);
        if (below(r, 2))
            splice(t, b, 0, "  ", 2);
        else if (e - b >= 2 && t->p[b] == ' ' && t->p[b + 1] == ' ')
            splice(t, b, 2, "", 0);
        break;
    case 7: /* the file ends early */
        t->len = at;
        t->p[at] = '\0';
        break;
    case 8: { /* a line from another seed goes in */
        const Text *o = &s->t[below(r, s->n)];
        line_span(o, below(r, o->len + 1), &b2, &e2);
        line_span(t, at, &b, &e);
        splice(t, b, 0, "\n", 1);
        splice(t, b, 0, o->p + b2, e2 - b2);
        break;
    }
    default: { /* a value after ": " is replaced */
        const char *v = strstr(t->p + at, ": ");
        if (!v)
            v = strstr(t->p, ": ");
        if (!v)
            break;
        size_t vb = (size_t)(v - t->p) + 2, ve;
        line_span(t, vb, &b, &ve);
        const char *k = tokens[below(r, sizeof tokens / sizeof tokens[0])];
        splice(t, vb, ve - vb, k, strlen(k));
        break;
    }
    }
}

/* ------------------------------------------------------------- checking */

static unsigned long long env_num(const char *name, unsigned long long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 10) : dflt;
}

/* show_text prints t for a failure report (escaped, at most 2000 bytes). */
static void show_text(const Text *t)
{
    for (size_t i = 0; i < t->len && i < 2000; i++) {
        unsigned char c = (unsigned char)t->p[i];
        if (c == '\n' || (c >= 0x20 && c < 0x7f && c != '\\'))
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02X", c);
    }
    fputc('\n', stderr);
}

/* verdict checks one load's outcome; returns NULL or what is wrong. */
static const char *verdict(const char *name, const Text *t, int rc, Pipeline *p, const char *err)
{
    static char why[1000];
    if (rc == 0) {
        if (!p)
            return "returned 0 without a pipeline";
        if (p->nstages == 0)
            return "loaded a pipeline without stages";
        FILE *f = fopen("/dev/null", "w");
        pipeline_graph(p, f);
        fclose(f);
        return NULL;
    }
    if (p)
        return "failed but set a pipeline";
    if (rc != PL_EINVAL) {
        snprintf(why, sizeof why, "returned %d (%s), wanted PL_EINVAL: %s", rc, pl_strerror(rc), err);
        return why;
    }
    /* YAML's line breaks (libyaml counts them all): LF, CR LF, a CR alone,
     * and NEL, LS and PS (C2 85, E2 80 A8, E2 80 A9). */
    size_t nl = strlen(name), lines = 1;
    const unsigned char *u = (const unsigned char *)t->p;
    for (size_t i = 0; i < t->len; i++)
        lines += u[i] == '\n' || (u[i] == '\r' && (i + 1 == t->len || u[i + 1] != '\n')) ||
                 (u[i] == 0xC2 && i + 1 < t->len && u[i + 1] == 0x85) ||
                 (u[i] == 0xE2 && i + 2 < t->len && u[i + 1] == 0x80 && (u[i + 2] == 0xA8 || u[i + 2] == 0xA9));
    char *end;
    long line = strncmp(err, name, nl) == 0 && err[nl] == ':' ? strtol(err + nl + 1, &end, 10) : 0;
    if (line < 1 || (size_t)line > lines + 1 || strncmp(end, ": ", 2) != 0 || !isprint((unsigned char)end[2])) {
        snprintf(why, sizeof why, "error is not \"%.200s:LINE: message\" with LINE 1..%zu: %.500s", name,
                 lines + 1, err);
        return why;
    }
    for (const char *q = err; *q; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f) {
            snprintf(why, sizeof why, "error is not one printable line (byte 0x%02X at %zu): %.500s",
                     (unsigned char)*q, (size_t)(q - err), err);
            return why;
        }
    return NULL;
}

/* fuzz runs iterations [0, n) of seed through load (1: pipeline_load from a
 * file, 0: pipeline_parse from memory). */
static void fuzz(int from_file)
{
    Seeds s = seeds_load();
    unsigned long long seed = env_num("PICKLINE_FUZZ_SEED", 20261206), n = env_num("PICKLINE_FUZZ_ITERS", 3000);
    const char *only = getenv("PICKLINE_FUZZ_ONLY");
    unsigned long long ok = 0, refused = 0, first = 0;
    char path[PATH_MAX];
    if (only && *only) {
        first = strtoull(only, NULL, 10);
        n = first + 1;
    }
    T_CHECK(s.examples >= 3 && s.py >= 5);
    mkdir(t_dir(), 0700);
    snprintf(path, sizeof path, "%s/fuzz.yml", t_dir());
    for (unsigned long long i = first; i < n; i++) {
        Rng r = {seed * 0x100000001B3ull ^ (i + 1) * 0x9E3779B97F4A7C15ull ^ (unsigned long long)from_file};
        const Text *src = &s.t[below(&r, s.n)];
        Text t = {0};
        text_add(&t, src->p, src->len);
        for (size_t k = 1 + below(&r, 4); k > 0; k--)
            mutate(&r, &t, &s);
        char err[512] = "";
        Pipeline *p = (Pipeline *)&r; /* must be set */
        int rc;
        if (from_file) {
            FILE *f = fopen(path, "wb");
            T_CHECK(f != NULL);
            T_EQ(fwrite(t.p, 1, t.len, f), t.len);
            T_EQ(fclose(f), 0);
            rc = pipeline_load(path, stage_kind_specs, &p, err, sizeof err);
        } else {
            rc = pipeline_parse("fuzz.yml", t.p, t.len, stage_kind_specs, &p, err, sizeof err);
        }
        const char *bad = verdict(from_file ? path : "fuzz.yml", &t, rc, p, err);
        if (bad || (only && *only)) {
            fprintf(stderr, "%s iteration %llu of seed %llu (replay: PICKLINE_FUZZ_SEED=%llu "
                    "PICKLINE_FUZZ_ONLY=%llu): %s\n--- input\n", bad ? "FAILED" : "ran", i, seed,
                    seed, i, bad ? bad : err[0] ? err : "loaded");
            show_text(&t);
        }
        if (bad)
            t_fail(__FILE__, __LINE__, "%s", bad);
        if (rc == 0) {
            ok++;
            pipeline_free(p);
        } else {
            refused++;
        }
        free(t.p);
    }
    fprintf(stderr, "fuzz (%s): seed %llu, %llu iterations from %zu seeds (%d examples, %d from "
            "the python tests, %d more that do not load as they are left out): %llu loaded, %llu "
            "refused with FILE:LINE\n", from_file ? "pipeline_load" : "pipeline_parse", seed,
            n - first, s.n, s.examples, s.py, s.py_dropped, ok, refused);
    /* The mutations are mild enough that some files still load. */
    T_CHECK(only || ok > 0);
    T_CHECK(only || refused > 0);
    seeds_free(&s);
}

static void fuzz_parse(void)
{
    fuzz(0);
}

static void fuzz_load(void)
{
    fuzz(1);
}

/* Every seed loads as it is (else the fuzz would start from errors; the
 * python tests' pipelines that do not are left out already). */
static void seeds_load_clean(void)
{
    Seeds s = seeds_load();
    for (size_t i = 0; i < s.n; i++) {
        char err[512] = "";
        Pipeline *p = NULL;
        int rc = pipeline_parse("seed.yml", s.t[i].p, s.t[i].len, stage_kind_specs, &p, err, sizeof err);
        if (rc != 0) {
            show_text(&s.t[i]);
            t_fail(__FILE__, __LINE__, "seed %zu does not load: %s", i, err);
        }
        pipeline_free(p);
    }
    seeds_free(&s);
}

static const TCase cases[] = {
    T_CASE(seeds_load_clean),
    T_CASE(fuzz_parse),
    T_CASE(fuzz_load),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, "pipefuzz", cases);
}
