"""The engine holds the jobs of its own stages in memory (engine.c: holds,
not leases): a hop writes once, and a crash returns every job in flight to
ready, as the expiry of a lease would. These tests drive the real binaries:

- a job that kills the engine each time it is worked still meets its
  queue's max_attempts: the in-flight file names it, the next start counts
  the attempt, and the attempt past the limit buries it with the reason;
- `qctl reserve` of a job the engine holds wins: the engine's hand-off then
  writes nothing (no output, no double);
- SIGKILL at random moments of a busy hop loses nothing and doubles
  nothing, and `qctl verify` passes after each.
"""
import collections
import json
import os
import random
import sys
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import SLOW, EngineTestCase, Fixture, depth, qctl, wait_for


class HangingRecords(Fixture):
    """GET /records/ID answers {"id": ID, "name": ...} once `go` is set
    (or at once for ids in `quick`); until then the request hangs. Counts
    requests per id in hits."""

    def __init__(self):
        super().__init__()
        self.go = threading.Event()
        self.hits = collections.Counter()

    def handle(self, req):
        rid = urllib.parse.unquote(req.url_path[len("/records/"):])
        with self.lock:
            self.hits[rid] += 1
        while not self.go.is_set():
            if self.sleep(0.05):
                return
        req.reply(200, {"id": rid, "name": "n-" + rid})


PIPE_EXTRACT = """
listen:
  address: 127.0.0.1
  port: ${port}
drain: 1
queues:
  work: {ttr: 60, max_attempts: 3, backoff: 0.1}
  out: {ttr: 60}
stages:
  - name: fetch
    kind: http_extract
    input: work
    output: out
    url: ${api}/records/{id}
    key_field: id
    model: users
    concurrency: 4
    timeout: 120
"""

PIPE_HOP = """
listen:
  address: 127.0.0.1
  port: ${port}
drain: 2
queues:
  a: {ttr: 60}
  b: {ttr: 60}
  c: {ttr: 60}
stages:
  - {name: one, kind: noop, input: a, output: b, concurrency: 64, batch: 16}
  - {name: two, kind: route, input: b, routes: [{when: {field: n, exists: true}, to: c}], concurrency: 64, batch: 16}
"""


