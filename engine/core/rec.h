/* rec.h: msgpack records as stored in LMDB.
 *
 * Every record is a msgpack array whose first element is its format version;
 * readers for old versions stay (beanstalkd's Walver). A Rec is a scratch
 * context (encode buffer and decode zone) owned by one transaction: records
 * encode into it without allocating per record, and decoded views point into
 * the input bytes, valid as long as they are. */
#ifndef PL_REC_H
#define PL_REC_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "queue.h"

typedef struct Rec {
    msgpack_sbuffer sb;  /* read-only: the last encoded record */
    msgpack_packer pk;   /* private */
    msgpack_zone zone;   /* private */
} Rec;

void rec_init(Rec *r);
void rec_destroy(Rec *r);

/* JobRec: a job header (the body is stored apart). key and error are views. */
typedef struct JobRec {
    uint32_t qid, pri;
    int state;
    uint32_t attempts, kicks;
    uint64_t created_ms, due_ms;
    uint32_t ttr_ms;
    uint64_t lease;
    const char *key;   size_t keylen;
    const char *error; size_t errorlen;
} JobRec;

/* rec_job_encode encodes j into r->sb (reset first). *key_off and *err_off
 * get the offsets of the key and error bytes in the encoding, so views into
 * the stored copy can be made without decoding again. */
void rec_job_encode(Rec *r, const JobRec *j, size_t *key_off, size_t *err_off);

/* rec_wellformed checks that buf[0..len) is exactly one well-formed msgpack
 * value whose every count and length fits in what is left, without
 * allocating. Returns 0 or PL_ECORRUPT. */
int rec_wellformed(const void *buf, size_t len);

/* rec_job_decode decodes a header; j's views point into buf. Returns 0,
 * PL_EFORMAT (a newer format version) or PL_ECORRUPT (a malformed record). */
int rec_job_decode(Rec *r, const void *buf, size_t len, JobRec *j);

/* rec_queue_encode / rec_queue_decode: a queue record (conf and counters);
 * decode errors as rec_job_decode's. */
void rec_queue_encode(Rec *r, const QueueStats *q);
int rec_queue_decode(Rec *r, const void *buf, size_t len, QueueStats *q);

#endif
