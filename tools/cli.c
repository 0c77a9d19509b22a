/* cli.c: what the command-line tools share (see cli.h). */
#include "cli.h"

#include "json.h"
#include "pl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *cli_prog = "pickline";

/* ------------------------------------------------------------- messages */

void cli_vnote(const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: ", cli_prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void cli_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cli_vnote(fmt, ap);
    va_end(ap);
}

int cli_errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cli_vnote(fmt, ap);
    va_end(ap);
    return CLI_FAIL;
}

int cli_usage(const char *hint, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cli_vnote(fmt, ap);
    va_end(ap);
    if (hint)
        fputs(hint, stderr);
    return CLI_USAGE;
}

const char *cli_data_dir(const char *given)
{
    const char *env = getenv("PICKLINE_DATA");
    if (given)
        return given;
    return env && *env ? env : CLI_DEFAULT_DIR;
}

/* ---------------------------------------------------------------- flags */

int cli_flag_find(const CliFlag *flags, size_t max, const char *name, size_t n)
{
    for (size_t i = 0; i < max && flags[i].name; i++)
        if (strlen(flags[i].name) == n && memcmp(flags[i].name, name, n) == 0)
            return (int)i;
    return -1;
}

int cli_flag_take(const CliFlag *flags, size_t max, int eq, int argc, char **argv, int *i,
                  const char **val, int *flag)
{
    const char *a = argv[*i], *v = NULL;
    int k = -1;

    if (a[0] != '-' || a[1] != '-')
        return CLI_ARG_NONE;
    const char *name = a + 2, *e = eq ? strchr(name, '=') : NULL;
    k = cli_flag_find(flags, max, name, e ? (size_t)(e - name) : strlen(name));
    v = e ? e + 1 : NULL;
    if (k < 0)
        return CLI_ARG_NONE;
    *flag = k;
    if (!flags[k].meta) {
        if (v)
            return CLI_ARG_SWITCH;
        *val = "";
        return k;
    }
    if (!v && *i + 1 < argc)
        v = argv[++*i];
    if (!v)
        return CLI_ARG_NOVALUE;
    *val = v;
    return k;
}

void cli_flags_help(FILE *f, const CliFlag *flags, size_t max, int width)
{
    for (size_t i = 0; i < max && flags[i].name; i++) {
        const char *h = flags[i].help, *nl;
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", flags[i].name, flags[i].meta ? " " : "",
                 flags[i].meta ? flags[i].meta : "");
        fprintf(f, "  %-*s ", width, left);
        while ((nl = strchr(h, '\n')) != NULL) {
            fprintf(f, "%.*s\n%*s", (int)(nl - h), h, width + 3, "");
            h = nl + 1;
        }
        fprintf(f, "%s\n", h);
    }
}

/* -------------------------------------------------------------- numbers */

int cli_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return -1; /* strtoull would take " 1", "+1" and wrap "-1" */
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_ms(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char ip[24];
    const char *dot;
    uint64_t whole, ms = 0;
    size_t n;

    if (!s || !*s)
        return -1;
    dot = strchr(s, '.');
    n = dot ? (size_t)(dot - s) : strlen(s);
    if (n == 0 || n >= sizeof ip)
        return -1;
    memcpy(ip, s, n);
    ip[n] = '\0';
    if (cli_parse_u64(ip, 0, UINT64_MAX / 1000 - 1, &whole))
        return -1;
    if (dot) {
        const char *f = dot + 1;
        if (!*f)
            return -1;
        for (int i = 0; f[i]; i++) {
            if (f[i] < '0' || f[i] > '9')
                return -1;
            if (i < 3)
                ms += (uint64_t)(f[i] - '0') * (i == 0 ? 100 : i == 1 ? 10 : 1);
            else if (f[i] != '0')
                return -1; /* finer than a millisecond */
        }
    }
    ms += whole * 1000;
    if (ms < min || ms > max)
        return -1;
    *out = ms;
    return 0;
}

void *cli_grow(void *v, size_t n, size_t *cap, size_t size, size_t first)
{
    if (n < *cap)
        return v;
    *cap = *cap ? *cap * 2 : first;
    return xrealloc(v, *cap * size);
}

/* -------------------------------------------------------- human formats */

CliStr cli_secs(uint64_t ms)
{
    CliStr r;
    int n = snprintf(r.s, sizeof r.s, "%" PRIu64 ".%03u", ms / 1000, (unsigned)(ms % 1000));
    while (n > 0 && r.s[n - 1] == '0')
        r.s[--n] = '\0';
    if (n > 0 && r.s[n - 1] == '.')
        r.s[--n] = '\0';
    return r;
}

