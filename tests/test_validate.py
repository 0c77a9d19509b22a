"""End-to-end tests of the validate and batch stage kinds: the real
`pickline run` with a pipeline validate -> final -> batch over a users
model, fed over HTTP (POST /queues/validate/jobs), checked through the
engine's log, the queues (`qctl stats`), `qctl batches --json`,
`qctl batches show ID --json` and `qctl rejects --json`.

Each test has a fresh temp dir. Waits are bounded polls (scaled for
sanitizer builds). PICKLINE_KEEP_TEST_DIRS=1 keeps the temp dirs."""
import collections
import json
import os
import random
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import EngineTestCase, depth, qctl
from plhelp import SLOW, pipeline

FIELDS = ["id", "email", "name", "permission"]


def valid_row(i):
    return {"id": i, "email": "user%d@example.com" % i, "name": "n\"%d,\n\\" % i}


class ValidateTest(EngineTestCase):
    def engine(self, rows=10000, seconds=5, threshold="", workdir=None):
        """An engine of validate.yml, started: the batch stage seals at rows
        rows or after seconds; threshold: the reject_threshold lines."""
        return super().engine(pipeline("validate", threshold=threshold), workdir=workdir, rows=rows,
                              seconds=seconds).start()

    def put(self, eng, body, key=None):
        r = eng.put("validate", body, key=key)
        self.assertEqual(r.status, 202, r)
        return r.json()["id"]

    def put_inline(self, eng, rows):
        for r in rows:
            self.put(eng, {"model": "users", "row": r}, key="row-%s" % json.dumps(r, sort_keys=True)[:200])

    def seal_lines(self, eng):
        """(id, model, rows, state) of every 'batch N (M, R rows...) STATE' log line."""
        out = []
        for m in re.finditer(r"stage=seal batch (\d+) \((\w+), (\d+) rows[^)]*\) (\w+)", eng.stderr()):
            out.append((int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)))
        return out

    # ------------------------------------------------------------ tests

    def test_1_valid_rows_pass_invalid_rows_are_logged_nothing_is_buried(self):
        """Seals at N rows and logs it; rejects are logged with the first failed
        rule; only bodies that are neither a reference nor a row are buried."""
        eng = self.engine(rows=10, seconds=3600)
        self.put_inline(eng, [valid_row(i) for i in range(1, 26)])
        self.put_inline(eng, [{"id": 100, "email": "not-an-email"}, {"id": 101},
                              {"id": "102", "email": "a@example.com"}])
        # not a job for this stage: buried with the reason
        self.put(eng, {"model": "users"})
        self.put(eng, {"model": "orders", "row": valid_row(7)})
        self.put(eng, {"model": "users", "key": "404"})
        self.put(eng, [1, 2])

        def settled():
            s = eng.stats()
            return depth(s, "final") == 0 and depth(s, "validate", ("ready", "delayed", "reserved")) == 0 \
                and depth(s, "validate", ("buried",)) == 4 and s

        s = self.wait(settled, 20, "validate and final to settle", eng)
        self.assertEqual(depth(s, "validate", ("buried",)), 4, s)
        self.wait(lambda: len(self.seal_lines(eng)) == 2, 10, "two batches sealed at 10 rows", eng)
        seals = self.seal_lines(eng)
        self.assertEqual([(m, r, st) for _, m, r, st in seals], [("users", 10, "sealed")] * 2, seals)
        self.assertNotEqual(seals[0][0], seals[1][0])
        err = eng.stderr()
        self.assertIn("rejected users/100: field 'email' rule format: that is not an email address", err)
        self.assertRegex(err, r"rejected users/101: field 'email' rule required")
        self.assertRegex(err, r"rejected users/(\(no key\)|102): field 'id' rule type")
        buried = eng.peek("validate", "buried")
        reasons = sorted(j["error"] for j in buried)
        self.assertEqual(len(reasons), 4, buried)
        self.assertTrue(any("neither \"key\" nor \"row\"" in r for r in reasons), reasons)
        self.assertTrue(any("is for model 'orders'" in r for r in reasons), reasons)
        self.assertTrue(any("staged row users/404: not found" in r for r in reasons), reasons)
        self.assertTrue(any("job body" in r and "JSON object" in r for r in reasons), reasons)
        # the batch stage buries what it cannot put in a batch, with the reason
        for body in ({"model": "users", "key": "999"}, {"model": "tenants", "key": "1"},
                     {"row": valid_row(5)}):
            r = eng.put("final", body)
            self.assertEqual(r.status, 202, r)
        self.wait(lambda: depth(eng.stats(), "final", ("buried",)) == 3, 10, "3 buried on final", eng)
        reasons = sorted(j["error"] for j in eng.peek("final", "buried"))
        self.assertTrue(any("staged row users/999: not found" in r for r in reasons), reasons)
        self.assertTrue(any("model 'tenants' is not declared" in r for r in reasons), reasons)
        self.assertTrue(any("not a staged-row reference" in r for r in reasons), reasons)
        self.assertEqual(len(self.seal_lines(eng)), 2)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0)

    # ------------------------------------------------------------ with qctl batches

    def test_2_batches_hold_normalised_rows_and_rejects_hold_what_failed(self):
        eng = self.engine(rows=10, seconds=3600)
        good = [valid_row(i) for i in range(1, 26)]
        good[3]["permission"] = 5
        bad = [{"id": 100, "email": "not-an-email", "name": "x"},
               {"id": 101},
               {"id": "102", "email": "a@example.com"},
               {"id": 103, "email": "b@example.com", "name": "y" * 21}]
        self.put_inline(eng, good[:12])
        self.put_inline(eng, bad)
        self.put_inline(eng, good[12:])
        self.wait_empty(eng, ("validate", "final"))
        bs = self.wait(lambda: (lambda b: len(b) == 3 and b)(self.batches(eng)), 10,
                       "3 batches", eng)
        self.assertEqual([(b["model"], b["state"], b["rows"]) for b in bs],
                         [("users", "sealed", 10), ("users", "sealed", 10), ("users", "open", 5)], bs)
        self.assertEqual(bs[0]["rejects"] + bs[1]["rejects"] + bs[2]["rejects"], 4, bs)
        rows = []
        for b in bs:
            rows += self.batch_rows(eng, b["id"])
        self.assertEqual(sorted(r["id"] for r in rows), list(range(1, 26)))
        by_id = {r["id"]: r for r in rows}
        for g in good:
            want = dict(g)
            want.setdefault("permission", 1)      # the default filled in
            self.assertEqual(by_id[g["id"]], want)
            self.assertEqual(list(by_id[g["id"]].keys()), FIELDS)  # declared order
        rj = self.rejects(eng)
        self.assertEqual(len(rj), 4, rj)
        by_key = {r["key"]: r for r in rj}
        r100 = by_key["100"]
        self.assertEqual((r100["model"], r100["stage"], r100["queue"]), ("users", "check", "validate"))
        self.assertEqual(r100["row"], bad[0])                   # the row as it was
        self.assertEqual([(e["field"], e["rule"]) for e in r100["errors"]], [("email", "format")])
        self.assertEqual(r100["errors"][0]["message"], "that is not an email address")
        self.assertEqual(r100["job"], {"model": "users", "key": "100"})
        self.assertIn(("email", "required"), [(e["field"], e["rule"]) for e in by_key["101"]["errors"]])
        self.assertIn(("name", "length"), [(e["field"], e["rule"]) for e in by_key["103"]["errors"]])
        r102 = [r for r in rj if r["row"] == bad[2]]
        self.assertEqual(len(r102), 1, rj)
        self.assertIn(("id", "type"), [(e["field"], e["rule"]) for e in r102[0]["errors"]])
        # a replay of a fixed row goes through validate into the open batch
        p = qctl(eng.data, "rejects", "replay", r100["id"], "--row",
                 json.dumps({"id": 100, "email": "fixed@example.com"}))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.wait_empty(eng, ("validate", "final"))
        bs = self.wait(lambda: (lambda b: b[-1]["rows"] == 6 and b)(self.batches(eng)), 10,
                       "the replayed row in the open batch", eng)
        self.assertIn({"id": 100, "email": "fixed@example.com", "name": None, "permission": 1},
                      self.batch_rows(eng, bs[-1]["id"]))
        self.assertEqual(len(self.rejects(eng)), 3)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())

    def test_3_references_to_staged_rows_are_normalised_in_place(self):
        """A reference job: the staged row (written by a replay here, the way an
        extract stage writes it) is normalised in place and batched."""
        eng = self.engine(rows=10000, seconds=0.3)
        # stage a row the way a replay does: an invalid inline row, then replay it
        self.put_inline(eng, [{"id": 7, "email": "bad"}])
        rj = self.wait(lambda: self.rejects(eng), 10, "the reject", eng)
        p = qctl(eng.data, "rejects", "replay", rj[0]["id"], "--row",
                 json.dumps({"id": 7, "email": "seven@example.com"}))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.wait_empty(eng, ("validate", "final"))
        bs = self.wait(lambda: (lambda b: b and b[-1]["state"] == "sealed" and b)(self.batches(eng)),
                       10, "a sealed batch", eng)
        self.assertEqual(self.batch_rows(eng, bs[-1]["id"]),
                         [{"id": 7, "email": "seven@example.com", "name": None, "permission": 1}])

    def test_4_an_open_batch_seals_after_its_seconds(self):
        eng = self.engine(rows=1000, seconds=0.6)
        t0 = time.monotonic()
        self.put_inline(eng, [valid_row(i) for i in range(1, 4)])
        self.wait_empty(eng, ("validate", "final"))
        bs = self.wait(lambda: (lambda b: b and b[0]["state"] == "sealed" and b)(self.batches(eng)),
                       10, "the batch to seal by age", eng)
        took = time.monotonic() - t0
        self.assertEqual((bs[0]["rows"], len(bs)), (3, 1), bs)
        self.assertGreaterEqual(bs[0]["sealed_ms"] - bs[0]["created_ms"], 600, bs)
        self.assertLess(took, 0.6 + 5 * SLOW, "sealed %.2fs after the first put" % took)
        self.wait(lambda: [s for s in self.seal_lines(eng) if s[0] == bs[0]["id"]], 5,
                  "the seal in the log", eng)
        self.assertIn((bs[0]["id"], "users", 3, "sealed"), self.seal_lines(eng))
        # later rows open a new batch
        self.put_inline(eng, [valid_row(9)])
        self.wait(lambda: (lambda b: len(b) == 2 and b[1]["state"] == "sealed" and b)(self.batches(eng)),
                  10, "a second batch sealed by age", eng)

    def test_5_a_reject_threshold_holds_the_batch(self):
        eng = self.engine(rows=1000, seconds=0.5,
                          threshold="    reject_threshold: {count: 2, rate: 0.9}")
        self.put_inline(eng, [valid_row(1), {"id": 2}, valid_row(3), {"id": 4, "email": "x"},
                              {"id": 5, "email": "@"}, valid_row(6)])
        self.wait_empty(eng, ("validate", "final"))
        bs = self.wait(lambda: (lambda b: b and b[0]["state"] != "open" and b)(self.batches(eng)),
                       10, "the batch to close", eng)
        b = bs[0]
        self.assertEqual((b["state"], b["rows"], b["rejects"]), ("held", 3, 3), b)
        self.assertIn("over the threshold of 2", b["error"])
        self.wait(lambda: re.search(r"batch %d \(users, 3 rows, 3 rejects\) held" % b["id"], eng.stderr()),
                  5, "the hold in the log", eng)

        eng.kill()

        # the rate alone: 2 rejects of 5 rows is over 0.25
        other = os.path.join(self.dir, "rate")
        os.mkdir(other)
        eng = self.engine(rows=1000, seconds=0.5, workdir=other,
                          threshold="    reject_threshold: {rate: 0.25}")
        self.put_inline(eng, [valid_row(1), valid_row(2), valid_row(3), {"id": 4}, {"id": 5}])
        self.wait_empty(eng, ("validate", "final"))
        bs = self.wait(lambda: (lambda b: b and b[0]["state"] != "open" and b)(self.batches(eng)),
                       10, "the second batch to close", eng)
        self.assertEqual((bs[0]["state"], bs[0]["rows"], bs[0]["rejects"]), ("held", 3, 2), bs)
        self.assertIn("over the threshold of 25.0%", bs[0]["error"])
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())

    def test_6_sigkill_mid_run_then_restart_every_valid_row_in_exactly_one_batch(self):
        seed = int(os.environ.get("PICKLINE_TEST_SEED") or random.randrange(1 << 30))
        rnd = random.Random(seed)
        eng = self.engine(rows=1000, seconds=0.3)
        p = qctl(eng.data, "pause", "validate")
        self.assertEqual(p.returncode, 0, p.stderr)
        # Enough rows that the kills come while the line is at work, fast
        # as it is (a few thousand were done before the first kill at times).
        n_good, bad_ids = 12000, set(range(100000, 100100))
        rows = [valid_row(i) for i in range(1, n_good + 1)] + [{"id": i, "email": "nope"} for i in bad_ids]
        rnd.shuffle(rows)
        # all on disk before the first kill (qctl import: 1000 a transaction)
        p = qctl(eng.data, "import", "validate",
                 input="".join(json.dumps({"priority": 0, "key": None,
                                           "body": {"model": "users", "row": r}}) + "\n" for r in rows))
        self.assertEqual(p.returncode, 0, p.stderr)
        kills = []
        for k in range(3):
            if k:
                eng.start()
            p = qctl(eng.data, "resume", "validate")
            self.assertEqual(p.returncode, 0, p.stderr)
            time.sleep(rnd.uniform(0.02, 0.15) * SLOW)
            eng.kill()
            s = eng.stats()
            kills.append((depth(s, "validate"), depth(s, "final")))
            p = qctl(eng.data, "pause", "validate")
            self.assertEqual(p.returncode, 0, p.stderr)
        msg = "seed %d, (validate, final) depths at the kills: %s" % (seed, kills)
        eng.start()
        p = qctl(eng.data, "resume", "validate")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.wait_empty(eng, ("validate", "final"), timeout=60)
        bs = self.wait(lambda: (lambda b: b and all(x["state"] == "sealed" for x in b) and b)(self.batches(eng)),
                       15, "every batch sealed", eng)
        got = collections.Counter()
        for b in bs:
            got.update(r["id"] for r in self.batch_rows(eng, b["id"]))
            self.assertLessEqual(b["rows"], 1000, b)
        dup = {i: c for i, c in got.items() if c != 1}
        self.assertEqual(dup, {}, "rows in more than one batch; " + msg)
        self.assertEqual(set(got), set(range(1, n_good + 1)), msg)
        self.assertEqual(sum(b["rows"] for b in bs), n_good, msg)
        rj = self.rejects(eng)
        self.assertEqual(collections.Counter(int(r["key"]) for r in rj), collections.Counter(bad_ids), msg)
        s = eng.stats()
        self.assertEqual(depth(s, "validate", ("buried",)), 0, s)
        # a kill hit a run in progress (some jobs done, some not), else this proves little
        total = n_good + len(bad_ids)
        self.assertTrue(any(v < total and v + f > 0 for v, f in kills),
                        "no kill came in the middle of the work; " + msg)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())

    # ------------------------------------------------------------ fused hand-off

    def staged_rows(self, eng):
        return self.qctl_json(eng, "info")["staged"]["rows"]

    def rows_in_batches(self, eng, n, what):
        return self.wait(lambda: (lambda b: sum(x["rows"] for x in b) == n and b)(self.batches(eng)),
                         15, what, eng)

    def test_7_rows_pass_an_idle_final_in_the_validate_commit(self):
        # The batch stage is final's only reader: valid rows go into the
        # batch in the commit that acks their validate job, with no job on
        # final and no staged row instance; final's totals count them.
        eng = self.engine(rows=1000, seconds=0.3)
        self.put_inline(eng, [valid_row(i) for i in range(1, 201)])
        self.put_inline(eng, [{"id": 9001, "email": "nope"}])
        self.rows_in_batches(eng, 200, "200 rows in batches")
        s = self.wait_empty(eng, ("validate", "final"))
        self.assertEqual((s["final"]["puts"], s["final"]["acks"], s["final"]["buried"]), (200, 200, 0), s)
        self.assertEqual(self.staged_rows(eng), 0)
        self.assertEqual(len(self.rejects(eng)), 1)
        self.assertIn("taken by stage 'seal' in the sender's commit", eng.stderr())
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())

    def test_8_a_paused_or_busy_final_keeps_its_order(self):
        # Paused, final holds the references (nothing passes it); once
        # resumed the batch stage works them, and then rows pass again.
        eng = self.engine(rows=1000, seconds=0.3)
        p = qctl(eng.data, "pause", "final")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.put_inline(eng, [valid_row(i) for i in range(1, 51)])
        self.wait(lambda: depth(eng.stats(), "final", ("ready",)) == 50, 10, "50 waiting on final", eng)
        self.assertEqual(self.staged_rows(eng), 50)
        self.assertEqual(sum(b["rows"] for b in self.batches(eng)), 0)
        # A job put on final meanwhile waits with them (and is buried: it
        # names no row).
        p = qctl(eng.data, "put", "final", json.dumps({"model": "users", "key": "nope", "row_id": 99}))
        self.assertEqual(p.returncode, 0, p.stderr)
        p = qctl(eng.data, "resume", "final")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.rows_in_batches(eng, 50, "the 50 waiting rows batched")
        self.wait(lambda: depth(eng.stats(), "final", ("ready", "reserved", "delayed")) == 0, 10,
                  "final worked off", eng)
        s = eng.stats()
        self.assertEqual((s["final"]["puts"], s["final"]["buried"]), (51, 1), s)
        self.put_inline(eng, [valid_row(i) for i in range(51, 61)])
        self.rows_in_batches(eng, 60, "10 more rows batched")
        live = ("ready", "reserved", "delayed")
        self.wait(lambda: depth(eng.stats(), "validate") + depth(eng.stats(), "final", live) == 0, 10,
                  "validate and final worked off", eng)
        s = eng.stats()
        self.assertEqual((s["final"]["puts"], s["final"]["acks"]), (61, 60), s)
        self.assertEqual(self.staged_rows(eng), 0)
        got = collections.Counter()
        for b in self.batches(eng):
            got.update(r["id"] for r in self.batch_rows(eng, b["id"]))
        self.assertEqual(got, collections.Counter(range(1, 61)))
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())


if __name__ == "__main__":
    unittest.main()
