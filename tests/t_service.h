/* t_service.h: a service on loopback for the stage tests (test_stages.c):
 * libmicrohttpd with a thread of its own, answering each request with what
 * the test set for its path and recording every request it got, as it got
 * it (request line, headers, body). */
#ifndef T_SERVICE_H
#define T_SERVICE_H

#include <stddef.h>

/* ts_start starts the service on a free port of 127.0.0.1; ts_stop stops it
 * and forgets everything. ts_base is "http://127.0.0.1:PORT". */
void ts_start(void);
void ts_stop(void);
const char *ts_base(void);

/* ts_answer sets the answer to requests whose path (before any '?') is
 * path: status, an optional header line ("Name: value", or NULL) and a
 * body (copied). A path without an answer gets 404. */
void ts_answer(const char *path, unsigned status, const char *header, const char *body);

/* TsRequest: a request as the service got it. */
typedef struct TsRequest {
    char *method;
    char *target;     /* path and query, as sent */
    char *headers;    /* "Name: value\n" per header, in the order sent */
    char *body;       /* NUL-terminated */
    size_t len;
} TsRequest;

/* ts_count is the number of requests so far; ts_request(i) the i-th (a
 * copy the test frees with ts_request_free). */
size_t ts_count(void);
TsRequest ts_request(size_t i);
void ts_request_free(TsRequest *r);

/* ts_header returns the value of header name in r (the first one, case
 * insensitive) in a static buffer, or NULL. */
const char *ts_header(const TsRequest *r, const char *name);

#endif
