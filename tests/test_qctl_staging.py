"""End-to-end tests of qctl's staging commands: schema, batches and rejects.

Every test runs the real binaries as separate processes on a fresh temporary
data directory: tests/prog_stagefill validates NDJSON rows with a model and
stages them (batches, rejects, the pipeline text kept in the store) as the
engine's validate and batch stages do, and qctl reads and repairs them. A
refused command must change nothing: the tests compare everything qctl can
see (every batch with all its rows, every reject, the queues) before and
after.
"""
import json
import os
import re
import signal
import socket
import subprocess
import time
import unittest

import plhelp

PIPELINE = """\
queues:
  validate:
  final:
stages:
  - name: check
    kind: validate
    input: validate
    model: users
    output: final
  - name: load
    kind: batch
    input: final
    rows: 1000
    seconds: 3600
models:
  users:
    drift: reject
    properties:
      id: {type: integer, key: true}
      tenant: {type: integer, required: true, min: 0}
      email:
        type: string
        length: [5, 99]
        format: email
        messages: {format: "email must look like a@b.c"}
      permission: {type: integer, default: 1}
      note: {type: text}
    belongs_to:
      tenant_ref: {model: tenants, fields: [tenant]}
  tenants:
    properties:
      id: {type: integer, key: true}
      name: {type: string, length: 20, required: true}
"""

# The same models, but an email is any string: the rejected rows pass.
RELAXED = PIPELINE.replace("        format: email\n", "")

# For the engine: the validate stage holds a batch with more than one
# reject; the batch stage seals every 2 rows.
ENGINE = PIPELINE.replace("    output: final\n",
                          "    output: final\n    reject_threshold: {count: 1}\n") \
                 .replace("rows: 1000", "rows: 2") + """\
listen:
  address: 127.0.0.1
  port: 1
drain: 2
"""

NO_MODELS = """\
queues:
  a:
  b:
stages:
  - name: pass
    kind: noop
    input: a
    output: b
"""


def user(i, **kw):
    row = {"id": i, "tenant": 1, "email": "u%d@example.com" % i}
    row.update(kw)
    return row