CliStr cli_dur(uint64_t ms)
{
    CliStr r;
    if (ms < 1000)
        snprintf(r.s, sizeof r.s, "%" PRIu64 "ms", ms);
    else if (ms < 60000)
        snprintf(r.s, sizeof r.s, "%.1fs", (double)ms / 1000);
    else if (ms < 3600000)
        snprintf(r.s, sizeof r.s, "%um%02us", (unsigned)(ms / 60000), (unsigned)(ms / 1000 % 60));
    else if (ms < 86400000)
        snprintf(r.s, sizeof r.s, "%uh%02um", (unsigned)(ms / 3600000), (unsigned)(ms / 60000 % 60));
    else
        snprintf(r.s, sizeof r.s, "%" PRIu64 "d%02uh", ms / 86400000, (unsigned)(ms / 3600000 % 24));
    return r;
}

CliStr cli_size(uint64_t n)
{
    static const char *const unit[] = {"KiB", "MiB", "GiB", "TiB"};
    CliStr r;
    double v = (double)n;
    int u = -1;
    while (v >= 1024 && u < 3) {
        v /= 1024;
        u++;
    }
    if (u < 0)
        snprintf(r.s, sizeof r.s, "%" PRIu64 " B", n);
    else
        snprintf(r.s, sizeof r.s, "%.1f %s", v, unit[u]);
    return r;
}

CliStr cli_clock(uint64_t ms)
{
    CliStr r;
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(r.s, sizeof r.s, "%Y-%m-%d %H:%M:%S", &tm);
    return r;
}

CliStr cli_due(uint64_t due, uint64_t now)
{
    CliStr r;
    if (!due)
        snprintf(r.s, sizeof r.s, "-");
    else if (due >= now)
        snprintf(r.s, sizeof r.s, "in %.48s", cli_dur(due - now).s);
    else
        snprintf(r.s, sizeof r.s, "%.48s ago", cli_dur(now - due).s);
    return r;
}

void cli_put_text(FILE *f, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t k = p[i] < 0x80 ? 1 : json_utf8_len(p + i, n - i);
        if (k > 1 || (k == 1 && p[i] >= 0x20 && p[i] != 0x7F)) {
            fwrite(p + i, 1, k, f);
            i += k;
            continue;
        }
        if (p[i] == '\n')
            fputs("\\n", f);
        else if (p[i] == '\t')
            fputs("\\t", f);
        else
            fprintf(f, "\\x%02x", p[i]);
        i++;
    }
}

char *cli_excerpt(const char *s, size_t n, size_t cols)
{
    const unsigned char *p = (const unsigned char *)s;
    char *out = xmalloc((cols + 2) * 4 + 4);
    size_t o = 0, w = 0, i = 0;
    int space = 0;

    while (i < n && w <= cols) {
        size_t k = json_utf8_len(p + i, n - i);
        if (p[i] <= 0x20 || p[i] == 0x7F) {
            space = w > 0;
            i++;
            continue;
        }
        if (space) {
            out[o++] = ' ';
            w++;
            space = 0;
        }
        if (k == 0) {
            out[o++] = '?';
            k = 1;
        } else {
            memcpy(out + o, p + i, k);
            o += k;
        }
        w++;
        i += k;
    }
    if (w > cols) { /* keep cols - 3 characters and mark the cut */
        size_t keep = cols > 3 ? cols - 3 : 0, b = 0;
        for (size_t c = 0; c < keep; c++)
            do
                b++;
            while (b < o && ((unsigned char)out[b] & 0xC0) == 0x80);
        o = b;
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

/* ---------------------------------------------------------------- table */

void cli_table_add(CliTable *t, const char *fmt, ...)
{
    va_list ap;
    char *s;
    va_start(ap, fmt);
    int rc = vasprintf(&s, fmt, ap);
    va_end(ap);
    PL_ASSERT(rc >= 0, "vasprintf has memory for a table cell");
    t->cell = cli_grow(t->cell, t->n, &t->cap, sizeof *t->cell, 64);
    t->cell[t->n++] = s;
}

/* width counts characters, not bytes (UTF-8 continuation bytes are free). */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

void cli_table_print(const CliTable *t, FILE *f)
{
    size_t w[16] = {0};
    PL_ASSERT(t->ncol <= 16, "a table has at most 16 columns");
    for (size_t c = 0; c < t->ncol; c++)
        w[c] = width(t->head[c]);
    for (size_t i = 0; i < t->n; i++) {
        size_t k = width(t->cell[i]);
        if (k > w[i % t->ncol])
            w[i % t->ncol] = k;
    }
    for (size_t r = 0; r <= t->n / t->ncol; r++) { /* row 0: the header */
        for (size_t c = 0; c < t->ncol; c++) {
            const char *s = r == 0 ? t->head[c] : t->cell[(r - 1) * t->ncol + c];
            size_t pad = w[c] - width(s);
            int last = c + 1 == t->ncol;
            if (t->align[c] == 'r')
                fprintf(f, "%*s%s", (int)pad, "", s);
            else
                fprintf(f, "%s%*s", s, last ? 0 : (int)pad, "");
            fputs(last ? "\n" : "  ", f);
        }
    }
}

void cli_table_free(CliTable *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->cell[i]);
    free(t->cell);
    t->cell = NULL;
    t->n = t->cap = 0;
}
