"""The bulk form of POST /queues/NAME/jobs (engine/api.c): an NDJSON body,
one job per line in the form of `qctl export`, all put in one commit and
answered once, after it. Against the real binary over loopback:

- the answer lists each line's id, in order; bodies, keys and priorities
  land as sent;
- a malformed line, a bad key or priority, a body over the queue's
  max_body, or an empty request adds nothing and names the line;
- idempotency per line (a line's "key", or the request's Idempotency-Key
  header as "K:i"), for the queue's key_retention;
- SIGKILL while clients send bulk requests: every answered request has all
  its jobs, and an unanswered one has all or none of them.
"""
import collections
import json
import os
import random
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import SLOW, EngineTestCase, depth, http_request, qctl, qctl_peek, wait_for

PIPE = """
listen:
  address: 127.0.0.1
  port: ${port}
  max_body: 65536
queues:
  in: {max_body: 300, key_retention: ${retention}}
  out: {}
  side: {}
stages:
${stages}
"""

NDJSON = "application/x-ndjson"


def nd(lines):
    return "".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines).encode()


class BulkTest(EngineTestCase):
    def engine(self, retention=86400, stages="  - {name: idle, kind: noop, input: side, output: out}"):
        return super().engine(PIPE, retention=retention, stages=stages).start()

    def post(self, eng, body, headers=None, query=""):
        h = {"Content-Type": NDJSON}
        h.update(headers or {})
        return eng.request("POST", "/queues/in/jobs" + query, body, h)

    def jobs(self, eng, queue="in"):
        return sorted(qctl_peek(eng.data, queue), key=lambda j: j["id"])

    def test_1_one_answer_lists_every_line_in_order(self):
        eng = self.engine()
        lines = [{"body": {"n": i, "s": "q\"c,\n\\ é"}} for i in range(100)]
        lines[5]["priority"] = 7
        lines[6]["key"] = "k6"
        lines.insert(3, "")
        lines.insert(9, "   ")
        r = self.post(eng, nd(lines) + b"{\"body\": [1, 2.50, null], \"other\": 1}")
        self.assertEqual(r.status, 202, r)
        a = r.json()
        self.assertEqual((len(a["ids"]), a["added"], a["existed"], a["done"]), (101, 101, [], []))
        self.assertEqual(a["ids"], sorted(a["ids"]))
        self.assertEqual(len(set(a["ids"])), 101)
        jobs = self.jobs(eng)
        self.assertEqual([j["id"] for j in jobs], a["ids"])
        self.assertEqual([j["body"] for j in jobs[:100]], [{"n": i, "s": "q\"c,\n\\ é"} for i in range(100)])
        self.assertEqual(jobs[100]["body"], [1, 2.5, None])
        self.assertEqual(jobs[5]["priority"], 7)
        self.assertEqual(jobs[6]["key"], "k6")
        # ?pri is the lines' default priority
        r = self.post(eng, nd([{"body": 1}, {"body": 2, "priority": 3}]), query="?pri=9")
        self.assertEqual(r.status, 202, r)
        js = {j["id"]: j for j in self.jobs(eng)}
        self.assertEqual([js[i]["priority"] for i in r.json()["ids"]], [9, 3])
        # one job per request still works as before
        r = eng.put("in", {"single": True})
        self.assertEqual(r.status, 202, r)
        self.assertEqual(depth(eng.stats(), "in"), 104)

    def test_2_a_bad_line_adds_nothing_and_is_named(self):
        eng = self.engine()
        good = [{"body": {"n": i}} for i in range(5)]
        cases = [
            (good[:2] + ['{"body": {"n": 2}'] + good[2:], 400, "line 3: invalid JSON"),
            (good + ["[1, 2]"], 400, "line 6: not a JSON object"),
            (good[:1] + ['{"bdy": 1}'], 400, "line 2: no \"body\""),
            (good[:1] + [{"body": 1, "key": ""}], 400, "line 2: \"key\" is 0 bytes"),
            (good[:1] + [{"body": 1, "key": "k" * 201}], 400, "line 2: \"key\" is 201 bytes"),
            (good[:1] + [{"body": 1, "key": 7}], 400, "line 2: \"key\" must be a string or null"),
            (good[:1] + [{"body": 1, "priority": -1}], 400, "line 2: \"priority\" must be a whole number"),
            (good[:1] + [{"body": 1, "priority": 4294967296}], 400, "\"priority\" must be"),
            (good[:3] + [{"body": "x" * 400}], 413, "line 4: the body (402 bytes) is over queue 'in' "
                                                     "max_body (300 bytes)"),
            (["", "  "], 400, "no jobs in the body"),
        ]
        for lines, status, text in cases:
            r = self.post(eng, nd(lines))
            self.assertEqual(r.status, status, (lines, r))
            self.assertIn(text, r.json()["error"], lines)
            self.assertIn("no job added" if "no jobs" not in text else "one job per line",
                          r.json()["error"])
        # invalid UTF-8 in a line
        r = self.post(eng, b'{"body": "ok"}\n{"body": "\xff"}\n')
        self.assertEqual(r.status, 400, r)
        self.assertIn("line 2: invalid UTF-8", r.json()["error"])
        # a request over the listener's max_body is refused whole
        r = self.post(eng, nd([{"body": "y" * 200}] * 400))
        self.assertEqual(r.status, 413, r)
        self.assertEqual(depth(eng.stats(), "in"), 0)
        self.assertEqual(eng.stats()["in"]["puts"], 0)

    def test_3_keys_per_line_and_for_the_request(self):
        eng = self.engine(retention=1)
        lines = [{"body": {"n": i}, "key": "line-%d" % i} for i in range(4)]
        a = self.post(eng, nd(lines)).json()
        self.assertEqual(a["added"], 4)
        # the same lines again: nothing added, the first ids
        r = self.post(eng, nd(lines))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"ids": a["ids"], "added": 0, "existed": [0, 1, 2, 3], "done": []})
        # mixed: two seen, one new
        r = self.post(eng, nd([lines[1], {"body": {"n": 9}, "key": "line-9"}, lines[3]]))
        self.assertEqual(r.status, 202, r)
        b = r.json()
        self.assertEqual((b["ids"][0], b["ids"][2], b["added"], b["existed"]), (a["ids"][1], a["ids"][3], 1, [0, 2]))
        # the request's Idempotency-Key keys the lines without a key: K:i
        req = nd([{"body": {"r": 0}}, {"body": {"r": 1}, "key": "own"}, {"body": {"r": 2}}])
        c = self.post(eng, req, {"Idempotency-Key": "batch-7"})
        self.assertEqual(c.status, 202, c)
        keys = {j["id"]: j.get("key") for j in self.jobs(eng)}
        self.assertEqual([keys[i] for i in c.json()["ids"]], ["batch-7:0", "own", "batch-7:2"])
        r = self.post(eng, req, {"Idempotency-Key": "batch-7"})
        self.assertEqual((r.status, r.json()["ids"], r.json()["added"]), (200, c.json()["ids"], 0))
        # worked (acked): a retry within the retention finds them done
        for jid in a["ids"][:2]:
            p = qctl(eng.data, "delete", str(jid))
            self.assertEqual(p.returncode, 0, p.stderr)
        r = self.post(eng, nd(lines[:3]))
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json()["existed"], r.json()["done"]), ([0, 1, 2], [0, 1]))
        # past the retention (1 s; the engine's tick forgets keys) they are new again
        time.sleep(2.5)
        r = self.post(eng, nd(lines[:3]))
        self.assertEqual(r.status, 202, r)
        self.assertEqual((r.json()["added"], r.json()["existed"]), (2, [2]))
        # a header too long to leave room for ":i"
        r = self.post(eng, nd(lines[:1]), {"Idempotency-Key": "h" * 195})
        self.assertEqual(r.status, 400, r)
        self.assertIn("Idempotency-Key of a bulk request", r.json()["error"])

    def test_4_sigkill_mid_bulk_loses_nothing_answered(self):
        rnd = random.Random(int(os.environ.get("PICKLINE_BULK_SEED", "0")) or None)
        eng = self.engine(stages="  - {name: hop, kind: noop, input: in, output: out, concurrency: 64, batch: 32}")
        answered, lock, stop = {}, threading.Lock(), threading.Event()
        seq = iter(range(1 << 30))

        def client(cid):
            while not stop.is_set():
                with lock:
                    rid = next(seq)
                n = 1 + rid % 40
                body = nd([{"body": {"req": rid, "i": i, "pad": "p" * (i % 30)}} for i in range(n)])
                try:
                    r = http_request("POST", eng.base + "/queues/in/jobs", body,
                                     {"Content-Type": NDJSON, "Idempotency-Key": "req-%d" % rid}, timeout=5)
                except OSError:
                    time.sleep(0.01)
                    continue
                if r.status in (200, 202):
                    with lock:
                        answered[rid] = (n, r.json()["ids"])

        for rnd_i in range(3):
            if rnd_i:
                eng.start()
            stop.clear()
            ts = [threading.Thread(target=client, args=(c,)) for c in range(8)]
            for t in ts:
                t.start()
            time.sleep(rnd.uniform(0.3, 0.8) * SLOW)
            eng.kill()
            stop.set()
            for t in ts:
                t.join()
        eng.start()
        # Everything that arrived is put, and the hop moves it on: look at both.
        wait_for(lambda: depth(eng.stats(), "in", ("ready", "reserved", "delayed")) == 0, 30 * SLOW, 0.1,
                 "the hop to drain in")
        jobs = qctl_peek(eng.data, "out")
        per_req = collections.defaultdict(set)
        for j in jobs:
            per_req[j["body"]["req"]].add(j["body"]["i"])
        self.assertGreater(len(answered), 20, "too few answers to judge")
        lost = {rid: n for rid, (n, ids) in answered.items() if per_req.get(rid) != set(range(n))}
        self.assertEqual(lost, {}, "answered requests missing jobs")
        partial = {rid: sorted(s) for rid, s in per_req.items() if rid not in answered and
                   s != set(range(1 + rid % 40))}
        self.assertEqual(partial, {}, "unanswered requests with part of their jobs")
        self.assertEqual(len(jobs), sum(len(s) for s in per_req.values()), "a job twice")
        p = qctl(eng.data, "verify")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        rc, _ = eng.terminate(timeout=10)
        self.assertEqual(rc, 0, eng.stderr_tail())


if __name__ == "__main__":
    unittest.main()
