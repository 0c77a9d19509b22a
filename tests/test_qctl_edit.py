"""qctl edit (issue 13, item 8): what is stuck is fixed in place. The real
qctl opens the text in $EDITOR (here a small script that replaces text and
keeps a copy of what it was shown) or reads it with --body -, checks it
(JSON; a row against its model) and writes it back in one transaction;
a reserved job is refused. The rows come from the real engine (validate and
batch stages), so the rejects and staged rows are the line's own."""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import EngineTestCase, qctl  # noqa: E402
from plhelp import SLOW, binary, pipeline  # noqa: E402

EDITOR = """\
import json, os, sys
path = sys.argv[1]
text = open(path, encoding="utf-8").read()
with open(os.environ["EDIT_SAW"], "w", encoding="utf-8") as f:
    f.write(text)
for old, new in json.loads(os.environ.get("EDIT_SUB", "[]")):
    text = text.replace(old, new)
with open(path, "w", encoding="utf-8") as f:
    f.write(text)
sys.exit(int(os.environ.get("EDIT_EXIT", "0")))
"""


class QctlEditTest(EngineTestCase):
    def setUp(self):
        super().setUp()
        self.editor = self.write("editor.py", EDITOR)
        self.saw = os.path.join(self.dir, "saw.txt")
        self.tmpdir = os.path.join(self.dir, "tmp")
        os.mkdir(self.tmpdir)

    def edit(self, data, *args, sub=(), body=None, exit_code=0):
        """qctl --data DATA edit ARGS, the editor replacing each (old, new) of
        sub (or --body - with body on stdin); returns the CompletedProcess."""
        env = dict(os.environ, EDITOR="%s %s" % (sys.executable, self.editor), EDIT_SAW=self.saw,
                   EDIT_SUB=json.dumps(list(sub)), EDIT_EXIT=str(exit_code), TMPDIR=self.tmpdir)
        env.pop("VISUAL", None)
        argv = ["edit"] + [str(a) for a in args]
        if body is not None:
            argv += ["--body", "-"]
        return subprocess.run([binary("qctl"), "--data", data] + argv, input=body or "",
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, timeout=30 * SLOW)

    def shown(self):
        with open(self.saw, encoding="utf-8") as f:
            return f.read()

    def kept(self):
        return sorted(os.listdir(self.tmpdir))

    def test_edit_a_job_body(self):
        data = self.data
        p = qctl(data, "put", "q", '{"id": 1, "note": "tpyo"}')
        self.assertEqual(p.returncode, 0, p.stderr)
        jid = p.stdout.strip()
        p = self.edit(data, jid, sub=[("tpyo", "typo")])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.shown().strip(), '{"id": 1, "note": "tpyo"}')
        self.assertIn("job %s: body written" % jid, p.stdout)
        job = json.loads(qctl(data, "show", jid, "--json").stdout)
        self.assertEqual(job["body"], {"id": 1, "note": "typo"})
        self.assertEqual((job["state"], job["queue"], job["priority"]), ("ready", "q", 1024))
        self.assertEqual(self.kept(), [])
        # Not JSON: refused, nothing written, the edit kept in its file.
        p = self.edit(data, jid, sub=[("}", "")])
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("is not JSON", p.stderr)
        self.assertEqual(len(self.kept()), 1)
        self.assertIn(os.path.join(self.tmpdir, self.kept()[0]), p.stderr)
        os.unlink(os.path.join(self.tmpdir, self.kept()[0]))
        self.assertEqual(json.loads(qctl(data, "show", jid, "--json").stdout)["body"],
                         {"id": 1, "note": "typo"})
        # The editor fails: nothing written.
        p = self.edit(data, jid, sub=[("typo", "x")], exit_code=3)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("exited with 3; nothing was written", p.stderr)
        # --body -: no editor.
        p = self.edit(data, jid, body='{"id": 1, "note": "from stdin"}')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(qctl(data, "show", jid, "--json").stdout)["body"],
                         {"id": 1, "note": "from stdin"})
        # Reserved: refused, before any editor runs; released: edited.
        r = json.loads(qctl(data, "reserve", "q", "--json").stdout)
        os.unlink(self.saw)
        p = self.edit(data, jid, sub=[("stdin", "again")])
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("job %s is reserved" % jid, p.stderr)
        self.assertFalse(os.path.exists(self.saw), "the editor ran for a reserved job")
        self.assertEqual(qctl(data, "release", jid, "--lease", r["lease"]).returncode, 0)
        p = self.edit(data, jid, "--json", sub=[("stdin", "again")])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["what"], "job")
        self.assertEqual(json.loads(qctl(data, "show", jid, "--json").stdout)["body"]["note"],
                         "from again")
        p = self.edit(data, "999")
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("job 999 does not exist", p.stderr)

    def test_edit_a_reject_then_replay_it(self):
        eng = self.engine(pipeline("edit"))
        eng.start()
        r = eng.put("in", {"model": "users", "row": {"id": 7, "email": "seven-at-example"}})
        self.assertEqual(r.status, 202, r)
        rj = self.wait(lambda: self.rejects(eng), 10, "the reject", eng)[0]
        self.assertEqual(rj["key"], "7")
        # A fix that still breaks a rule: refused with the rule, nothing written.
        p = self.edit(eng.data, "--reject", rj["id"], sub=[("seven-at-example", "x@y")])
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("breaks model 'users'", p.stderr)
        self.assertIn('"rule":"length"', p.stderr)
        self.assertEqual(json.loads(self.shown()), {"id": 7, "email": "seven-at-example"})
        self.assertEqual(self.rejects(eng)[0]["row"], {"id": 7, "email": "seven-at-example"})
        for f in self.kept():
            os.unlink(os.path.join(self.tmpdir, f))
        # A good fix: the reject holds it (normalised), a replay lands it.
        p = self.edit(eng.data, "--reject", rj["id"],
                      sub=[("seven-at-example", "seven@example.com")])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("reject %d: row written" % rj["id"], p.stdout)
        now = self.rejects(eng)[0]
        self.assertEqual(now["row"], {"id": 7, "email": "seven@example.com", "name": None})
        self.assertEqual((now["key"], now["errors"], now["job"]), (rj["key"], rj["errors"], rj["job"]))
        p = qctl(eng.data, "rejects", "replay", rj["id"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.wait_empty(eng, ["in", "checked"])
        bs = self.wait(lambda: [b for b in self.batches(eng) if b["state"] == "sealed"], 10,
                       "a sealed batch", eng)
        self.assertEqual(self.batch_rows(eng, bs[0]["id"]),
                         [{"id": 7, "email": "seven@example.com", "name": None}])
        self.assertEqual(self.rejects(eng), [])
        p = self.edit(eng.data, "--reject", rj["id"])
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("reject %d does not exist" % rj["id"], p.stderr)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())

    def test_edit_a_staged_row(self):
        eng = self.engine(pipeline("edit"))
        eng.start()
        self.assertEqual(qctl(eng.data, "pause", "checked").returncode, 0)
        for i in (1, 2):
            r = eng.put("in", {"model": "users", "row": {"id": i, "email": "u%d@example.com" % i,
                                                          "name": "Nmae %d" % i}})
            self.assertEqual(r.status, 202, r)
        self.wait_depth(eng, "checked", 2)
        jobs = {j["body"]["key"]: j for j in eng.peek("checked")}
        j1, j2 = jobs["1"], jobs["2"]
        # By the job that references it.
        p = self.edit(eng.data, "--row", j1["id"], sub=[("Nmae", "Name")])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(self.shown()),
                         {"id": 1, "email": "u1@example.com", "name": "Nmae 1"})
        self.assertIn("staged row users/1 (instance %d): row written" % j1["body"]["row_id"],
                      p.stdout)
        # By model, key and instance; a change of its key, or a broken rule, is refused.
        args = ("--row", "users", "2", j2["body"]["row_id"])
        p = self.edit(eng.data, *args, sub=[('"id":2', '"id":3')])
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("give the key '3', but the row is staged as '2'", p.stderr)
        p = self.edit(eng.data, *args, sub=[("Nmae 2", "N" * 21)])
        self.assertEqual(p.returncode, 1, p)
        self.assertIn('"rule":"length"', p.stderr)
        p = self.edit(eng.data, *args, body='{"id": 2, "email": "two@example.com"}')
        self.assertEqual(p.returncode, 0, p.stderr)
        p = self.edit(eng.data, "--row", "users", "2", "999999")
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("does not exist", p.stderr)
        # A job that names no staged row.
        jid = qctl(eng.data, "put", "other", '{"x": 1}').stdout.strip()
        p = self.edit(eng.data, "--row", jid)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("names no staged row", p.stderr)
        # The line batches the edited rows.
        self.assertEqual(qctl(eng.data, "resume", "checked").returncode, 0)
        self.wait_empty(eng, ["in", "checked"])
        bs = self.wait(lambda: [b for b in self.batches(eng) if b["state"] == "sealed"], 10,
                       "a sealed batch", eng)
        rows = sorted(sum((self.batch_rows(eng, b["id"]) for b in bs), []), key=lambda r: r["id"])
        self.assertEqual(rows, [{"id": 1, "email": "u1@example.com", "name": "Name 1"},
                                {"id": 2, "email": "two@example.com", "name": None}])
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())


