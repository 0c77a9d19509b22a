/* report.h: how every bench program prints its rows (DESIGN.md: "Every
 * bench program prints a human table, and with --json one JSON object per
 * measured row (name, parameters, value, unit, and the peer's value and
 * ratio where one was measured in the same run)").
 *
 * Human form: one line per row, label, value, unit, and when a peer was
 * measured its value, the ratio and the peer's name, then the target.
 * JSON form: {"name","parameters":{...},"value","unit"[,"peer","peer_value",
 * "ratio"][,"target"]} per row, {"name","parameters","skipped"} for a row
 * that could not be measured. Each line is flushed as it is printed, so a
 * long run shows its progress. Not thread-safe: print from one thread. */
#ifndef PL_BENCH_REPORT_H
#define PL_BENCH_REPORT_H

/* report_init chooses the form (json != 0: JSON lines) and prints the
 * header: the command line (argc, argv) and, in the human form, the
 * column titles. */
void report_init(int json, int argc, char **argv);

/* report_json says whether rows print as JSON. */
int report_json(void);

/* report_row prints one measured row. params: the members of the JSON
 * "parameters" object without braces ("\"rows\":300000,..."), may be "".
 * peer (may be NULL) names the peer measured in the same run, pv its value
 * (a ratio is printed when pv > 0). target (may be NULL): the goal, as
 * text ("\u2265 0.5x"). */
void report_row(const char *name, const char *label, const char *params, double v, const char *unit,
                const char *peer, double pv, const char *target);

/* report_note prints a row that measured nothing (a peer missing, a
 * failure) with the reason. */
void report_note(const char *name, const char *params, const char *text);

/* report_info prints a line of the human table only (a detail, a round);
 * extra (may be NULL) follows the unit. Nothing in the JSON form. */
void report_info(const char *label, double v, const char *unit, const char *extra);

/* report_text prints a free line in the human form only (a section title). */
void report_text(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