def ndjson(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


class StagingCase(plhelp.TempDirTest):

    def setUp(self):
        super().setUp()
        self.qctl = plhelp.binary("qctl")
        self.stagefill = plhelp.binary("tests/prog_stagefill")
        self.env = dict(os.environ)
        self.env.pop("PICKLINE_DATA", None)
        self.pipeline = self.write("pipeline.yml", PIPELINE)

    # ------------------------------------------------------------ running
    def q(self, *args, input=None, data=None):
        argv = [self.qctl, "--data", data or self.data] + list(args)
        return plhelp.run(argv, input=input, env=self.env)

    def ok(self, *args, **kw):
        r = self.q(*args, **kw)
        self.assertEqual(r.code, 0, r)
        self.assertEqual(r.err, "", r)
        return r

    def fails(self, code, *args, **kw):
        """A command that must fail with exit code `code`: nothing on stdout,
        one 'qctl: ...' message on stderr."""
        r = self.q(*args, **kw)
        self.assertEqual(r.code, code, r)
        self.assertEqual(r.out_b, b"", r)
        self.assertTrue(r.err.startswith("qctl: "), r)
        return r

    def fill(self, rows, *flags, model="users", pipeline=None, code=0):
        """Stages rows (dicts, or raw lines) with prog_stagefill; returns the
        ids of the batches it sealed."""
        text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
        r = plhelp.run([self.stagefill, self.data, pipeline or self.pipeline, model] +
                       list(flags), input=text, env=self.env)
        self.assertEqual(r.code, code, r)
        return [int(x) for x in r.out.split()]

    def batches(self, *args):
        return self.ok("batches", "--json", "--limit", "0", *args).json()

    def batch(self, bid, rows=1000000):
        return self.ok("batches", "show", str(bid), "--rows", str(rows), "--json").json()

    def rejects(self, *args):
        return self.ok("rejects", "--json", "--limit", "0", *args).json()

    def snapshot(self):
        """Everything qctl can see: every batch with all its rows, every
        reject, the queues."""
        bs = self.batches()
        return (bs, [self.batch(b["id"]) for b in bs], self.rejects(),
                self.ok("stats", "--json").json())

    def assertUnchanged(self, before):
        self.assertEqual(self.snapshot(), before)


class SchemaTest(StagingCase):

    def test_schema_human_json_ddl(self):
        self.fill([user(1)])
        r = self.ok("schema")
        out = r.out
        # load order: parents first
        self.assertLess(out.index("model tenants"), out.index("model users"), out)
        self.assertIn("load order: tenants users", out)
        self.assertRegex(out, r"model users +\(table users; key id; drift reject\)")
        lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ") and
                 ln.split()[0] in ("id", "tenant", "email", "permission", "note")}
        self.assertEqual(sorted(lines), ["email", "id", "note", "permission", "tenant"], out)
        self.assertRegex(lines["id"], r"integer +key")
        self.assertRegex(lines["tenant"], r"integer +required min 0")
        self.assertRegex(lines["email"], r"string +length 5..99 format email message\(format\)")
        self.assertRegex(lines["permission"], r"integer +default 1")
        self.assertRegex(lines["note"], r"text +-")
        self.assertIn("belongs_to tenant_ref -> tenants (tenant)", out)

        doc = self.ok("schema", "--json").json()
        self.assertEqual(doc["load_order"], ["tenants", "users"])
        users = [m for m in doc["models"] if m["name"] == "users"][0]
        self.assertEqual([f["name"] for f in users["fields"]],
                         ["id", "tenant", "email", "permission", "note"])
        self.assertEqual(users["key"], ["id"])

        ddl = self.ok("schema", "--ddl").out
        self.assertEqual(ddl.count("CREATE TABLE IF NOT EXISTS"), 2, ddl)
        self.assertLess(ddl.index('"tenants"'), ddl.index('"users"'), ddl)
        self.assertIn("FOREIGN KEY", ddl)

        # --pipeline reads a file and needs no data directory at all
        missing = os.path.join(self.tmp, "nope")
        r2 = self.ok("schema", "--pipeline", self.pipeline, data=missing)
        self.assertEqual(r2.out, out)
        self.assertFalse(os.path.exists(missing))

        r = self.fails(2, "schema", "--json", "--ddl")
        self.assertIn("--ddl", r.err)

    def test_schema_errors_name_the_fix(self):
        # a data directory without a stored pipeline
        self.ok("put", "q", "{}")
        r = self.fails(1, "schema")
        self.assertIn("no pipeline file is stored", r.err)
        self.assertIn("--pipeline FILE", r.err)
        self.assertIn("pickline run", r.err)
        # no data directory at all
        r = self.fails(1, "schema", data=os.path.join(self.tmp, "nope"))
        self.assertIn("--data", r.err)
        # a file that does not exist, or has no models
        r = self.fails(1, "schema", "--pipeline", os.path.join(self.tmp, "missing.yml"))
        self.assertIn("missing.yml", r.err)
        r = self.fails(1, "schema", "--pipeline", self.write("plain.yml", NO_MODELS))
        self.assertIn("declares no models", r.err)
        self.assertIn("models:", r.err)