class DeleteReferenceTest(EngineTestCase):
    """A job that references a staged row holds the row: deleting, acking or
    purging it with qctl gives the reference up, and the last one deletes the
    row (else nothing would ever name it again, and the store would keep it
    for good)."""

    def staged(self, data):
        p = qctl(data, "info", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)["staged"]

    def test_deleting_reference_jobs_deletes_their_rows(self):
        eng = self.engine(pipeline("edit"))
        eng.start()
        self.assertEqual(qctl(eng.data, "pause", "checked").returncode, 0)
        for i in range(1, 8):
            r = eng.put("in", {"model": "users", "row": {"id": i, "email": "u%d@example.com" % i}})
            self.assertEqual(r.status, 202, r)
        self.wait_depth(eng, "checked", 7)
        eng.terminate()
        jobs = sorted(eng.peek("checked"), key=lambda j: j["body"]["key"])
        self.assertEqual(self.staged(eng.data)["rows"], 7)
        # delete, ack and bury-then-delete one each.
        p = qctl(eng.data, "delete", jobs[0]["id"])
        self.assertEqual(p.returncode, 0, p.stderr)
        p = qctl(eng.data, "ack", jobs[1]["id"])
        self.assertEqual(p.returncode, 0, p.stderr)
        p = qctl(eng.data, "bury", jobs[2]["id"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.staged(eng.data)["rows"], 5)  # a buried job still holds its row
        p = qctl(eng.data, "delete", jobs[2]["id"])
        self.assertEqual(p.returncode, 0, p.stderr)
        st = self.staged(eng.data)
        self.assertEqual((st["rows"], st["refs"]), (4, 4))
        # A purge gives up the rest.
        p = qctl(eng.data, "purge", "checked")
        self.assertEqual(p.returncode, 0, p.stderr)
        st = self.staged(eng.data)
        self.assertEqual((st["rows"], st["refs"]), (0, 0))
        # A job that is no reference is deleted as before.
        jid = qctl(eng.data, "put", "other", '{"model": "users", "key": "1"}').stdout.strip()
        p = qctl(eng.data, "delete", jid)
        self.assertEqual(p.returncode, 0, p.stderr)


if __name__ == "__main__":
    unittest.main()
