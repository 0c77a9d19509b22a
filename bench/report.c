/* report.c: the bench programs' table and JSON lines (report.h). */
#include "report.h"

#include "row.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int json_out;

static void json_str(const char *s)
{
    Strbuf b;
    sb_init(&b);
    sb_add_json_string(&b, s, strlen(s));
    fputs(b.buf, stdout);
    sb_free(&b);
}

int report_json(void)
{
    return json_out;
}

void report_init(int json, int argc, char **argv)
{
    char cmd[2048] = "";
    json_out = json;
    for (int i = 0; i < argc; i++)
        snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), "%s%s", i ? " " : "", argv[i]);
    if (json_out) {
        printf("{\"name\":\"command\",\"command\":");
        json_str(cmd);
        printf("}\n");
    } else {
        printf("%s\n", cmd);
        printf("%-46s %12s %-8s %12s %8s  %-9s %s\n", "workload", "pickline", "unit", "peer", "ratio",
               "target", "(peer)");
    }
    fflush(stdout);
}

void report_row(const char *name, const char *label, const char *params, double v, const char *unit,
                const char *peer, double pv, const char *target)
{
    if (json_out) {
        printf("{\"name\":\"%s\",\"parameters\":{%s},\"value\":%.6g,\"unit\":", name,
               params ? params : "", v);
        json_str(unit);
        if (peer && pv > 0) {
            printf(",\"peer\":");
            json_str(peer);
            printf(",\"peer_value\":%.6g,\"ratio\":%.4g", pv, v / pv);
        }
        if (target) {
            printf(",\"target\":");
            json_str(target);
        }
        printf("}\n");
    } else {
        char tail[300] = "";
        if (peer && pv > 0)
            snprintf(tail, sizeof tail, "%12.1f %7.2fx  %-9s (%s)", pv, v / pv, target ? target : "",
                     peer);
        else if (target)
            snprintf(tail, sizeof tail, "%12s %8s  %-9s", "", "", target);
        printf("%-46s %12.1f %-8s %s\n", label, v, unit, tail);
    }
    fflush(stdout);
}

void report_note(const char *name, const char *params, const char *text)
{
    if (json_out) {
        printf("{\"name\":\"%s\",\"parameters\":{%s},\"skipped\":", name, params ? params : "");
        json_str(text);
        printf("}\n");
    } else {
        printf("%-46s %s\n", name, text);
    }
    fflush(stdout);
}

void report_info(const char *label, double v, const char *unit, const char *extra)
{
    if (json_out)
        return;
    printf("  %-44s %12.1f %-8s %s\n", label, v, unit, extra ? extra : "");
    fflush(stdout);
}

void report_text(const char *fmt, ...)
{
    if (json_out)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}