class BatchesTest(StagingCase):

    def test_list_filter_limit_and_json_shape(self):
        sealed = self.fill([user(i) for i in range(1, 8)], "--batch-rows", "3")
        self.assertEqual(len(sealed), 3, sealed)
        self.assertEqual(self.fill([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
                                   "--no-seal", model="tenants"), [])
        bs = self.batches()
        self.assertEqual([b["id"] for b in bs], sorted(b["id"] for b in bs))
        self.assertEqual(len(bs), 4)
        for b in bs:
            self.assertEqual(set(b), {"id", "model", "state", "rows", "removed", "rejects",
                                      "created_ms", "sealed_ms", "loaded_ms", "attempts",
                                      "error", "model_version"})
        self.assertEqual([(b["model"], b["state"], b["rows"]) for b in bs],
                         [("users", "sealed", 3), ("users", "sealed", 3), ("users", "sealed", 1),
                          ("tenants", "open", 2)])
        self.assertEqual([b["id"] for b in bs[:3]], sealed)
        self.assertIsNone(bs[3]["sealed_ms"])
        self.assertIsInstance(bs[0]["sealed_ms"], int)
        self.assertIsNone(bs[0]["loaded_ms"])
        self.assertIsNone(bs[0]["error"])
        self.assertEqual(bs[0]["removed"], 0)

        self.assertEqual([b["id"] for b in self.batches("--state", "open")], [bs[3]["id"]])
        self.assertEqual([b["id"] for b in self.batches("--model", "tenants")], [bs[3]["id"]])
        self.assertEqual(self.batches("--state", "failed"), [])
        # --limit keeps the newest
        r = self.ok("batches", "--json", "--limit", "2")
        self.assertEqual([b["id"] for b in r.json()], [bs[2]["id"], bs[3]["id"]])

        out = self.ok("batches").out
        rows = [ln.split() for ln in out.splitlines() if re.match(r" *\d+ +(users|tenants) ", ln)]
        self.assertEqual([(int(x[0]), x[1], x[2], int(x[3])) for x in rows],
                         [(b["id"], b["model"], b["state"], b["rows"]) for b in bs], out)
        self.assertIn("4 batches, 9 rows, 0 rejects (open 1, sealed 3, held 0, loading 0, "
                      "loaded 0, failed 0)", out)
        out = self.ok("batches", "--limit", "1").out
        self.assertIn("showing the newest 1", out)
        self.assertIn("4 batches", out)
        self.assertIn("no failed batches", self.ok("batches", "--state", "failed").out)

        before = self.snapshot()
        r = self.fails(2, "batches", "--state", "frozen")
        self.assertIn("open, sealed, held", r.err)
        self.fails(2, "batches", "--model", "9x")
        self.fails(2, "batches", "--limit", "-1")
        self.assertUnchanged(before)

    def test_show_record_and_rows(self):
        [bid] = self.fill([user(1), user(2, note="a \"quoted\"\nline, with ü"), user(3)])
        doc = self.batch(bid)
        self.assertEqual(doc["id"], bid)
        self.assertEqual(doc["state"], "sealed")
        self.assertEqual([d["seq"] for d in doc["data"]], [0, 1, 2])
        # the rows as staged: normalised, declared order, defaults filled in
        self.assertEqual(list(doc["data"][1]["row"]),
                         ["id", "tenant", "email", "permission", "note"])
        self.assertEqual(doc["data"][1]["row"],
                         {"id": 2, "tenant": 1, "email": "u2@example.com", "permission": 1,
                          "note": "a \"quoted\"\nline, with ü"})
        self.assertIsNone(doc["data"][0]["row"]["note"])
        one = self.ok("batches", "show", str(bid), "--rows", "1", "--json").json()
        self.assertEqual(one["data"], doc["data"][:1])
        self.assertEqual(self.ok("batches", "show", str(bid), "--rows", "0", "--json")
                         .json()["data"], [])

        out = self.ok("batches", "show", str(bid), "--rows", "2").out
        self.assertRegex(out, r"batch +%d\n" % bid)
        self.assertRegex(out, r"state +sealed\n")
        self.assertIn('"email":"u1@example.com"', out)
        self.assertIn("1 more; --rows N shows more", out)

        r = self.fails(1, "batches", "show", "999")
        self.assertIn("batch 999 does not exist", r.err)
        self.assertIn("qctl batches", r.err)
        self.fails(2, "batches", "show", "x1")
        self.fails(2, "batches", "show")

    def test_seal_now(self):
        self.assertEqual(self.fill([user(1), user(2)], "--no-seal"), [])
        [open_] = self.batches()
        self.assertEqual(open_["state"], "open")
        r = self.ok("batches", "seal", "users")
        self.assertEqual(r.out, "sealed batch %d of model users: 2 rows\n" % open_["id"])
        b = self.batch(open_["id"])
        self.assertEqual(b["state"], "sealed")
        self.assertIsInstance(b["sealed_ms"], int)
        self.assertEqual(len(b["data"]), 2)
        # nothing open: nothing to do, and that is not an error
        before = self.snapshot()
        self.assertIn("nothing sealed", self.ok("batches", "seal", "users").out)
        self.assertEqual(self.ok("batches", "seal", "users", "--json").json(), [])
        self.assertIn("nothing sealed", self.ok("batches", "seal", "nomodel").out)
        self.assertUnchanged(before)

        # --all: every model's open batch, at once
        self.fill([user(3)], "--no-seal")
        self.fill([{"id": 1, "name": "a"}], "--no-seal", model="tenants")
        opened = [b["id"] for b in self.batches("--state", "open")]
        self.assertEqual(len(opened), 2)
        got = self.ok("batches", "seal", "--all", "--json").json()
        self.assertEqual(sorted(b["id"] for b in got), sorted(opened))
        self.assertTrue(all(b["state"] == "sealed" for b in got), got)
        self.assertEqual(self.batches("--state", "open"), [])

        before = self.snapshot()
        self.fails(2, "batches", "seal")
        self.fails(2, "batches", "seal", "users", "--all")
        self.assertUnchanged(before)

    def test_release_retry_fail_and_refusals(self):
        [bid] = self.fill([user(1), user(2)])
        s = str(bid)

        def refused(args, *words):
            before = self.snapshot()
            r = self.fails(1, "batches", *args)
            for w in words:
                self.assertIn(w, r.err, args)
            self.assertUnchanged(before)

        refused(["release", s], "batch %d is sealed" % bid, "only a held batch")
        refused(["retry", s], "batch %d is sealed" % bid, "only a failed batch")

        r = self.ok("batches", "fail", s, "--reason", "feed was bad", "--json").json()
        self.assertEqual((r["id"], r["state"], r["was"], r["error"]),
                         (bid, "failed", "sealed", "feed was bad"))
        self.assertEqual(self.batch(bid)["state"], "failed")
        self.assertEqual(len(self.batch(bid)["data"]), 2)  # the rows stay
        refused(["fail", s], "batch %d is failed" % bid, "only a held or sealed batch")
        refused(["release", s], "is failed, not held", "qctl batches retry %d" % bid)

        r = self.ok("batches", "retry", s)
        self.assertEqual(r.out, "batch %d (model users): failed -> sealed\n" % bid)
        b = self.batch(bid)
        self.assertEqual((b["state"], b["error"]), ("sealed", None))

        r = self.ok("batches", "fail", s)
        self.assertEqual(r.out, "batch %d (model users): sealed -> failed\n" % bid)
        self.assertEqual(self.batch(bid)["error"], "failed by an operator (qctl)")
        self.ok("batches", "retry", s)

        # an open batch cannot be failed, released or retried
        self.fill([user(3)], "--no-seal")
        [o] = self.batches("--state", "open")
        refused(["fail", str(o["id"])], "is open", "qctl batches seal")
        refused(["release", str(o["id"])], "is open")
        refused(["retry", str(o["id"])], "is open")
        # unknown and malformed ids
        refused(["release", "4242"], "batch 4242 does not exist")
        before = self.snapshot()
        self.fails(2, "batches", "retry", "0")
        self.fails(2, "batches", "fail", s, "--reason", "")
        self.fails(2, "batches", "fail")
        self.assertUnchanged(before)


class RejectsTest(StagingCase):

    def stage_with_rejects(self):
        """Three valid rows, two rejected ones; returns the rejects."""
        bad_email = user(4, email="not-an-email")
        no_tenant = {"id": 5, "email": "u5@example.com"}
        self.fill([user(1), bad_email, user(2), no_tenant, user(3)], "--reject", "--no-seal")
        rs = self.rejects()
        self.assertEqual(len(rs), 2, rs)
        return rs, bad_email, no_tenant

    def test_list_show_export(self):
        rs, bad_email, no_tenant = self.stage_with_rejects()
        for r in rs:
            self.assertEqual(set(r), {"id", "model", "key", "stage", "queue", "batch",
                                      "time_ms", "row", "errors", "job"})
            self.assertEqual((r["model"], r["stage"], r["queue"], r["batch"], r["job"]),
                             ("users", "prog_stagefill", None, None, None))
            self.assertIsInstance(r["time_ms"], int)
        self.assertEqual([r["row"] for r in rs], [bad_email, no_tenant])
        self.assertEqual([r["key"] for r in rs], ["4", "5"])
        self.assertEqual(rs[0]["errors"], [{"field": "email", "rule": "format",
                                            "message": "email must look like a@b.c"}])
        self.assertEqual([(e["field"], e["rule"]) for e in rs[1]["errors"]],
                         [("tenant", "required")])
        # the open batch counted them
        [b] = self.batches()
        self.assertEqual((b["state"], b["rows"], b["rejects"]), ("open", 3, 2))

        out = self.ok("rejects").out
        lines = [ln for ln in out.splitlines() if re.match(r" *\d+ +users ", ln)]
        self.assertEqual(len(lines), 2, out)
        self.assertRegex(lines[0], r"^ *%d +users +4 +prog_stagefill .*email format: email "
                                   r"must look like a@b\.c" % rs[0]["id"])
        self.assertRegex(lines[1], r"tenant required: ")
        self.assertIn("2 of 2 rejects", out)
        out = self.ok("rejects", "--limit", "1").out
        self.assertIn("1 of 2 rejects", out)
        self.assertIn("--limit N shows more", out)
        self.assertEqual(len(self.rejects("users")), 2)
        self.assertEqual(self.rejects("tenants"), [])
        self.assertIn("no rejects of model 'tenants'", self.ok("rejects", "tenants").out)

        one = self.ok("rejects", "show", str(rs[0]["id"]), "--json").json()
        self.assertEqual(one, rs[0])
        out = self.ok("rejects", "show", str(rs[0]["id"])).out
        self.assertRegex(out, r"reject +%d\n" % rs[0]["id"])
        self.assertIn("email format: email must look like a@b.c", out)
        self.assertIn('"email":"not-an-email"', out)
        self.assertIn("appends the row to the open batch of model users", out)

        exp = self.ok("rejects", "export").out
        self.assertTrue(exp.endswith("\n"))
        self.assertEqual([json.loads(ln) for ln in exp.splitlines()], rs)
        self.assertEqual(self.ok("rejects", "export", "tenants").out, "")
        self.fails(2, "rejects", "export", "--json")

        r = self.fails(1, "rejects", "show", "999")
        self.assertIn("reject 999 does not exist", r.err)
        self.assertIn("qctl rejects", r.err)
        self.fails(2, "rejects", "show", "-3")

    def test_replay_fixed_row_and_drop(self):
        rs, bad_email, no_tenant = self.stage_with_rejects()
        [b] = self.batches()
        rid = str(rs[0]["id"])

        # the stored row still breaks a rule: refused, nothing changes
        before = self.snapshot()
        r = self.fails(1, "rejects", "replay", rid)
        self.assertIn("reject %s stays" % rid, r.err)
        self.assertIn("email format: email must look like a@b.c", r.err)
        self.assertIn("--row", r.err)
        # so does a fixed row that is still wrong, and bad JSON is a usage error
        r = self.fails(1, "rejects", "replay", rid, "--row", json.dumps(user(4, email="x")))
        self.assertIn("fixed row breaks the rules", r.err)
        r = self.fails(2, "rejects", "replay", rid, "--row", '{"id":4,')
        self.assertIn("--row", r.err)
        self.fails(2, "rejects", "replay", rid, "--row", "[1,2]")
        self.fails(2, "rejects", "replay", rid, "--all")
        self.fails(2, "rejects", "replay")
        self.assertUnchanged(before)

        fixed = user(4, email="four@example.com")
        r = self.ok("rejects", "replay", rid, "--row", json.dumps(fixed))
        self.assertEqual(r.out, "appended to batch %d\n" % b["id"])
        self.assertEqual([x["id"] for x in self.rejects()], [rs[1]["id"]])
        data = self.batch(b["id"])["data"]
        self.assertEqual(len(data), 4)
        self.assertEqual(data[3]["row"], dict(fixed, permission=1, note=None))

        # the fixed row from stdin, and the --json shape
        r = self.ok("rejects", "replay", str(rs[1]["id"]), "--row", "-", "--json",
                    input=json.dumps(dict(no_tenant, tenant=7)))
        self.assertEqual(r.json(), {"id": rs[1]["id"], "model": "users", "job": None,
                                    "batch": b["id"]})
        self.assertEqual(self.rejects(), [])
        self.assertEqual(self.batch(b["id"])["data"][4]["row"]["tenant"], 7)

        r = self.fails(1, "rejects", "replay", rid)
        self.assertIn("reject %s does not exist" % rid, r.err)

        # drop
        self.fill([user(9, email="nine")], "--reject", "--no-seal")
        [x] = self.rejects()
        before = self.snapshot()
        self.assertEqual(self.ok("rejects", "drop", str(x["id"]), "--json").json(),
                         {"id": x["id"], "dropped": True})
        self.assertEqual(self.rejects(), [])
        self.assertEqual(self.snapshot()[:2], before[:2])  # the batches are untouched
        r = self.fails(1, "rejects", "drop", str(x["id"]))
        self.assertIn("does not exist", r.err)
        self.fails(2, "rejects", "drop", "abc")

    def test_replay_all(self):
        rs, bad_email, no_tenant = self.stage_with_rejects()
        self.fill([{"id": 1}], "--reject", "--no-seal", model="tenants")  # no name
        self.assertEqual(len(self.rejects()), 3)

        # with the stored models every row is still invalid: all stay, exit 1
        before = self.snapshot()
        r = self.q("rejects", "replay", "--all")
        self.assertEqual(r.code, 1, r)
        self.assertIn("replayed 0 rejects", r.out)
        self.assertIn("3 rejects left in place", r.err)
        self.assertIn("--row JSON", r.err)
        self.assertUnchanged(before)

        # with models where the bad email passes, that one goes to its batch
        relaxed = self.write("relaxed.yml", RELAXED)
        r = self.q("rejects", "replay", "--all", "users", "--pipeline", relaxed, "--json")
        self.assertEqual(r.code, 1, r)
        self.assertEqual(r.json(), {"replayed": 1, "jobs": 0, "appended": 1, "invalid": 1,
                                    "gone": 0})
        self.assertEqual([x["id"] for x in self.rejects()], [rs[1]["id"], rs[1]["id"] + 1])
        users = self.batches("--model", "users")[0]
        self.assertEqual(self.batch(users["id"])["data"][3]["row"]["email"], "not-an-email")

        # the rest by hand, then --all has nothing left and succeeds
        self.ok("rejects", "drop", str(rs[1]["id"]))
        self.ok("rejects", "replay", str(rs[1]["id"] + 1), "--row", '{"id":1,"name":"one"}')
        r = self.ok("rejects", "replay", "--all")
        self.assertIn("replayed 0 rejects", r.out)
        self.assertEqual(self.rejects(), [])
        [t] = self.batches("--model", "tenants")
        self.assertEqual(self.batch(t["id"])["data"][0]["row"], {"id": 1, "name": "one"})

    def test_replay_needs_the_models(self):
        self.fill([user(1, email="bad")], "--reject", "--no-seal")
        [x] = self.rejects()
        before = self.snapshot()
        r = self.fails(1, "rejects", "replay", str(x["id"]), "--row", json.dumps(user(1)),
                       "--pipeline", os.path.join(self.tmp, "missing.yml"))
        self.assertIn("missing.yml", r.err)
        r = self.fails(1, "rejects", "replay", str(x["id"]), "--row", json.dumps(user(1)),
                       "--pipeline", self.write("plain.yml", NO_MODELS))
        self.assertIn("model 'users' is not declared", r.err)
        self.assertUnchanged(before)


class HelpTest(StagingCase):

    def test_help_and_subcommands(self):
        missing = os.path.join(self.tmp, "nope")
        r = self.ok("--help", data=missing)
        listed = re.findall(r"^  ([a-z][a-z-]+)\s", r.out.split("commands:")[1]
                            .split("global")[0], re.M)
        for cmd in ("schema", "batches", "rejects"):
            self.assertIn(cmd, listed)
        subs = {"batches": ["show", "seal", "release", "retry", "fail"],
                "rejects": ["show", "export", "replay", "drop"]}
        for cmd, names in subs.items():
            out = self.ok(cmd, "--help", data=missing).out
            self.assertTrue(out.startswith("usage: qctl [--data DIR] [--json] %s" % cmd), out)
            for n in names:
                self.assertIn("  %s %s " % (cmd, n), out)
                h = self.ok(cmd, n, "--help", data=missing).out
                self.assertTrue(h.startswith("usage: qctl [--data DIR] [--json] %s %s"
                                             % (cmd, n)), h)
        self.ok("schema", "-h", data=missing)
        self.assertFalse(os.path.exists(missing))

        r = self.fails(2, "batches", "frob")
        self.assertIn("'frob' is not a subcommand of 'batches'", r.err)
        r = self.fails(2, "batches", "--limit", "3", "show", "1")
        self.assertIn("go after it", r.err)
        r = self.fails(2, "batches", "show", "1", "--state", "open")
        self.assertIn("--state", r.err)

    def test_model_named_like_a_subcommand(self):
        # 'qctl rejects -- show' lists model 'show' instead of running show
        self.fill([user(1)], "--no-seal")
        self.assertIn("no rejects of model 'show'", self.ok("rejects", "--", "show").out)

    def test_top_counts_batches_and_rejects(self):
        self.fill([user(1), user(2, email="x")], "--reject", "--batch-rows", "1")
        self.fill([user(3)], "--no-seal")
        r = self.ok("top", "--iterations", "1")
        self.assertIn("batches  open 1, sealed 1, held 0, loading 0, loaded 0, failed 0; "
                      "rejects 1", r.out)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EngineTest(StagingCase):
    """Held batches and rejects with a queue come from the engine's validate
    and batch stages: run the real engine."""

    def start_engine(self):
        path = self.write("engine.yml", ENGINE)
        err = open(os.path.join(self.tmp, "engine.err"), "wb")
        proc = subprocess.Popen([plhelp.binary("pickline"), "run", path, "--data", self.data,
                                 "--port", str(free_port())],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err)

        def stop():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15 * plhelp.SLOW)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            err.close()
        self.addCleanup(stop)
        self.engine_err = err.name
        self.wait(lambda: os.path.exists(os.path.join(self.data, "data.mdb")) and
                  "validate" in self.q("stats", "--json").out, "the engine's queues", proc)
        return proc

    def wait(self, pred, what, proc, timeout=20):
        end = time.monotonic() + timeout * plhelp.SLOW
        while time.monotonic() < end:
            if proc.poll() is not None:
                break
            v = pred()
            if v:
                return v
            time.sleep(0.05)
        with open(self.engine_err, "rb") as f:
            tail = f.read()[-4000:].decode("utf-8", "replace")
        self.fail("timed out waiting for %s (engine exit %s)\n%s" % (what, proc.poll(), tail))

    def put(self, row):
        self.ok("put", "validate", json.dumps({"model": "users", "row": row}))

    def test_held_batch_and_replay_to_the_queue(self):
        proc = self.start_engine()
        # the engine keeps its pipeline in the store: schema needs no file
        self.assertIn("model users", self.ok("schema").out)
        bad1, bad2 = user(1, email="one"), user(2, tenant=-5)
        for row in (bad1, bad2):
            self.put(row)
        self.wait(lambda: len(self.rejects()) == 2, "two rejects", proc)
        for row in (user(3), user(4)):
            self.put(row)
        held = self.wait(lambda: self.batches("--state", "held"), "a held batch", proc)
        [b] = held
        self.assertEqual((b["model"], b["rows"], b["rejects"]), ("users", 2, 2))
        self.assertIn("qctl batches release %d" % b["id"], b["error"])

        rs = self.rejects()
        self.assertEqual([r["row"] for r in rs], [bad1, bad2])
        for r in rs:
            self.assertEqual((r["stage"], r["queue"], r["batch"]), ("check", "validate", None))
            self.assertIsNotNone(r["job"])

        # held: only release or fail; refusals change nothing
        before = self.snapshot()
        r = self.fails(1, "batches", "retry", str(b["id"]))
        self.assertIn("is held, not failed", r.err)
        self.assertIn("qctl batches release %d" % b["id"], r.err)
        self.assertUnchanged(before)
        r = self.ok("batches", "release", str(b["id"]), "--json").json()
        self.assertEqual((r["state"], r["was"], r["error"]), ("sealed", "held", None))

        # a reject with a queue: the fixed row goes back through validation
        r = self.ok("rejects", "replay", str(rs[0]["id"]), "--row",
                    json.dumps(user(1, email="one@example.com")))
        self.assertRegex(r.out, r"^\d+\n$")
        self.wait(lambda: [x for x in self.batches("--state", "open", "--model", "users")
                           if x["rows"] == 1], "the fixed row in a batch", proc)
        [o] = self.batches("--state", "open")
        self.assertEqual(self.batch(o["id"])["data"][0]["row"]["email"], "one@example.com")
        # the stored row, still invalid: validated again and rejected again
        r = self.ok("rejects", "replay", str(rs[1]["id"]), "--json").json()
        self.assertIsInstance(r["job"], int)
        self.assertIsNone(r["batch"])
        again = self.wait(lambda: [x for x in self.rejects() if x["id"] > rs[1]["id"]],
                          "the row rejected again", proc)
        self.assertEqual([x["row"] for x in again], [bad2])
        self.assertEqual([x["id"] for x in self.rejects()], [again[0]["id"]])
        self.assertIn("rejects 1", self.ok("top", "--iterations", "1").out)


if __name__ == "__main__":
    unittest.main()