class HoldsTest(EngineTestCase):
    def peek(self, eng, queue, state="all"):
        return eng.peek(queue, state)

    def test_1_a_job_that_kills_the_engine_is_buried_at_max_attempts(self):
        api = self.fx.add(HangingRecords())
        eng = self.engine(PIPE_EXTRACT, api=api.url)
        eng.start()
        self.assertEqual(eng.put("work", {"id": "k1"}).status, 202)
        self.assertEqual(eng.put("work", {"id": "k2"}).status, 202)
        for attempt in (1, 2, 3):
            # Both jobs are being worked (the service holds the requests):
            # the engine dies with them in flight, as a job that crashes it would.
            wait_for(lambda: api.hits["k1"] == attempt and api.hits["k2"] == attempt, 10 * SLOW, 0.05,
                     "attempt %d of both jobs at the service" % attempt)
            eng.kill()
            # Nothing was written when they were taken: still ready, and the
            # attempts are those the last start stored.
            jobs = {j["body"]["id"]: j for j in self.peek(eng, "work")}
            self.assertEqual(sorted(jobs), ["k1", "k2"])
            self.assertEqual({j["state"] for j in jobs.values()}, {"ready"}, jobs)
            self.assertEqual({j["attempts"] for j in jobs.values()}, {attempt - 1}, jobs)
            eng.start()
        # The start after the third crash counted the third attempt: buried,
        # before any stage could take them a fourth time.
        wait_for(lambda: depth(eng.stats(), "work", ("buried",)) == 2, 10 * SLOW, 0.05, "both buried")
        buried = self.peek(eng, "work", "buried")
        self.assertEqual(sorted(j["body"]["id"] for j in buried), ["k1", "k2"])
        for j in buried:
            self.assertEqual(j["attempts"], 3, j)
            self.assertIn("gave up after 3 attempts", j["error"])
            self.assertIn("the engine stopped while working it", j["error"])
        time.sleep(0.3)
        self.assertEqual((api.hits["k1"], api.hits["k2"]), (3, 3), "worked again past max_attempts")
        self.assertIn("the last run stopped while working 2 jobs", eng.stderr())
        # A clean stop leaves nothing to count.
        api.go.set()
        rc, _ = eng.terminate(timeout=10)
        self.assertEqual(rc, 0, eng.stderr_tail())
        eng.start()
        rc, _ = eng.terminate(timeout=10)
        self.assertEqual(rc, 0, eng.stderr_tail())
        self.assertEqual(eng.stderr().count("the last run stopped while working"), 3)
        p = qctl(eng.data, "verify")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_2_qctl_reserve_of_a_held_job_wins(self):
        api = self.fx.add(HangingRecords())
        eng = self.engine(PIPE_EXTRACT, api=api.url)
        eng.start()
        self.assertEqual(eng.put("work", {"id": "r1"}).status, 202)
        wait_for(lambda: api.hits["r1"] == 1, 10 * SLOW, 0.05, "the engine working r1")
        # The engine holds r1 in memory; on disk it is ready, and an outside
        # worker may take it.
        p = qctl(eng.data, "--json", "reserve", "work", "--timeout", "0")
        self.assertEqual(p.returncode, 0, p.stderr)
        mine = json.loads(p.stdout)
        self.assertEqual(mine["body"], {"id": "r1"})
        # The service answers the engine now: its hand-off finds the job
        # taken and writes nothing.
        api.go.set()
        wait_for(lambda: "taken, buried or deleted by someone else" in eng.stderr(), 10 * SLOW, 0.05,
                 "the engine's hand-off refused")
        st = eng.stats()
        self.assertEqual(depth(st, "out"), 0, st)
        self.assertEqual((st["work"]["reserved"], st["work"]["ready"]), (1, 0), st)
        p = qctl(eng.data, "ack", str(mine["id"]), "--lease", str(mine["lease"]))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(depth(eng.stats(), "work"), 0)
        # Another job goes through as usual.
        self.assertEqual(eng.put("work", {"id": "r2"}).status, 202)
        wait_for(lambda: depth(eng.stats(), "out") == 1, 10 * SLOW, 0.05, "r2 handed on")
        rc, _ = eng.terminate(timeout=10)
        self.assertEqual(rc, 0, eng.stderr_tail())

    def test_3_sigkill_mid_hop_loses_and_doubles_nothing(self):
        rnd = random.Random(int(os.environ.get("PICKLINE_HOLDS_SEED", "0")) or None)
        n = 6000
        eng = self.engine(PIPE_HOP)
        nd = "".join(json.dumps({"body": {"n": i, "pad": "x" * (i % 50)}}) + "\n" for i in range(n))
        p = qctl(eng.data, "import", "a", input=nd)
        self.assertEqual(p.returncode, 0, p.stderr)
        for _ in range(4):
            eng.start()
            time.sleep(rnd.uniform(0.05, 0.4))
            eng.kill()
            p = qctl(eng.data, "verify")
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        eng.start()
        wait_for(lambda: depth(eng.stats(), "c") == n, 60 * SLOW, 0.1, "every job through")
        rc, _ = eng.terminate(timeout=10)
        self.assertEqual(rc, 0, eng.stderr_tail())
        st = eng.stats()
        self.assertEqual((depth(st, "a"), depth(st, "b")), (0, 0), st)
        got = collections.Counter(j["body"]["n"] for j in self.peek(eng, "c"))
        self.assertEqual(len(got), n)
        self.assertEqual(set(got.values()), {1})
        # Each job's hop: the kills ended holds, never jobs.
        self.assertEqual(st["c"]["buried"], 0, st)

    def test_4_qctl_edit_of_a_held_job_is_worked_with_its_new_body(self):
        """qctl edit refuses a reserved job, but a job the engine holds is
        ready on disk and may be edited: the engine, done with the old body,
        finds the body changed at its commit and writes nothing, and the job
        is worked again with the new one (never the old work acked for it)."""
        api = self.fx.add(HangingRecords())
        eng = self.engine(PIPE_EXTRACT, api=api.url)
        eng.start()
        r = eng.put("work", {"id": "old"})
        self.assertEqual(r.status, 202)
        jid = r.json()["id"]
        wait_for(lambda: api.hits["old"] == 1, 10 * SLOW, 0.05, "the engine working the job")
        p = qctl(eng.data, "edit", str(jid), "--body", "-", input='{"id": "new"}')
        self.assertEqual(p.returncode, 0, p.stderr)
        api.go.set()
        wait_for(lambda: depth(eng.stats(), "out") == 1 and depth(eng.stats(), "work") == 0,
                 10 * SLOW, 0.05, "the job handed on")
        out = self.peek(eng, "out")
        self.assertEqual([j["body"].get("key") for j in out], ["new"], out)
        self.assertEqual((api.hits["old"], api.hits["new"]), (1, 1))
        self.assertIn("its body edited", eng.stderr())
        rc, _ = eng.terminate(timeout=10)
        self.assertEqual(rc, 0, eng.stderr_tail())
        p = qctl(eng.data, "verify")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


if __name__ == "__main__":
    unittest.main()
