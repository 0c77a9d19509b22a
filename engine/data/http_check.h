/* http_check.h: what may be sent at all: the syntax of the URLs, hosts,
 * ports and headers a stage sends, in the data layer (no libcurl).
 *
 * The pipeline file's checks (pipeline_stages.c) and http_request (http.c) use
 * these, so a URL or header that `pickline check` accepts is one that every
 * parser on the way reads the same, and one that nothing at run time can
 * turn into a second request line or header. Each returns 0, or PL_EINVAL with why set
 * to one line that says what is wrong and how to write it instead ("has a
 * line break (CR or LF) at byte 11; ..."), without the key's name. */
#ifndef PL_HTTP_CHECK_H
#define PL_HTTP_CHECK_H

#include <stddef.h>

/* HTTP_TOKEN_MIN is the shortest bearer token accepted (the listener's
 * token: the pipeline file's check and listener_open). */
#define HTTP_TOKEN_MIN 16

/* http_url_check checks an absolute http:// or https:// URL (the scheme in
 * any case): no control characters (CR/LF would end the request line), no
 * spaces, backslashes, non-ASCII bytes, #fragments or broken %-escapes; a
 * host that is a valid name, a 4-part decimal IPv4 address or a [bracketed]
 * IPv6 address (see http_host_check); an optional port from 1 to 65535
 * without leading zeros; no user:password@. With tmpl set, {field}s may
 * stand in the path and the query (never in the scheme, host or port);
 * without it, { and } are refused. */
int http_url_check(const char *url, int tmpl, char *why, size_t n);

/* http_url_path_end returns the offset in url (checked by http_url_check)
 * where its path ends: the first ? or # after the host, or its length. */
size_t http_url_path_end(const char *url);

/* http_url_origin_len returns the length of url's origin, its scheme://
 * and authority (up to the path, the query or the end): the part a
 * relative link such as /changes?page=2 is read against. 0 when url has no
 * "://". */
size_t http_url_origin_len(const char *url);

/* http_url_same_origin is 1 when the absolute URLs a and b (each checked by
 * http_url_check) name one origin: the same scheme, the same host (letters'
 * case aside) and the same port (80 for http, 443 for https when none is
 * written); else 0. A stage sends its headers (tokens) with each request, so
 * a URL that an answer gives it (a next page) is followed only on its own
 * url:'s origin. */
int http_url_same_origin(const char *a, const char *b);

/* http_host_check checks the host[len] of a URL or a connection string: a
 * DNS name (labels of 1 to 63 letters, digits and -, not starting or ending
 * with -, at most 253 bytes, one trailing dot allowed), or, when its last
 * label is a number (as in 999.1.1.1, 127.1 or 0x7f.1: parsers read such a
 * host as an IPv4 address in differing ways), exactly 4 decimal parts from
 * 0 to 255 without leading zeros. IPv6 is http_url_check's (in brackets). */
int http_host_check(const char *host, size_t len, char *why, size_t n);

/* http_port_check checks port[len]: 1 to 65535, digits only, no leading 0. */
int http_port_check(const char *port, size_t len, char *why, size_t n);

/* http_header_check checks a header a stage sends: name a token (letters,
 * digits and !#$%&'*+-.^_`|~), not Content-Length or Transfer-Encoding
 * (curl frames the body); value one line: no CR, LF, NUL or other control
 * character but the tab. */
int http_header_check(const char *name, const char *value, char *why, size_t n);

/* http_printable writes s[0..len) into dst (cap >= 8 bytes) for a message
 * about a URL, a header or a value: printable ASCII as it is, anything else
 * as \r, \n, \t or \xNN (so a message stays one line), cut after 64 bytes
 * of s with "...". Returns dst. */
const char *http_printable(char *dst, size_t cap, const char *s, size_t len);

#endif
