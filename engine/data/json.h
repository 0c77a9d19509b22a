/* json.h: checking JSON bodies and writing JSON output.
 *
 * Job bodies are opaque bytes to the queue engine; the tools (qctl, the HTTP
 * listener) accept only JSON, checked here with yajl's streaming parser. The
 * writers below spell JSON strings one way for everyone: into a Strbuf (rows,
 * replies, messages) or a FILE (the tools' --json output, export's NDJSON).
 * The small reader (json_object_next, json_string_decode) walks a text that
 * json_validate has already accepted, so that a body can be sliced out of
 * an NDJSON line byte for byte instead of re-encoded. */
#ifndef PL_JSON_H
#define PL_JSON_H

#include "strbuf.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <yajl/yajl_parse.h>

/* json_validate checks that buf[0..len) is exactly one JSON value (RFC 8259),
 * surrounded by optional whitespace, and that the whole text is well-formed
 * UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF). Returns 0,
 * or PL_EINVAL with a NUL-terminated message in err (if err and errlen) that
 * says what and where, e.g. "invalid JSON at byte 17: unallowed token at
 * this point in JSON text (near ',]')" or "invalid UTF-8 at byte 4:
 * overlong encoding". Byte offsets count from 0. Numbers of any size are
 * accepted (they are not converted). */
int json_validate(const void *buf, size_t len, char *err, size_t errlen);

/* json_validate_slow(1) makes json_validate use only yajl and the UTF-8
 * scan, (0) its own checker first (the default): a seam for tests that
 * compare the two. Not thread-safe; set it before any check. */
void json_validate_slow(int on);

/* json_yajl_alloc returns a yajl parser (yajl_alloc: callbacks cb, NULL
 * for none, and their ctx) that allocates through pl.h's wrappers, so out
 * of memory aborts; never NULL. Free it with yajl_free. */
yajl_handle json_yajl_alloc(const yajl_callbacks *cb, void *ctx);

/* json_utf8_bad returns the offset of the first byte of buf[0..len) that
 * does not start a well-formed UTF-8 sequence, or len when all is well. */
size_t json_utf8_bad(const void *buf, size_t len);

/* json_utf8_len returns the length (1..4) of the well-formed UTF-8 sequence
 * at the start of p[0..n), or 0 when there is none (or n is 0). */
size_t json_utf8_len(const void *p, size_t n);

/* json_trim returns the length of buf[0..len) without JSON whitespace (space,
 * tab, LF, CR) at either end, and sets *off to where the rest starts. */
size_t json_trim(const void *buf, size_t len, size_t *off);

/* sb_add_json_string appends s[0..n) to b as a JSON string literal, quotes
 * included: quote, backslash and control characters are escaped (\b \f \n
 * \r \t as such, the others and DEL as \u00xx, lowercase); bytes >= 0x80
 * are copied only as parts of well-formed UTF-8 sequences, and each other
 * byte becomes \ufffd. json_put_string writes the same text to f. */
void sb_add_json_string(Strbuf *b, const char *s, size_t n);
void json_put_string(FILE *f, const char *s, size_t n);

/* json_put_text writes a JSON text that json_validate accepted to f on one
 * line: a raw CR or LF in valid JSON can only be whitespace between tokens,
 * so each becomes a space and the value is unchanged (NDJSON, one object per
 * line). */
void json_put_text(FILE *f, const void *buf, size_t len);

/* JsonSpan: a slice of a JSON text, not NUL-terminated. */
typedef struct JsonSpan {
    const char *p;
    size_t n;
} JsonSpan;

/* json_object_next walks the members of the object at the top of buf, a
 * text that json_validate accepted. Start with *pos = 0. Returns 1 and sets
 * key (the string literal, quotes included) and val (the raw text of the
 * value) for the next member; returns 0 after the last member, and -1 when
 * the top-level value is not an object. Spans point into buf. */
int json_object_next(const char *buf, size_t len, size_t *pos, JsonSpan *key, JsonSpan *val);

/* json_string_decode decodes the JSON string literal lit[0..n) (quotes
 * included, as json_object_next returns it; it must be valid) into a new
 * NUL-terminated buffer the caller frees, setting *outlen (the bytes, which
 * may include NULs from \u0000). A lone surrogate escape becomes U+FFFD. */
char *json_string_decode(const char *lit, size_t n, size_t *outlen);

/* json_hex4 returns the value of the four hex digits at p (a \uXXXX escape
 * that json_validate or yajl accepted). json_utf8_put writes the UTF-8
 * form of code point cp (not a surrogate, at most U+10FFFF) at o and
 * returns its length, 1 to 4 bytes. */
unsigned json_hex4(const char *p);
size_t json_utf8_put(char *o, uint32_t cp);

/* json_span_is returns 1 if the string literal span equals the plain ASCII
 * word (no escapes involved), for matching member names. */
int json_span_is(JsonSpan s, const char *word);

/* JsonJob: one job in the NDJSON form of `qctl export`, `qctl import` and
 * POST /queues/NAME/jobs: {"body": JSON, "key": "K", "priority": N} ("key"
 * and "priority" optional, "key" may be null; other members ignored; the
 * last of a repeated member counts). */
typedef struct JsonJob {
    JsonSpan body;   /* the body's text in the line */
    int has_pri;     /* "priority" was given: pri */
    uint32_t pri;
    char *key;       /* decoded (the caller frees it); NULL: none, or null */
    size_t keylen;
} JsonJob;

enum {
    JSON_JOB_NOT_OBJECT = 1, /* the line is not a JSON object */
    JSON_JOB_NO_BODY,        /* it has no "body" */
    JSON_JOB_PRIORITY,       /* "priority" is not a whole number 0..4294967295 */
    JSON_JOB_KEY             /* "key" is not a string of 1..QUEUE_KEY_MAX bytes, or null */
};

/* json_job_read reads the job line buf[0..len), a text json_validate
 * accepted, into *j. Returns 0, or the first JSON_JOB_* wrong with it (a
 * member's in the order of the members, then JSON_JOB_NOT_OBJECT, then
 * JSON_JOB_NO_BODY) with why it is wrong in why (like "\"key\" must be a
 * string or null"), j->key NULL then. */
int json_job_read(const char *buf, size_t len, JsonJob *j, char *why, size_t whyn);

#endif
