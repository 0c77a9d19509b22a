/* cli.h: what pickline's command-line tools (qctl, qload) share, as Redis's
 * cli_common.c serves redis-cli and redis-benchmark: exit statuses, the
 * "PROG: ..." messages on stderr, a table of flags and its parsing and help,
 * numbers and seconds read from the command line, and the human formats of
 * durations, sizes and times, excerpts of text and an aligned table.
 *
 * A tool sets cli_prog to its name first; then every message starts with it.
 * Nothing here exits: the tool's main() does, with the status a function
 * returned. */
#ifndef CLI_H
#define CLI_H


#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The exit statuses of every tool: DESIGN's command contract. */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* CLI_DEFAULT_DIR is the data directory when neither --data nor
 * $PICKLINE_DATA names one. */
#define CLI_DEFAULT_DIR "./pickline-data"

/* cli_prog is the tool's name, the prefix of every message ("qctl"). */
extern const char *cli_prog;

/* ------------------------------------------------------------- messages */

/* cli_note prints "PROG: ..." and a newline on stderr; cli_vnote takes a
 * va_list. */
void cli_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_vnote(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* cli_errorf prints as cli_note and returns CLI_FAIL. */
int cli_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* cli_usage prints as cli_note, then hint when not NULL (a line that says
 * where the usage is explained), and returns CLI_USAGE. */
int cli_usage(const char *hint, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* cli_data_dir returns the data directory: given when set, else
 * $PICKLINE_DATA when set and not empty, else CLI_DEFAULT_DIR. */
const char *cli_data_dir(const char *given);

/* ---------------------------------------------------------------- flags */

/* CliFlag: one flag of a tool or a command, "--name". meta names its value
 * in the help ("DIR"); NULL makes it a switch, which takes no value. help
 * is its line in the help; further lines (after a "\n") are indented under
 * the first. */
typedef struct CliFlag {
    const char *name, *meta, *help;
} CliFlag;

/* cli_flag_find returns the index of the flag named name[0..n) among the
 * first max of flags (they end early at one with a NULL name), or -1. */
int cli_flag_find(const CliFlag *flags, size_t max, const char *name, size_t n);

/* What cli_flag_take found in argv. */
enum {
    CLI_ARG_NONE = -1,  /* not a flag of the table (or not a flag at all) */
    CLI_ARG_NOVALUE = -2, /* a flag that takes a value, and none follows */
    CLI_ARG_SWITCH = -3  /* a switch given a value ("--quiet=1") */
};

/* cli_flag_take reads the flag at argv[*i] against the first max of flags:
 * "--name" or, when eq is set, "--name=VALUE". A flag that takes
 * a value gets the text after '=' or else the next argument (whatever it
 * looks like; *i moves past it); a switch gets "". Returns the flag's index
 * with *val set, or a CLI_ARG_ code; for CLI_ARG_NOVALUE and CLI_ARG_SWITCH
 * *flag is the index of the flag concerned. The caller words the message. */
int cli_flag_take(const CliFlag *flags, size_t max, int eq, int argc, char **argv, int *i,
                  const char **val, int *flag);

/* cli_flags_help prints one line per flag of flags (the first max, or up to
 * one with a NULL name): "  --name META" padded to width, a space, then its
 * help; the help's further lines start under its first. */
void cli_flags_help(FILE *f, const CliFlag *flags, size_t max, int width);

/* -------------------------------------------------------------- numbers */

/* cli_parse_u64 parses s, decimal digits only (no sign, no space), as a
 * number in [min, max]. Returns 0, or -1 when it is not one. */
int cli_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* cli_parse_ms parses seconds, "N" or "N.F" (0.25), into milliseconds in
 * [min, max]; digits past the third decimal must be 0. 0 or -1. */
int cli_parse_ms(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* cli_grow returns array v (of *cap elements of size bytes, n of them in
 * use) with room for one more: the same, or moved to twice the capacity
 * (first elements the first time). Out of memory aborts (xrealloc). */
void *cli_grow(void *v, size_t n, size_t *cap, size_t size, size_t first);

/* -------------------------------------------------------- human formats */

/* CliStr: a short formatted text returned by value (no allocation). */
typedef struct CliStr {
    char s[64];
} CliStr;

/* cli_secs formats milliseconds as exact seconds: "60", "0.25". */
CliStr cli_secs(uint64_t ms);

/* cli_dur formats a span of time: "350ms", "12.3s", "5m03s", "2h10m", "3d04h". */
CliStr cli_dur(uint64_t ms);

/* cli_size formats bytes: "512 B", "1.5 MiB". */
CliStr cli_size(uint64_t n);

/* cli_clock formats epoch milliseconds as local time: "2024-02-29 23:59:59". */
CliStr cli_clock(uint64_t ms);

/* cli_due says when due (epoch ms, 0 for none) comes relative to now:
 * "in 5.0s", "3m01s ago", "-". */
CliStr cli_due(uint64_t due, uint64_t now);

/* cli_put_text writes s[0..n) for a terminal: control bytes and bytes
 * outside well-formed UTF-8 become escapes (\n, \t, \xNN). */
void cli_put_text(FILE *f, const char *s, size_t n);

/* cli_excerpt returns (malloc'd) at most cols characters of s[0..n) for one
 * table cell: runs of whitespace and control bytes become one space, bytes
 * outside UTF-8 '?', and a cut text ends in "...". */
char *cli_excerpt(const char *s, size_t n, size_t cols);

/* ---------------------------------------------------------------- table */

/* CliTable: rows of cells printed in aligned columns. Set ncol (at most
 * 16), head (ncol titles) and align (ncol of 'l' or 'r'); add the cells
 * row by row with cli_table_add; print; free (the cells, not head). */
typedef struct CliTable {
    size_t ncol, n, cap;
    const char *const *head;
    const char *align;
    char **cell;
} CliTable;

/* cli_table_add appends the next cell, formatted. */
void cli_table_add(CliTable *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* cli_table_print writes the header and the rows to f; widths count
 * characters, not bytes. */
void cli_table_print(const CliTable *t, FILE *f);

/* cli_table_free frees the cells; t can be filled again. */
void cli_table_free(CliTable *t);

#endif
