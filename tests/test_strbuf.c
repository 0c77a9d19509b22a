/* test_strbuf.c: engine/core/strbuf.c: appends keep the NUL after the
 * data, empty buffers own nothing, sb_grow/sb_setlen let a writer fill the
 * buffer itself, and sb_read reads a whole file up to a limit. */
#include "t.h"
#include "pl.h"
#include "strbuf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void appends(void)
{
    Strbuf b, z = {0};

    sb_init(&b);
    T_CHECK(b.buf && b.buf[0] == '\0' && b.len == 0 && b.cap == 0);
    sb_reset(&b);
    sb_free(&b);
    T_CHECK(b.buf && b.buf[0] == '\0');
    for (int i = 0; i < 100; i++)
        sb_addf(&b, "%d-%s,", i, "abcdefghijklmnopqrstuvwxyz");
    T_CHECK(strncmp(b.buf, "0-abc", 5) == 0 && b.len == strlen(b.buf));
    T_CHECK(strstr(b.buf, "99-abcdefghijklmnopqrstuvwxyz,") != NULL);
    sb_reset(&b);
    T_CHECK(b.len == 0 && b.buf[0] == '\0');
    sb_addf(&b, "%s", "");
    T_CHECK(b.len == 0 && b.buf[0] == '\0');
    sb_add(&b, "a\0b", 3);
    T_EQ(b.len, 3);
    T_EQ(b.buf[3], '\0');
    sb_free(&b);
    T_CHECK(b.cap == 0 && b.len == 0 && b.buf[0] == '\0');
    /* A zeroed Strbuf takes appends too. */
    sb_addf(&z, "%d", 7);
    sb_adds(&z, "x");
    T_CHECK(strcmp(z.buf, "7x") == 0);
    sb_free(&z);
    sb_free(NULL);
}

/* grow_and_setlen: a writer that fills buf itself after sb_grow, and
 * sb_setlen undoing appends. */
static void grow_and_setlen(void)
{
    Strbuf b = SB_INIT;

    sb_setlen(&b, 0); /* on an empty buffer: nothing to write */
    T_CHECK(b.cap == 0 && b.buf[0] == '\0');
    sb_grow(&b, 1000);
    T_CHECK(b.cap >= 1001);
    memset(b.buf, 'x', 1000);
    sb_setlen(&b, 1000);
    T_EQ(b.len, 1000);
    T_EQ(b.buf[1000], '\0');
    size_t cap = b.cap;
    sb_grow(&b, b.cap - b.len - 1); /* fits exactly: no growth */
    T_EQ(b.cap, cap);
    sb_grow(&b, b.cap - b.len);     /* one more: grows */
    T_CHECK(b.cap > cap);
    sb_adds(&b, "tail");
    sb_setlen(&b, 3);
    T_CHECK(strcmp(b.buf, "xxx") == 0);
    sb_free(&b);
}

static void numbers(void)
{
    Strbuf b = SB_INIT;
    sb_add_u64(&b, 0);
    sb_adds(&b, " ");
    sb_add_u64(&b, UINT64_MAX);
    sb_adds(&b, " ");
    sb_add_i64(&b, INT64_MIN);
    sb_adds(&b, " ");
    sb_add_i64(&b, -7);
    sb_adds(&b, " ");
    sb_add_i64(&b, INT64_MAX);
    T_CHECK(strcmp(b.buf, "0 18446744073709551615 -9223372036854775808 -7 9223372036854775807") == 0);
    sb_free(&b);
}

static FILE *file_of(size_t n)
{
    FILE *f = tmpfile();
    T_CHECK(f != NULL);
    for (size_t i = 0; i < n; i++)
        putc('a' + (int)(i % 26), f);
    rewind(f);
    return f;
}

/* read_file: sb_read appends a whole file (past its read chunk), and says
 * EFBIG past max with what it read kept. */
static void read_file(void)
{
    Strbuf b = SB_INIT;
    FILE *f = file_of(200000);

    sb_adds(&b, ">");
    T_OK(sb_read(&b, f, SIZE_MAX - 1));
    T_EQ(b.len, 200001);
    T_EQ(b.buf[200001], '\0');
    T_CHECK(b.buf[0] == '>' && b.buf[1] == 'a' && b.buf[200000] == 'a' + (199999 % 26));
    fclose(f);

    /* An empty file; one a byte over max (EFBIG, what was read kept); one
     * of max bytes. */
    static const struct {
        size_t size, max;
        int rc;
        size_t len;
    } reads[] = {{0, 0, 0, 0}, {100, 99, EFBIG, 100}, {100, 100, 0, 100}};
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
        sb_reset(&b);
        f = file_of(reads[i].size);
        T_ERR(sb_read(&b, f, reads[i].max), reads[i].rc);
        T_EQ(b.len, reads[i].len);
        fclose(f);
    }
    sb_free(&b);
}

static const TCase cases[] = {
    T_CASE(appends),
    T_CASE(grow_and_setlen),
    T_CASE(numbers),
    T_CASE(read_file),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, "strbuf", cases);
}
