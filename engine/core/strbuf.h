/* strbuf.h: Strbuf, a growable byte buffer (git's strbuf.h, small).
 *
 * buf always holds a NUL after its len bytes, so it reads as a C string
 * when the data has none. A Strbuf that owns no memory (cap 0: after
 * sb_init, sb_free, or SB_INIT) points at a shared empty string that must
 * not be written: sb_init never allocates, and the first append does. A
 * Strbuf zeroed with memset or calloc takes appends too, but its buf is
 * NULL until the first one.
 *
 * Appends never fail: out of memory aborts (pl.h), and a Strbuf stays
 * under SIZE_MAX / 2 bytes (an assertion). The fields are read-write for
 * code that fills the buffer itself: sb_grow first, write at buf + len,
 * then sb_setlen (or set len and the NUL by hand). */
#ifndef PL_STRBUF_H
#define PL_STRBUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct Strbuf {
    char *buf;      /* the bytes, then a NUL */
    size_t len;     /* bytes in buf, the NUL not counted */
    size_t cap;     /* bytes allocated, the NUL counted; 0: buf is not ours */
} Strbuf;

extern char sb_slop[];
#define SB_INIT {sb_slop, 0, 0}

/* sb_init makes b empty without allocating. sb_free releases b's memory
 * and leaves it as sb_init does (NULL: a no-op); sb_reset empties b and
 * keeps its memory for reuse. */
void sb_init(Strbuf *b);
void sb_free(Strbuf *b);
void sb_reset(Strbuf *b);

/* sb_grow makes room for n more bytes after len (and the NUL), so that a
 * writer may fill buf[len .. len + n) directly. */
void sb_grow0(Strbuf *b, size_t n);
static inline void sb_grow(Strbuf *b, size_t n)
{
    if (n >= b->cap - b->len) /* cap 0: always, so that the first append allocates */
        sb_grow0(b, n);
}

/* sb_setlen sets len (at most cap - 1: bytes the caller wrote after
 * sb_grow, or fewer: undoing appends) and writes the NUL after it. */
void sb_setlen(Strbuf *b, size_t len);

/* sb_add appends n bytes of p (NULs included); sb_adds appends the string
 * s; sb_addf appends printf's text. */
void sb_add(Strbuf *b, const void *p, size_t n);
void sb_adds(Strbuf *b, const char *s);
void sb_addf(Strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* sb_add_u64 and sb_add_i64 append v in decimal ("-" first when negative). */
void sb_add_u64(Strbuf *b, uint64_t v);
void sb_add_i64(Strbuf *b, int64_t v);

/* sb_read appends everything f holds until its end. Returns 0, EFBIG once
 * b holds more than max bytes (what was read stays in b), or the errno of
 * a failed read. */
int sb_read(Strbuf *b, FILE *f, size_t max);

#endif
