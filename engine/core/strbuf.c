/* strbuf.c: Strbuf (strbuf.h). Capacity doubles from 64 bytes, so n bytes
 * appended one at a time cost O(n) copies in all. */
#include "strbuf.h"

#include "pl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_CHUNK 65536 /* sb_read: free room before each fread */

/* An empty Strbuf points here, so buf is always a NUL-terminated string;
 * cap == 0 means buf is not ours to free or write. */
char sb_slop[1];

void sb_init(Strbuf *b)
{
    b->buf = sb_slop;
    b->len = b->cap = 0;
}

void sb_free(Strbuf *b)
{
    if (!b)
        return;
    if (b->cap)
        free(b->buf);
    sb_init(b);
}

void sb_reset(Strbuf *b)
{
    b->len = 0;
    if (b->cap)
        b->buf[0] = '\0';
}

void sb_grow0(Strbuf *b, size_t n)
{
    size_t need, cap;

    PL_ASSERT(n < SIZE_MAX / 2 - b->len, "a Strbuf stays under SIZE_MAX / 2");
    need = b->len + n + 1;
    if (need <= b->cap)
        return;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    if (b->cap) {
        b->buf = xrealloc(b->buf, cap);
    } else {
        PL_ASSERT(b->len == 0, "a Strbuf without storage is empty");
        b->buf = xmalloc(cap);
        b->buf[0] = '\0';
    }
    b->cap = cap;
}

void sb_setlen(Strbuf *b, size_t len)
{
    PL_ASSERT(len < b->cap || (len == 0 && b->cap == 0), "sb_setlen stays inside the buffer");
    b->len = len;
    if (b->cap)
        b->buf[len] = '\0';
}

void sb_add(Strbuf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    sb_grow(b, n);
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

void sb_adds(Strbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

void sb_addf(Strbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    sb_grow(b, 64);
    va_start(ap, fmt);
    n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    PL_ASSERT(n >= 0, "sb_addf's format is valid");
    if ((size_t)n >= b->cap - b->len) {
        sb_grow(b, (size_t)n);
        va_start(ap, fmt);
        n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

/* add_decimal appends mag in decimal, after a '-' when neg. */
static void add_decimal(Strbuf *b, uint64_t mag, int neg)
{
    char t[21];
    size_t i = sizeof t;
    do {
        t[--i] = (char)('0' + mag % 10);
        mag /= 10;
    } while (mag);
    if (neg)
        t[--i] = '-';
    sb_add(b, t + i, sizeof t - i);
}

void sb_add_u64(Strbuf *b, uint64_t v)
{
    add_decimal(b, v, 0);
}

void sb_add_i64(Strbuf *b, int64_t v)
{
    add_decimal(b, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, v < 0);
}

int sb_read(Strbuf *b, FILE *f, size_t max)
{
    for (;;) {
        sb_grow(b, READ_CHUNK);
        size_t k = fread(b->buf + b->len, 1, b->cap - b->len - 1, f);
        b->len += k;
        b->buf[b->len] = '\0';
        if (b->len > max)
            return EFBIG;
        if (k == 0)
            return ferror(f) ? (errno ? errno : EIO) : 0;
    }
}
