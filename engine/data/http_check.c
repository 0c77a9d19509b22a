/* http_check.c: the syntax checks of http_check.h (moved out of http.c,
 * which keeps the client: the checks belong to the data layer). */
#include "http_check.h"
#include "pl.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ============================================= what may be sent at all */

const char *http_printable(char *dst, size_t cap, const char *s, size_t len)
{
    size_t k = 0, cut = len > 64 ? 64 : len;
    PL_ASSERT(cap >= 8, "http_printable needs room for a few bytes");
    for (size_t i = 0; i < cut && k + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f)
            dst[k++] = (char)c;
        else if (c == '\r' || c == '\n' || c == '\t')
            k += (size_t)snprintf(dst + k, cap - k, "\\%c", c == '\r' ? 'r' : c == '\n' ? 'n' : 't');
        else
            k += (size_t)snprintf(dst + k, cap - k, "\\x%02X", c);
    }
    if (cut < len && k + 4 < cap)
        k += (size_t)snprintf(dst + k, cap - k, "...");
    dst[k < cap ? k : cap - 1] = '\0';
    return dst;
}

static int bad(char *why, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(char *why, size_t n, const char *fmt, ...)
{
    if (why && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, n, fmt, ap);
        va_end(ap);
    }
    return PL_EINVAL;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int http_port_check(const char *port, size_t len, char *why, size_t n)
{
    char s[300];
    unsigned long v = 0;
    int ok = len >= 1 && len <= 5 && port[0] != '0';
    for (size_t i = 0; ok && i < len; i++) {
        ok = is_digit(port[i]);
        v = v * 10 + (unsigned long)(port[i] - '0');
    }
    if (ok && v >= 1 && v <= 65535)
        return 0;
    return bad(why, n, "port '%s' is not valid; write a number from 1 to 65535 without leading "
               "zeros", http_printable(s, sizeof s, port, len));
}

/* numeric: s[0..len) is a number as some parser would read an IPv4 part:
 * decimal digits, or 0x and hex digits. */
static int numeric(const char *s, size_t len)
{
    int hex = len >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
    if (len == 0)
        return 0;
    for (size_t i = hex ? 2 : 0; i < len; i++)
        if (!(hex ? is_hex(s[i]) : is_digit(s[i])))
            return 0;
    return 1;
}

/* ipv4 is 1 when s[0..len) is exactly a.b.c.d, each part 0 to 255 in
 * decimal without leading zeros. */
static int ipv4(const char *s, size_t len)
{
    int parts = 0;
    for (size_t i = 0;;) {
        size_t j = i;
        unsigned v = 0;
        while (j < len && is_digit(s[j]) && j - i < 4)
            v = v * 10 + (unsigned)(s[j++] - '0');
        if (j == i || j - i > 3 || v > 255 || (s[i] == '0' && j - i > 1))
            return 0;
        parts++;
        if (j == len)
            return parts == 4;
        if (s[j] != '.' || parts == 4 || j + 1 == len)
            return 0;
        i = j + 1;
    }
}

int http_host_check(const char *host, size_t len, char *why, size_t n)
{
    char s[300];
    if (len == 0)
        return bad(why, n, "has no host; write it like http://127.0.0.1:8080/");
    size_t end = host[len - 1] == '.' && len > 1 ? len - 1 : len; /* one trailing dot */
    size_t last = end;
    while (last > 0 && host[last - 1] != '.')
        last--;
    if (numeric(host + last, end - last)) {
        /* The host ends in a number: an IPv4 address, strictly a.b.c.d. */
        if (ipv4(host, len))
            return 0;
        return bad(why, n, "host '%s' is not a valid IPv4 address; each of its 4 parts is a "
                   "number from 0 to 255 (without leading zeros)", http_printable(s, sizeof s, host, len));
    }
    int ok = len <= 254;
    for (size_t i = 0; ok && i < end;) {
        size_t j = i;
        while (j < end && host[j] != '.')
            j++;
        ok = j > i && j - i <= 63 && host[i] != '-' && host[j - 1] != '-';
        for (size_t k = i; ok && k < j; k++)
            ok = is_alnum(host[k]) || host[k] == '-';
        i = j + 1;
        if (ok && j < end && i >= end)
            ok = 0; /* an empty last label: "a.." */
    }
    if (ok)
        return 0;
    return bad(why, n, "host '%s' is not a valid host name; use letters, digits, - and . (each "
               "part 1 to 63 characters, not starting or ending with -), an IPv4 address or an "
               "[IPv6] address", http_printable(s, sizeof s, host, len));
}

size_t http_url_path_end(const char *url)
{
    const char *p = strstr(url, "://");
    if (!p)
        return strlen(url);
    p += 3;
    p += strcspn(p, "/?#");
    p += strcspn(p, "?#");
    return (size_t)(p - url);
}

size_t http_url_origin_len(const char *url)
{
    const char *p = strstr(url, "://");
    if (!p)
        return 0;
    p += 3;
    return (size_t)(p - url) + strcspn(p, "/?#");
}

/* Origin: an origin's parts as they stand in its URL. */
typedef struct Origin {
    int https;
    const char *host, *port;
    size_t hlen, plen;
} Origin;

static int origin_of(const char *url, Origin *o)
{
    size_t skip;
    if (strncasecmp(url, "http://", 7) == 0)
        skip = 7, o->https = 0;
    else if (strncasecmp(url, "https://", 8) == 0)
        skip = 8, o->https = 1;
    else
        return -1;
    const char *a = url + skip;
    size_t alen = strcspn(a, "/?#");
    const char *colon = NULL;
    if (a[0] == '[') {
        const char *rb = memchr(a, ']', alen);
        if (!rb)
            return -1;
        if (rb + 1 < a + alen && rb[1] == ':')
            colon = rb + 1;
    } else {
        colon = memchr(a, ':', alen);
    }
    o->host = a;
    o->hlen = colon ? (size_t)(colon - a) : alen;
    if (o->hlen && a[o->hlen - 1] == '.' && a[0] != '[')
        o->hlen--; /* one trailing dot: the same name */
    o->port = colon ? colon + 1 : o->https ? "443" : "80";
    o->plen = colon ? (size_t)(a + alen - colon - 1) : strlen(o->port);
    return 0;
}

int http_url_same_origin(const char *a, const char *b)
{
    Origin x, y;
    if (origin_of(a, &x) || origin_of(b, &y))
        return 0;
    return x.https == y.https && x.hlen == y.hlen && strncasecmp(x.host, y.host, x.hlen) == 0 &&
           x.plen == y.plen && memcmp(x.port, y.port, x.plen) == 0;
}

int http_url_check(const char *url, int tmpl, char *why, size_t n)
{
    char s[300];
    size_t len = strlen(url), skip;
    if (strncasecmp(url, "http://", 7) == 0)
        skip = 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        skip = 8;
    else
        return bad(why, n, "expected an http:// or https:// URL (got '%s')",
                   http_printable(s, sizeof s, url, len));
    /* Every byte first: one that ends the line ends the request line. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c == '\r' || c == '\n')
            return bad(why, n, "has a line break (CR or LF) at byte %zu; a URL is one line (a "
                       "line break would start headers of its own in the request)", i + 1);
        if (c < 0x20 || c == 0x7f)
            return bad(why, n, "has a control character (0x%02X) at byte %zu; remove it", c, i + 1);
        if (c == ' ')
            return bad(why, n, "has a space at byte %zu; write it as %%20", i + 1);
        if (c >= 0x80)
            return bad(why, n, "has a byte that is not ASCII (0x%02X) at byte %zu; percent-encode "
                       "it (its UTF-8 bytes, like %%C3%%A9 for an e with an accent)", c, i + 1);
        if (c == '\\')
            return bad(why, n, "has a backslash at byte %zu; parsers disagree on it (some read "
                       "a /): write / or %%5C", i + 1);
        if (c == '#')
            return bad(why, n, "has a #fragment (byte %zu), which is never sent to the server; "
                       "remove it (or write %%23 for a # sign)", i + 1);
        if (c == '%' && !(i + 2 < len && is_hex(url[i + 1]) && is_hex(url[i + 2])))
            return bad(why, n, "'%s' at byte %zu is not a percent-escape; write %%25 for a %% sign",
                       http_printable(s, sizeof s, url + i, len - i < 3 ? len - i : 3), i + 1);
    }
    /* The authority: [user@]host[:port], up to the path or the query. */
    const char *a = url + skip;
    size_t alen = strcspn(a, "/?");
    if (memchr(a, '{', alen) || memchr(a, '}', alen))
        return bad(why, n, "the host and port cannot come from a {field}: a job would choose the "
                   "machine that is called; write them out");
    if (memchr(a, '@', alen))
        return bad(why, n, "has user:password@ in it; URLs are written to logs and bury reasons, "
                   "so send credentials in headers: (like Authorization: ...) instead");
    if (alen == 0)
        return bad(why, n, "has no host; write it like http://127.0.0.1:8080/");
    const char *port = NULL;
    size_t hlen = alen;
    if (a[0] == '[') {
        const char *rb = memchr(a, ']', alen);
        char ip[64];
        struct in6_addr in6;
        size_t ilen = rb ? (size_t)(rb - a) - 1 : 0;
        if (!rb || ilen == 0 || ilen >= sizeof ip ||
            !(rb + 1 == a + alen || rb[1] == ':'))
            return bad(why, n, "host '%s' is not a valid [IPv6] address",
                       http_printable(s, sizeof s, a, alen));
        memcpy(ip, a + 1, ilen);
        ip[ilen] = '\0';
        if (inet_pton(AF_INET6, ip, &in6) != 1)
            return bad(why, n, "host '%s' is not a valid [IPv6] address",
                       http_printable(s, sizeof s, a, (size_t)(rb - a) + 1));
        hlen = (size_t)(rb - a) + 1;
        if (rb + 1 < a + alen)
            port = rb + 2;
    } else {
        const char *colon = memchr(a, ':', alen);
        if (colon && memchr(colon + 1, ':', alen - (size_t)(colon - a) - 1))
            return bad(why, n, "host '%s' has more than one ':'; write an IPv6 address in "
                       "brackets, like http://[::1]:8080/", http_printable(s, sizeof s, a, alen));
        if (colon) {
            hlen = (size_t)(colon - a);
            port = colon + 1;
        }
        int rc = http_host_check(a, hlen, why, n);
        if (rc)
            return rc;
    }
    if (port) {
        int rc = http_port_check(port, (size_t)(a + alen - port), why, n);
        if (rc)
            return rc;
    }
    /* The path and the query: {field}s in a template, else no braces. */
    const char *rest = a + alen;
    for (const char *p = rest; *p; p++) {
        if (*p != '{' && *p != '}')
            continue;
        if (!tmpl)
            return bad(why, n, "this URL is not a template; remove the { }");
        size_t m = *p == '{' ? strcspn(p + 1, "{}") : 0;
        if (*p == '}' || p[1 + m] != '}' || m == 0)
            return bad(why, n, "bad template field at '%s'; write fields of the job as {name} or "
                       "{a.b}", http_printable(s, sizeof s, p, strnlen(p, 20)));
        p += m + 1;
    }
    return 0;
}

int http_header_check(const char *name, const char *value, char *why, size_t n)
{
    char s[300];
    size_t nl = strlen(name);
    int ok = nl > 0;
    for (size_t i = 0; ok && i < nl; i++)
        ok = is_alnum(name[i]) || (name[i] && strchr("!#$%&'*+-.^_`|~", name[i]));
    if (!ok)
        return bad(why, n, "'%s' is not a valid header name; use letters, digits and "
                   "!#$%%&'*+-.^_`|~", http_printable(s, sizeof s, name, nl));
    if (strcasecmp(name, "Content-Length") == 0 || strcasecmp(name, "Transfer-Encoding") == 0)
        return bad(why, n, "%s is set by pickline for each request; remove it", name);
    for (const char *p = value; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\r' || c == '\n')
            return bad(why, n, "has a line break (CR or LF); a header value is one line (a line "
                       "break would start a header of its own)");
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return bad(why, n, "has a control character (0x%02X); remove it", c);
    }
    return 0;
}
