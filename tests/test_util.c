/* test_util.c: engine/core/util.c: pl_oneline folds other programs'
 * multi-line messages into one line without writing past its buffer, and
 * the log is one line per event in text and in JSON (valid UTF-8 whatever
 * the message holds), to a file that pl_log_reopen opens again. */
#include "t.h"
#include "pl.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void oneline_folds(void)
{
    char s[128];
    snprintf(s, sizeof s, "a\nb");
    T_CHECK(strcmp(pl_oneline(s, sizeof s), "a; b") == 0);
    snprintf(s, sizeof s, "connection to server failed: Connection refused\n\tIs the server "
             "running?\n");
    T_CHECK(strcmp(pl_oneline(s, sizeof s), "connection to server failed: Connection refused; "
                   "Is the server running?") == 0);
    snprintf(s, sizeof s, "ERROR:  x  \r\nDETAIL:  y\n\n\n");
    T_CHECK(strcmp(pl_oneline(s, sizeof s), "ERROR:  x; DETAIL:  y") == 0);
    snprintf(s, sizeof s, "\n\nlead\ttab\x01" "bell\x7f");
    T_CHECK(strcmp(pl_oneline(s, sizeof s), "lead tab bell ") == 0);
    /* Every break grows by a byte: what does not fit is cut, the NUL kept. */
    char small[8];
    snprintf(small, sizeof small, "a\nb\nc\nd");
    T_CHECK(strcmp(pl_oneline(small, sizeof small), "a; b; c") == 0);
    char big[4000];
    for (size_t i = 0; i < sizeof big - 1; i++)
        big[i] = i % 2 ? '\n' : 'x';
    big[sizeof big - 1] = '\0';
    pl_oneline(big, sizeof big);
    T_CHECK(strlen(big) < sizeof big && strncmp(big, "x; x; x", 7) == 0);
}

/* read_file returns the file at path (malloc'd). */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    static char none[] = "";
    if (!f)
        return none;
    char *b = calloc(1, 1 << 16);
    size_t n = fread(b, 1, (1 << 16) - 1, f);
    b[n] = '\0';
    fclose(f);
    return b;
}

static void log_lines_and_reopen(void)
{
    char path[4200], moved[4300];
    mkdir(t_dir(), 0700);
    snprintf(path, sizeof path, "%s/x.log", t_dir());
    snprintf(moved, sizeof moved, "%s.1", path);
    T_OK(pl_log_open(path));
    T_CHECK(strcmp(pl_log_path(), path) == 0);
    pl_log_format = PL_LOG_TEXT;
    pl_logx(PL_LOG_WARN, "geocode", 42, "two\nlines");
    pl_log_format = PL_LOG_JSON;
    pl_logx(PL_LOG_ERROR, "st\"age", 0, "bad \xff byte, \"quoted\", tab\t%s", "end");
    pl_log(PL_LOG_DEBUG, "not written: above the level");
    T_CHECK(rename(path, moved) == 0);
    T_OK(pl_log_reopen());
    pl_log(PL_LOG_INFO, "after");
    char *a = read_file(moved), *b = read_file(path);
    T_CHECK(strstr(a, " warn stage=geocode job=42 two; lines\n") != NULL);
    T_CHECK(strstr(a, "\"level\":\"error\",\"message\":\"bad \\ufffd byte, \\\"quoted\\\", tab end\","
                      "\"stage\":\"st\\\"age\",\"job\":null}\n") != NULL);
    T_CHECK(strstr(a, "not written") == NULL);
    T_CHECK(strstr(a, "after") == NULL);
    T_CHECK(strstr(b, "\"message\":\"after\",\"stage\":null,\"job\":null}\n") != NULL);
    T_CHECK(strncmp(b, "{\"time\":\"", 9) == 0 && b[9 + 19] == '.' && b[9 + 23] == 'Z');
    free(a);
    free(b);
    T_EQ(pl_log_level_parse("debug"), PL_LOG_DEBUG);
    T_EQ(pl_log_level_parse("loud"), -1);
    T_EQ(pl_log_format_parse("json"), PL_LOG_JSON);
    T_EQ(pl_log_format_parse("xml"), -1);
}

static const TCase cases[] = {
    T_CASE(oneline_folds),
    T_CASE(log_lines_and_reopen),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, "util", cases);
}
