"""Priorities travel (issue 13, item 4): a job's priority goes on with its
outputs through every stage, a stage may set it (`priority: N`) or take it
from a field of the record (`priority_field: F`), and `pickline check`
checks both. The real `pickline run` behind its listener, `qctl` to look at
the queues, a loopback record service to see the order the last stage works
in."""
import collections
import json
import os
import sys
import threading
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import EngineTestCase, qctl
from plhelp import Fixture, pipeline, run, binary


class GatedRecords(Fixture):
    """GET /records/ID -> {"id": ID, "n": ...}, in the order asked (.order),
    every request held while the gate is closed (.gate, a threading.Event;
    closed at first)."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.order = []
        self.asked = collections.Counter()

    def handle(self, req):
        if not req.url_path.startswith("/records/"):
            return req.reply(404, {"error": "no such path"})
        rid = urllib.parse.unquote(req.url_path[len("/records/"):])
        with self.lock:
            self.asked[rid] += 1
        while not self.gate.wait(0.05):
            if self.stopping.is_set():
                return
        with self.lock:
            self.order.append(rid)
        req.reply(200, {"id": rid, "n": len(self.order)})

    def close(self):
        self.gate.set()
        super().close()


class PriorityTest(EngineTestCase):
    def post(self, eng, queue, body, pri=None):
        r = eng.put(queue, body, query="" if pri is None else "?pri=%d" % pri)
        self.assertEqual(r.status, 202, r)
        return r.json()["id"]

    def qctl_ok(self, eng, *args):
        p = qctl(eng.data, *args)
        self.assertEqual(p.returncode, 0, "qctl %s: %s" % (" ".join(args), p.stderr))

    def pris(self, eng, queue):
        """{record id: priority} of the jobs in queue (bodies {"id": ...} or
        references {"key": ...})."""
        out = {}
        for j in eng.peek(queue):
            b = j["body"]
            out[str(b.get("id", b.get("key")))] = j["priority"]
        return out

    def test_urgent_records_overtake_a_backlog_through_three_stages(self):
        """A backlog at priority 100 waits in each of the three stages'
        queues, the last stage busy with one of it; 5 urgent records posted
        at priority 0 after all of it reach the last stage before every
        record of the backlog that was still waiting: they went through two
        stages at 0, and the third took them first."""
        rec = self.fx.add(GatedRecords())
        eng = self.engine(pipeline("priority"), records=rec.url)
        eng.start()
        backlog = lambda a, b: ["b%03d" % i for i in range(a, b)]

        # 30 in q3: s3 holds the first, its request held at the gate.
        for rid in backlog(0, 30):
            self.post(eng, "q1", {"id": rid}, pri=100)
        self.wait(lambda: sum(rec.asked.values()) == 1, 20, "s3 to ask for its first record", eng)
        self.wait_depth(eng, "q3", 30)
        # 30 in q2 (s2 paused), then 30 in q1 (s1 paused) and the urgent.
        self.qctl_ok(eng, "pause", "q2")
        for rid in backlog(30, 60):
            self.post(eng, "q1", {"id": rid}, pri=100)
        self.wait_depth(eng, "q2", 30)
        self.qctl_ok(eng, "pause", "q1")
        for rid in backlog(60, 90):
            self.post(eng, "q1", {"id": rid}, pri=100)
        urgent = ["u%d" % i for i in range(5)]
        for rid in urgent:
            self.post(eng, "q1", {"id": rid}, pri=0)
        # (s3 works b000 held in memory: it is still ready on disk.)
        stats = eng.stats()
        self.assertEqual((stats["q1"]["ready"], stats["q2"]["ready"], stats["q3"]["ready"],
                          stats["q3"]["reserved"]), (35, 30, 30, 0))

        # Both stages move everything on to q3; the priorities went with it.
        self.qctl_ok(eng, "resume", "q1")
        self.qctl_ok(eng, "resume", "q2")
        self.wait_depth(eng, "q3", 95)
        self.wait_empty(eng, ["q1", "q2"])
        p3 = self.pris(eng, "q3")
        self.assertEqual({r: p3[r] for r in urgent}, {r: 0 for r in urgent},
                         "the urgent records reached q3 at another priority")
        self.assertEqual({p3[r] for r in backlog(0, 90)}, {100},
                         "the backlog reached q3 at another priority")

        rec.gate.set()
        self.wait_depth(eng, "done", 95, timeout=40)
        self.assertEqual(rec.order[0], "b000")
        self.assertEqual(sorted(rec.order[1:6]), urgent,
                         "s3 did not take the urgent records first: %s" % rec.order[:12])
        self.assertEqual(rec.order[6:], backlog(1, 90))
        # The third stage lands rows: the references it puts keep them too.
        pd = self.pris(eng, "done")
        self.assertEqual({r: pd[r] for r in urgent}, {r: 0 for r in urgent})
        self.assertEqual({pd[r] for r in backlog(0, 90)}, {100})
        self.assertEqual(dict(rec.asked), {r: 1 for r in urgent + backlog(0, 90)})
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())

    def test_a_stage_sets_the_priority_from_a_field_or_a_number(self):
        eng = self.engine(pipeline("priority_set"))
        eng.start()
        self.qctl_ok(eng, "pause", "picked")
        self.qctl_ok(eng, "pause", "kept")
        self.qctl_ok(eng, "pause", "out")
        # priority_field of the job body: the field wins; without it (or
        # null) the job's own priority goes on; a value that is not a
        # priority buries the job, saying what it holds.
        self.post(eng, "in", {"id": 1, "urgency": 3}, pri=500)
        self.post(eng, "in", {"id": 2}, pri=9)
        self.post(eng, "in", {"id": 3, "urgency": None}, pri=11)
        self.post(eng, "in", {"id": 4, "urgency": 4294967295})
        bad = {5: '"high"', 6: "-1", 7: "4294967296", 8: "2.5", 9: '"3"'}
        for rid, text in bad.items():
            r = eng.put("in", '{"id": %d, "urgency": %s}' % (rid, text))
            self.assertEqual(r.status, 202, r)
        self.wait_depth(eng, "picked", 4)
        self.wait_depth(eng, "in", len(bad), states=("buried",))
        self.assertEqual(self.pris(eng, "picked"), {"1": 3, "2": 9, "3": 11, "4": 4294967295})
        buried = {j["body"]["id"]: j["error"] for j in eng.peek("in", "buried")}
        self.assertEqual(set(buried), set(bad))
        for rid, text in bad.items():
            self.assertIn("priority_field 'urgency' holds %s;" % text, buried[rid])
            self.assertIn("0..4294967295", buried[rid])

        # validate: the normalised row is the record (the model's default
        # fills a missing urgency); `priority: 7` sets every output of fix.
        self.post(eng, "rows", {"model": "tasks", "row": {"id": 1, "urgency": 2}}, pri=300)
        self.post(eng, "rows", {"model": "tasks", "row": {"id": 2}}, pri=300)
        self.wait_depth(eng, "kept", 2)
        self.wait_depth(eng, "out", 2)
        self.assertEqual(self.pris(eng, "kept"), {"1": 2, "2": 50})
        self.assertEqual(self.pris(eng, "out"), {"1": 7, "2": 7})
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())

    def test_check_refuses_what_cannot_be_a_priority(self):
        base = pipeline("priority_set").replace("${port}", "7999")
        cases = [
            (base.replace("    priority: 7", "    priority: -1"), "priority"),
            (base.replace("    priority: 7", "    priority: 4294967296"), "priority"),
            (base.replace("    priority: 7", "    priority: urgent"), "priority"),
            (base.replace("    output: [checked, kept]\n    priority_field: urgency",
                          "    output: [checked, kept]\n    priority_field: urgncy"),
             "priority_field: model 'tasks' has no property 'urgncy'; did you mean 'urgency'?"),
            (base.replace("      urgency: {type: integer, min: 0, default: 50}",
                          "      urgency: {type: string}"),
             "priority_field: property 'urgency' of model 'tasks' is string; a priority is a "
             "whole number"),
            (base.replace("    priority: 7", "    priority: 7\n  - name: seal\n    kind: batch\n"
                          "    input: kept\n    priority_field: urgency"),
             "priority_field: a batch stage puts no job"),
        ]
        r, _ = self.check_pipeline(base)
        self.assertEqual(r.code, 0, r.err)
        for text, want in cases:
            r, path = self.check_pipeline(text)
            self.assertEqual(r.code, 1, "pickline check took:\n%s" % text)
            self.assertIn(want, r.err)
            self.assertIn(path + ":", r.err)


if __name__ == "__main__":
    unittest.main()
