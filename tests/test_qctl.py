"""End-to-end tests of qctl, pickline's command line, against the scripting
contract of DESIGN.md ("Commands") and qctl's own --help.

Every test runs the real binary ($PICKLINE_BUILD/qctl) as separate processes
on a fresh temporary data directory, removed when the test ends.
"""
import json
import os
import re
import subprocess
import time
import unittest

import plhelp

SLOW = plhelp.SLOW

# Every command `qctl --help` lists (the test also checks the list itself).
COMMANDS = ["put", "reserve", "ack", "delete", "release", "bury", "touch", "kick",
            "kick-job", "peek", "show", "purge", "pause", "resume", "create", "configure",
            "stats", "queues", "info", "export", "import", "top", "compact", "schema", "batches", "rejects", "verify",
            "edit"]

STATE_KEYS = ("ready", "delayed", "reserved", "buried")


class QctlCase(plhelp.TempDirTest):
    """Helpers around one data directory (self.data)."""

    def setUp(self):
        super().setUp()
        self.qctl = plhelp.binary("qctl")
        self.env = dict(os.environ)
        self.env.pop("PICKLINE_DATA", None)

    # ------------------------------------------------------------ running
    def q(self, *args, input=None, data=None, timeout=30, preexec_fn=None, env=None,
          cwd=None, nodata=False):
        argv = [self.qctl]
        if not nodata:
            argv += ["--data", data or self.data]
        argv += list(args)
        return plhelp.run(argv, input=input, timeout=timeout, env=env or self.env, cwd=cwd,
                          preexec_fn=preexec_fn)

    def ok(self, *args, **kw):
        r = self.q(*args, **kw)
        self.assertEqual(r.code, 0, r)
        return r

    def fails(self, code, *args, **kw):
        """Runs a command that must fail with exit code `code`: nothing on
        stdout, a 'qctl: ...' message on stderr. Returns the Result."""
        r = self.q(*args, **kw)
        self.assertEqual(r.code, code, r)
        self.assertEqual(r.out_b, b"", r)
        self.assertTrue(r.err.startswith("qctl: "), r)
        return r

    def put(self, queue, body, *flags, **kw):
        r = self.ok("put", queue, *flags, body, **kw)
        self.assertRegex(r.out, r"\A[1-9][0-9]*\n\Z", r)
        return int(r.out)

    def reserve(self, queue, *flags):
        r = self.ok("reserve", queue, "--json", *flags)
        return json.loads(r.out)

    def show(self, job_id):
        return self.ok("show", str(job_id), "--json").json()

    def show_raw(self, job_id):
        """The body bytes exactly as stored, from the human 'show' (which
        prints 'body N bytes' and then the N raw bytes)."""
        r = self.ok("show", str(job_id))
        head, rest = r.out_b.split(b"\nbody ", 1)
        m = re.match(rb" *(\d+) bytes\n", rest)
        self.assertIsNotNone(m, r)
        n = int(m.group(1))
        raw = rest[m.end():m.end() + n]
        self.assertEqual(rest[m.end() + n:], b"\n", r)
        return raw

    def stats(self, *args, **kw):
        r = self.ok("stats", "--json", *args, **kw)
        return json.loads(r.out)

    def counts(self, queue):
        s = self.stats()[queue]
        return tuple(s[k] for k in STATE_KEYS)

    def snapshot(self):
        """Everything visible about the data: stats (without the age of the
        oldest job, which moves with the clock) and every job of every
        queue; None when the data directory does not exist."""
        if not os.path.exists(self.data):
            return None
        st = self.stats()
        snap = {}
        for name, s in st.items():
            s = dict(s)
            s.pop("oldest_ready_ms", None)
            jobs = self.ok("peek", name, "--state", "all", "--limit", "0", "--json").json()
            snap[name] = (s, jobs)
        return snap


# ======================================================================
# 1. put / reserve / ack: the scripting contract
# ======================================================================
class TestPutReserveContract(QctlCase):

    def test_put_prints_only_the_id(self):
        r = self.ok("put", "jobs", '{"n":1}')
        self.assertRegex(r.out, r"\A[1-9][0-9]*\n\Z")
        self.assertEqual(r.err, "")
        first = int(r.out)
        second = self.put("jobs", '{"n":2}')
        self.assertGreater(second, first)
        # --json (after or before the command): {"id":N,...}
        r = self.ok("put", "jobs", "--json", '{"n":3}')
        self.assertEqual(len(r.out_b.splitlines()), 1)
        obj = r.json()
        self.assertIsInstance(obj["id"], int)
        self.assertEqual(obj["existed"], False)
        r2 = self.ok("--json", "put", "jobs", '{"n":4}').json()
        self.assertEqual(len({first, second, obj["id"], r2["id"]}), 4)
        # --flag=value forms, the global --data=DIR anywhere
        r3 = plhelp.run([self.qctl, "put", "jobs", "--pri=3", "--data=" + self.data, '{"n":5}'],
                        env=self.env)
        self.assertEqual(r3.code, 0, r3)
        self.assertEqual(self.show(int(r3.out))["priority"], 3)
        self.assertEqual(self.counts("jobs"), (5, 0, 0, 0))

    def test_put_body_from_stdin(self):
        # '-' and no body argument both read stdin; the whitespace around
        # the value is not kept, the inside is kept byte for byte.
        a = self.put("q", "-", input=b'  \n {"a" :  [1, 2]}\n\n')
        r = self.ok("put", "q", input=b'"from stdin"')
        b = int(r.out)
        self.assertEqual(self.show_raw(a), b'{"a" :  [1, 2]}')
        self.assertEqual(self.show(b)["body"], "from stdin")
        # a JSON body that starts with '-' goes after '--'
        c = self.put("q", "-98765432109876543210", "--")
        self.assertEqual(self.show(c)["body"], -98765432109876543210)

    def test_reserve_json_one_object_then_ack(self):
        body = {"user": "ann", "n": [1, 2, {"x": None}], "big": 12345678901234567890}
        jid = self.put("work", json.dumps(body), "--pri", "7")
        r = self.ok("reserve", "work", "--json")
        lines = r.out_b.splitlines()
        self.assertEqual(len(lines), 1, r)
        job = json.loads(r.out)
        self.assertIsInstance(job, dict)
        self.assertEqual(job["id"], jid)
        self.assertEqual(job["queue"], "work")
        self.assertEqual(job["priority"], 7)
        self.assertEqual(job["attempts"], 1)
        self.assertEqual(job["body"], body)
        self.assertEqual(job["state"], "reserved")
        lease = job["lease"]
        self.assertRegex(lease, r"^[0-9]+$")
        self.assertEqual(self.counts("work"), (0, 0, 1, 0))
        r = self.ok("ack", str(jid), "--lease", lease, "--json")
        self.assertEqual(r.json(), {"id": jid, "queue": "work", "state": "deleted",
                                    "was": "reserved"})
        self.assertEqual(self.counts("work"), (0, 0, 0, 0))
        self.assertEqual(self.stats()["work"]["acks"], 1)
        self.fails(1, "show", str(jid))

    def test_reserve_human_header_and_raw_body(self):
        jid = self.put("h", '{"k": "v\\u00e9", "n":1.50}')
        r = self.ok("reserve", "h")
        head, body = r.out_b.split(b"\n", 1)
        m = re.match(rb"job (\d+)\s+queue h\s+priority 1024\s+attempts 1\s+lease (\d+)", head)
        self.assertIsNotNone(m, r)
        self.assertEqual(int(m.group(1)), jid)
        self.assertEqual(body, b'{"k": "v\\u00e9", "n":1.50}\n')
        self.ok("ack", str(jid), "--lease", m.group(2).decode())
        self.assertEqual(self.counts("h"), (0, 0, 0, 0))

    def test_reserve_empty_waits_then_exits_1_silently(self):
        self.ok("create", "empty")
        for extra in ([], ["--json"]):
            t0 = time.monotonic()
            r = self.q("reserve", "empty", "--timeout", "0.2", *extra)
            took = time.monotonic() - t0
            self.assertEqual(r.code, 1, r)
            self.assertEqual(r.out_b, b"", r)
            self.assertIn("empty", r.err)
            self.assertGreaterEqual(took, 0.2, r)
            self.assertLess(took, 0.2 + 5 * SLOW, r)
        # without --timeout: one try, at once
        r = self.q("reserve", "empty")
        self.assertEqual((r.code, r.out_b), (1, b""), r)
        self.assertEqual(self.counts("empty"), (0, 0, 0, 0))

    def test_reserve_waits_for_a_put(self):
        self.ok("create", "w")
        p = subprocess.Popen([self.qctl, "--data", self.data, "reserve", "w", "--json",
                              "--timeout", str(10 * SLOW)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.env)
        try:
            time.sleep(0.3)
            jid = self.put("w", '{"late":true}')
            out, err = p.communicate(timeout=15 * SLOW)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 0, err)
        self.assertEqual(json.loads(out)["id"], jid)


# ======================================================================
# 2. order, delay, ttr
# ======================================================================
class TestOrderDelayTtr(QctlCase):

    def test_priority_then_fifo(self):
        plan = [("a", 5), ("b", 1), ("c", 5), ("d", 1), ("e", 0), ("f", 1024), ("g", 0),
                ("h", 4294967295)]
        ids = {name: self.put("o", json.dumps({"name": name}), "--pri", str(pri))
               for name, pri in plan}
        want = ["e", "g", "b", "d", "a", "c", "f", "h"]
        peek = self.ok("peek", "o", "--state", "ready", "--json").json()
        self.assertEqual([j["id"] for j in peek], [ids[n] for n in want])
        got = [self.reserve("o")["body"]["name"] for _ in plan]
        self.assertEqual(got, want)
        self.assertEqual(self.q("reserve", "o").code, 1)

    def test_delay(self):
        d = 1.0
        t0 = time.monotonic()
        jid = self.put("d", '{"later":1}', "--delay", str(d))
        now = self.put("d", '{"now":1}')
        self.assertEqual(self.reserve("d")["id"], now)
        r = self.q("reserve", "d", "--timeout", "0.1")
        self.assertEqual((r.code, r.out_b), (1, b""), r)
        self.assertEqual(self.counts("d"), (0, 1, 1, 0))
        job = self.show(jid)
        self.assertEqual(job["state"], "delayed")
        self.assertIsInstance(job["due_ms"], int)
        peek = self.ok("peek", "d", "--state", "delayed", "--json").json()
        self.assertEqual([j["id"] for j in peek], [jid])
        # reserve --timeout waits for it to come due
        got = self.reserve("d", "--timeout", str(5 * SLOW))
        self.assertEqual(got["id"], jid)
        self.assertGreaterEqual(time.monotonic() - t0, d - 0.05)

    def test_ttr_expiry_reserves_again_and_refuses_old_lease(self):
        jid = self.put("t", '{"slow":1}', "--ttr", "0.4")
        first = self.reserve("t")
        self.assertEqual((first["id"], first["attempts"]), (jid, 1))
        # still leased: not handed out again
        self.assertEqual(self.q("reserve", "t").code, 1)
        time.sleep(0.6)
        second = self.reserve("t")
        self.assertEqual(second["id"], jid)
        self.assertEqual(second["attempts"], 2)
        self.assertNotEqual(second["lease"], first["lease"])
        self.assertIn("expired", second["error"] or "")
        before = self.snapshot()
        for verb in (["ack"], ["release"], ["touch"], ["bury", "--reason", "x"]):
            r = self.fails(1, verb[0], str(jid), "--lease", first["lease"], *verb[1:])
            self.assertIn("lease", r.err)
            self.assertIn(str(jid), r.err)
        self.assertEqual(self.snapshot(), before)
        job = self.show(jid)
        self.assertEqual((job["state"], job["lease"], job["attempts"]),
                         ("reserved", second["lease"], 2))
        self.ok("ack", str(jid), "--lease", second["lease"])
        self.assertEqual(self.counts("t"), (0, 0, 0, 0))

    def test_reserve_ttr_overrides_the_lease(self):
        jid = self.put("o", '{"o":1}')  # the queue's ttr: 60 s
        t0 = time.time() * 1000
        j = self.reserve("o", "--ttr", "0.3")
        self.assertLess(j["due_ms"], t0 + 10000)
        time.sleep(0.5)
        j2 = self.reserve("o")
        self.assertEqual((j2["id"], j2["attempts"]), (jid, 2))
        self.assertGreater(j2["due_ms"], time.time() * 1000 + 50000)

    def test_expired_lease_past_max_attempts_is_buried(self):
        # DESIGN: "An expired lease returns the job to ready with attempts+1;
        # past max attempts it is buried with the last error." qctl reserve
        # processes expiries; the one that buries must stick even though no
        # job is then ready.
        self.ok("create", "m", "--max-attempts", "1")
        jid = self.put("m", '{"x":1}', "--ttr", "0.3")
        self.assertEqual(self.reserve("m")["attempts"], 1)
        time.sleep(0.5)
        r = self.q("reserve", "m")
        self.assertEqual((r.code, r.out_b), (1, b""), r)
        job = self.show(jid)
        self.assertEqual(job["state"], "buried", job)
        self.assertIn("expired", job["error"] or "")
        self.assertEqual(self.counts("m"), (0, 0, 0, 1))


# ======================================================================
# 3. job and queue operations
# ======================================================================
class TestJobOps(QctlCase):

    def test_release_now_delay_backoff_and_max_attempts(self):
        self.ok("create", "r", "--max-attempts", "3", "--backoff", "0.5")
        jid = self.put("r", '{"r":1}')
        j = self.reserve("r")
        out = self.ok("release", str(jid), "--lease", j["lease"], "--json").json()
        self.assertEqual((out["state"], out["was"]), ("ready", "reserved"))
        self.assertEqual(self.counts("r"), (1, 0, 0, 0))
        # --delay: delayed, not reservable until then
        j = self.reserve("r")
        t0 = time.time() * 1000
        out = self.ok("release", str(jid), "--lease", j["lease"], "--delay", "0.8",
                      "--error", "upstream 503", "--json").json()
        self.assertEqual(out["state"], "delayed")
        self.assertGreaterEqual(out["due_ms"], t0 + 700)
        self.assertEqual(self.counts("r"), (0, 1, 0, 0))
        self.assertEqual(self.show(jid)["error"], "upstream 503")
        self.assertEqual(self.q("reserve", "r", "--timeout", "0.1").code, 1)
        j = self.reserve("r", "--timeout", str(5 * SLOW))
        self.assertEqual((j["id"], j["attempts"]), (jid, 3))
        # third attempt used: a release buries it, with the error
        out = self.ok("release", str(jid), "--lease", j["lease"], "--backoff",
                      "--error", "gave up", "--json").json()
        self.assertEqual(out["state"], "buried")
        self.assertEqual(self.counts("r"), (0, 0, 0, 1))
        self.assertIn("gave up", self.show(jid)["error"])
        # release of a job that is not reserved: refused, nothing changes
        before = self.snapshot()
        r = self.fails(1, "release", str(jid))
        self.assertIn("buried", r.err)
        self.assertEqual(self.snapshot(), before)

    def test_release_backoff_delays(self):
        self.ok("create", "b", "--backoff", "2")
        jid = self.put("b", "1")
        j = self.reserve("b")
        t0 = time.time() * 1000
        out = self.ok("release", str(jid), "--lease", j["lease"], "--backoff", "--json").json()
        self.assertEqual(out["state"], "delayed")
        self.assertGreaterEqual(out["due_ms"], t0 + 1500)
        self.assertEqual(self.q("reserve", "b").code, 1)

    def test_bury_reason_peek_kick(self):
        ids = [self.put("b", json.dumps({"i": i})) for i in range(4)]
        reason = 'bad row: "name" is empty, line\nnext \\ é'
        out = self.ok("bury", str(ids[1]), "--reason", reason, "--json").json()
        self.assertEqual((out["state"], out["was"]), ("buried", "ready"))
        job = self.show(ids[1])
        self.assertEqual((job["state"], job["error"]), ("buried", reason))
        buried = self.ok("peek", "b", "--state", "buried", "--json").json()
        self.assertEqual([(j["id"], j["error"]) for j in buried], [(ids[1], reason)])
        human = self.ok("peek", "b", "--state", "buried")
        self.assertIn("bad row", human.out)
        # a reason that is not UTF-8 is refused (exit 2) and changes nothing
        odd = self.put("b-odd", "1")
        r = self.fails(2, "bury", str(odd), "--reason", b"bad byte \xff here")
        self.assertIn("UTF-8", r.err)
        self.assertEqual(self.show(odd)["state"], "ready")
        # a reserved job can be buried too, with its lease
        j = self.reserve("b")
        self.assertEqual(j["id"], ids[0])
        self.ok("bury", str(ids[0]), "--lease", j["lease"])
        self.assertEqual(self.show(ids[0])["error"], "buried by an operator (qctl)")
        self.assertEqual(self.counts("b"), (2, 0, 0, 2))
        s = self.stats()["b"]
        self.assertEqual(s["buries"], 2)
        # a buried job is not handed out
        self.assertEqual(self.reserve("b")["id"], ids[2])
        self.assertEqual(self.reserve("b")["id"], ids[3])
        self.assertEqual(self.q("reserve", "b").code, 1)
        # kick N, then kick (all)
        self.assertEqual(self.ok("kick", "b", "1", "--json").json(), {"queue": "b", "kicked": 1})
        self.assertEqual(self.counts("b"), (1, 0, 2, 1))
        self.assertEqual(self.ok("kick", "b", "--json").json()["kicked"], 1)
        self.assertEqual(self.counts("b"), (2, 0, 2, 0))
        kicked = {self.reserve("b")["id"], self.reserve("b")["id"]}
        self.assertEqual(kicked, {ids[0], ids[1]})
        self.assertEqual(self.show(ids[1])["kicks"], 1)
        # kick on a queue with nothing buried
        self.assertEqual(self.ok("kick", "b", "--json").json()["kicked"], 0)

    def test_kick_job(self):
        delayed = self.put("k", '"d"', "--delay", "3600")
        buried = self.put("k", '"b"')
        ready = self.put("k", '"r"')
        self.ok("bury", str(buried))
        self.assertEqual(self.counts("k"), (1, 1, 0, 1))
        out = self.ok("kick-job", str(delayed), "--json").json()
        self.assertEqual((out["state"], out["was"]), ("ready", "delayed"))
        out = self.ok("kick-job", str(buried), "--json").json()
        self.assertEqual((out["state"], out["was"]), ("ready", "buried"))
        self.assertEqual(self.counts("k"), (3, 0, 0, 0))
        before = self.snapshot()
        r = self.fails(1, "kick-job", str(ready))
        self.assertIn("ready", r.err)
        self.assertEqual(self.snapshot(), before)

    def test_touch_extends_lease(self):
        jid = self.put("t", '{"long":1}', "--ttr", "1.5")
        j = self.reserve("t")
        time.sleep(0.9)
        out = self.ok("touch", str(jid), "--lease", j["lease"], "--json").json()
        self.assertEqual(out["state"], "reserved")
        self.assertGreaterEqual(out["due_ms"], j["due_ms"] + 800)
        time.sleep(0.9)  # past the first lease's end, inside the touched one
        r = self.q("reserve", "t")
        self.assertEqual((r.code, r.out_b), (1, b""), r)
        job = self.show(jid)
        self.assertEqual((job["state"], job["attempts"], job["lease"]),
                         ("reserved", 1, j["lease"]))
        # a wrong lease, or a job that is not reserved: refused
        r = self.fails(1, "touch", str(jid), "--lease", "12345")
        self.assertIn("lease", r.err)
        other = self.put("t", '{"other":1}')
        r = self.fails(1, "touch", str(other))
        self.assertIn("not reserved", r.err)
        self.ok("ack", str(jid), "--lease", j["lease"])

    def test_delete_any_state(self):
        ready = self.put("x", "1")
        delayed = self.put("x", "2", "--delay", "3600")
        buried = self.put("x", "3")
        reserved = self.put("x", "4", "--pri", "0")
        self.ok("bury", str(buried))
        self.assertEqual(self.reserve("x")["id"], reserved)
        for jid, was in ((ready, "ready"), (delayed, "delayed"), (buried, "buried"),
                         (reserved, "reserved")):
            out = self.ok("delete", str(jid), "--json").json()
            self.assertEqual(out, {"id": jid, "queue": "x", "state": "deleted", "was": was})
            self.fails(1, "show", str(jid))
        self.assertEqual(self.counts("x"), (0, 0, 0, 0))
        r = self.fails(1, "delete", str(ready))
        self.assertIn("does not exist", r.err)

    def test_lease_zero_is_not_a_wildcard(self):
        # --help: "--lease T  act only while this lease (from reserve) is
        # held". No reserve hands out lease 0, so --lease 0 must be refused
        # (exit 1, or 2 as a bad number), never act like no --lease at all.
        jid = self.put("z", "1")
        j = self.reserve("z")
        other = self.put("z", "2")
        before = self.snapshot()
        for args in (["ack", str(jid), "--lease", "0"], ["bury", str(other), "--lease", "0"],
                     ["release", str(jid), "--lease", "0"], ["touch", str(jid), "--lease", "0"]):
            r = self.q(*args)
            self.assertIn(r.code, (1, 2), r)
            self.assertEqual(r.out_b, b"", r)
        self.assertEqual(self.snapshot(), before)
        self.ok("ack", str(jid), "--lease", j["lease"])

    def test_ack_without_lease_is_operator_delete(self):
        jid = self.put("a", "1")
        self.ok("ack", str(jid))
        self.assertEqual(self.counts("a"), (0, 0, 0, 0))

    def test_pause_resume(self):
        jid = self.put("p", '{"p":1}')
        out = self.ok("pause", "p", "--json").json()
        self.assertEqual(out, {"queue": "p", "paused": True})
        self.assertIs(self.stats()["p"]["paused"], True)
        for extra in ([], ["--json"], ["--timeout", "0.2"]):
            r = self.fails(1, "reserve", "p", *extra)
            self.assertIn("'p'", r.err)
            self.assertIn("resume", r.err)
        # puts go on while paused; peek works
        jid2 = self.put("p", '{"p":2}')
        self.assertEqual(self.counts("p"), (2, 0, 0, 0))
        self.assertEqual(len(self.ok("peek", "p", "--json").json()), 2)
        out = self.ok("resume", "p", "--json").json()
        self.assertEqual(out, {"queue": "p", "paused": False})
        self.assertIs(self.stats()["p"]["paused"], False)
        self.assertEqual(self.reserve("p")["id"], jid)
        self.assertEqual(self.reserve("p")["id"], jid2)

    def test_purge(self):
        for i in range(3):
            self.put("z", str(i))
        for i in range(2):
            self.put("z", str(i), "--delay", "3600")
        b = self.put("z", '"b"')
        self.ok("bury", str(b))
        keep = self.put("other", '"keep"')
        self.assertEqual(self.counts("z"), (3, 2, 0, 1))
        out = self.ok("purge", "z", "--state", "delayed", "--json").json()
        self.assertEqual(out, {"queue": "z", "purged": 2})
        self.assertEqual(self.counts("z"), (3, 0, 0, 1))
        self.reserve("z")
        r = self.ok("purge", "z")
        self.assertIn("4", r.out)
        self.assertEqual(self.counts("z"), (0, 0, 0, 0))
        self.assertEqual(self.ok("purge", "z", "--json").json()["purged"], 0)
        # other queues untouched
        self.assertEqual(self.counts("other"), (1, 0, 0, 0))
        self.assertEqual(self.show(keep)["body"], "keep")

    def test_create_configure(self):
        out = self.ok("create", "c", "--ttr", "2.5", "--max-attempts", "3", "--backoff", "0.5",
                      "--backoff-max", "10", "--max-body", "100", "--json").json()
        conf = {"ttr_ms": 2500, "max_attempts": 3, "backoff_ms": 500, "backoff_max_ms": 10000,
                "max_body": 100, "key_retention_s": 86400}
        self.assertEqual(out, {"queue": "c", "conf": conf})
        self.assertEqual(self.stats()["c"]["conf"], conf)
        self.assertEqual(self.counts("c"), (0, 0, 0, 0))
        r = self.fails(1, "create", "c", "--ttr", "9")
        self.assertIn("already exists", r.err)
        self.assertEqual(self.stats()["c"]["conf"], conf)
        # configure: only what is given changes
        out = self.ok("configure", "c", "--ttr", "7", "--json").json()
        conf["ttr_ms"] = 7000
        self.assertEqual(out["conf"], conf)
        self.assertEqual(self.ok("configure", "c", "--json").json()["conf"], conf)
        self.assertIn("max body", self.ok("configure", "c").out)
        self.assertEqual(self.stats()["c"]["conf"], conf)
        # jobs take the queue's ttr unless put with their own; a configure
        # leaves the jobs already put alone
        old = self.put("c", "0")
        self.ok("configure", "c", "--ttr", "8")
        self.assertEqual(self.show(old)["ttr_ms"], 7000)
        self.ok("configure", "c", "--ttr", "7")
        a = self.put("c", "1")
        b = self.put("c", "2", "--ttr", "0.25")
        self.assertEqual(self.show(a)["ttr_ms"], 7000)
        self.assertEqual(self.show(b)["ttr_ms"], 250)
        # inconsistent settings are a usage error and change nothing
        before = self.snapshot()
        r = self.fails(2, "configure", "c", "--backoff", "20")
        self.assertIn("backoff", r.err)
        r = self.fails(1, "configure", "nosuch", "--ttr", "1")
        self.assertIn("nosuch", r.err)
        self.fails(2, "create", "bad name")
        self.fails(2, "create", "d", "--max-body", "0")
        self.assertEqual(self.snapshot(), before)
        # defaults of a created queue
        d = self.ok("create", "d", "--json").json()["conf"]
        self.assertEqual(d, {"ttr_ms": 60000, "max_attempts": 10, "backoff_ms": 1000,
                             "backoff_max_ms": 3600000, "max_body": 1048576, "key_retention_s": 86400})

    def test_idempotency_key(self):
        first = self.put("k", '{"v":1}', "--key", "order-17")
        r = self.ok("put", "k", "--key", "order-17", '{"v":2}')
        self.assertEqual(r.out, "%d\n" % first)
        r = self.ok("put", "k", "--key", "order-17", "--json", '{"v":3}')
        self.assertEqual(r.json(), {"id": first, "existed": True})
        self.assertEqual(self.counts("k"), (1, 0, 0, 0))
        self.assertEqual(self.stats()["k"]["puts"], 1)
        self.assertEqual(self.show(first)["body"], {"v": 1})
        self.assertEqual(self.show(first)["key"], "order-17")
        # another key, or the same key in another queue: a new job
        other = self.put("k", '{"v":4}', "--key", "order-18")
        elsewhere = self.put("k2", '{"v":5}', "--key", "order-17")
        self.assertEqual(len({first, other, elsewhere}), 3)
        self.assertEqual(self.counts("k"), (2, 0, 0, 0))
        # while the job lives (reserved, buried) the key holds it
        j = self.reserve("k")
        self.assertEqual(j["id"], first)
        self.assertEqual(self.put("k", '{"v":6}', "--key", "order-17"), first)
        # once acked, the key stays for the queue's key retention: a retry adds nothing
        self.ok("ack", str(first), "--lease", j["lease"])
        r = self.ok("put", "k", "--key", "order-17", "--json", '{"v":7}')
        self.assertEqual(r.json(), {"id": first, "existed": True})
        self.assertIn("already done", r.err)
        self.assertEqual(self.counts("k"), (1, 0, 0, 0))
        # a queue that keeps no keys frees it with its job
        self.ok("create", "nokeep", "--key-retention", "0")
        once = self.put("nokeep", '{"v":8}', "--key", "order-17")
        j = self.reserve("nokeep")
        self.ok("ack", str(once), "--lease", j["lease"])
        again = self.put("nokeep", '{"v":9}', "--key", "order-17")
        self.assertNotIn(again, (first, other, elsewhere, once))
        self.put("k", '{"v":10}')
        # a key over 200 bytes is a usage error
        self.fails(2, "put", "k", "--key", "x" * 201, "1")
        self.fails(2, "put", "k", "--key", "", "1")
        self.assertEqual(self.counts("k"), (2, 0, 0, 0))

    def test_key_bytes_survive_export_import(self):
        # A key is bytes on the command line. Either qctl refuses one that is
        # not UTF-8 (usage error), or it keeps it: then the export/import
        # round trip must find the same key (existed, nothing imported).
        key = b"order-\xfe\xff"
        r = self.q("put", "kb", "--key", key, "{}")
        if r.code == 2:
            self.assertEqual(r.out_b, b"")
            self.assertIsNone(self.snapshot())
            return
        self.assertEqual(r.code, 0, r)
        exp = self.ok("export", "kb").out_b
        out = self.ok("import", "kb", "--json", input=exp).json()
        self.assertEqual(out, {"queue": "kb", "imported": 0, "existed": 1})
        self.assertEqual(self.counts("kb"), (1, 0, 0, 0))


# ======================================================================
# 4. stats and info
# ======================================================================
class TestStatsInfo(QctlCase):

    def test_stats_json_counts(self):
        ids = [self.put("q1", json.dumps({"i": i})) for i in range(5)]
        self.put("q1", '{"later":1}', "--delay", "3600")
        self.reserve("q1")
        self.ok("bury", str(ids[4]))
        a = self.put("q2", "1")
        self.put("q2", "2")
        self.ok("delete", str(a))
        self.ok("create", "q3")
        r = self.ok("stats", "--json")
        st = json.loads(r.out)  # the whole stdout is one JSON value
        self.assertEqual(set(st), {"q1", "q2", "q3"})
        self.assertEqual(tuple(st["q1"][k] for k in STATE_KEYS), (3, 1, 1, 1))
        self.assertEqual(tuple(st["q2"][k] for k in STATE_KEYS), (1, 0, 0, 0))
        self.assertEqual(tuple(st["q3"][k] for k in STATE_KEYS), (0, 0, 0, 0))
        self.assertEqual((st["q1"]["puts"], st["q1"]["reserves"], st["q1"]["buries"]), (6, 1, 1))
        self.assertEqual((st["q2"]["puts"], st["q2"]["deletes"]), (2, 1))
        self.assertIsInstance(st["q1"]["oldest_ready_ms"], int)
        self.assertIsNone(st["q3"]["oldest_ready_ms"])
        # one queue; 'queues' is the same command
        one = self.stats("q2")
        self.assertEqual(set(one), {"q2"})
        self.assertEqual(one["q2"]["ready"], 1)
        self.assertEqual(set(self.ok("queues", "--json").json()), {"q1", "q2", "q3"})
        # human: the table and the map
        h = self.ok("stats").out
        for name in ("q1", "q2", "q3"):
            self.assertIn(name, h)
        self.assertIn("map size", h)
        self.assertIn("pages", h)

    def test_stats_lists_empty_queues(self):
        self.ok("create", "x")
        jid = self.put("y", "1")
        self.ok("delete", str(jid))
        st = self.ok("stats", "--json").json()
        self.assertEqual(set(st), {"x", "y"})
        for name in ("x", "y"):
            self.assertEqual(tuple(st[name][k] for k in STATE_KEYS), (0, 0, 0, 0))

    def test_info_json(self):
        self.put("i", '{"x":1}')
        r = self.ok("info", "--json")
        info = r.json()
        for k in ("path", "map_size", "page_size", "used_pages", "used_bytes", "free_pages",
                  "file_size", "readers", "max_readers"):
            self.assertIn(k, info)
        self.assertEqual(info["path"], self.data)
        self.assertGreater(info["page_size"], 0)
        self.assertGreater(info["used_pages"], 0)
        self.assertEqual(info["used_bytes"], info["used_pages"] * info["page_size"])
        self.assertGreaterEqual(info["map_size"], info["used_bytes"])
        self.assertEqual(info["file_size"], os.path.getsize(os.path.join(self.data, "data.mdb")))
        h = self.ok("info").out
        self.assertIn("map size", h)
        self.assertIn(self.data, h)


# ======================================================================
# 5. export / import
# ======================================================================
TRICKY = [
    '{"s":"quote \\" backslash \\\\ newline \\n tab \\t cr \\r","u":"\u00e9\u65e5\u672c\U0001F600",'
    '"esc":"\\u00e9\\ud83d\\ude00"}',
    '{"big":12345678901234567890,"neg":-98765432109876543210,"f":1.50,"e":1E+2,"z":-0.0,'
    '"huge":123456789012345678901234567890123}',
    '{"nested":{"a":[1,{"b":[null,true,false,{"c":"d"}]}],"empty":{},"ea":[]}}',
    '"just a string with \\"quotes\\", commas, and \\\\ slashes"',
    '[ 1 ,  2 ,\t3 ]',
    '12345678901234567890',
    'null',
    '""',
    '{"ctrl":"\\u0000\\u001f","sep":"\\u2028\\u2029","slash":"\\/","body":"{\\"body\\":1}"}',
]
# whitespace with newlines between the tokens (pretty-printed)
PRETTY = '{\n  "a": 1,\n  "b": [\n    "x\\ny",\n    {"c": "\u00e9"}\n  ]\n}'


class TestExportImport(QctlCase):

    def test_round_trip(self):
        src = {}  # priority -> (id, raw body bytes, key)
        for i, body in enumerate(TRICKY):
            key = "k-\u00e9-%d" % i if i % 2 == 0 else None
            flags = ["--pri", str(100 + i)] + (["--key", key] if key else [])
            jid = self.put("src", body, *flags)
            src[100 + i] = (jid, body.encode("utf-8"), key)
        jid = self.put("src", "-", "--pri", "999", input=PRETTY.encode("utf-8") + b"\n")
        src[999] = (jid, PRETTY.encode("utf-8"), None)
        # put keeps the value's bytes (only the whitespace around it goes)
        for pri, (jid, raw, key) in src.items():
            self.assertEqual(self.show_raw(jid), raw, pri)
        # one job reserved, one buried: export writes every job
        self.reserve("src")
        self.ok("bury", str(src[101][0]))

        r = self.ok("export", "src")
        self.assertTrue(r.out_b.endswith(b"\n"))
        lines = r.out_b.split(b"\n")[:-1]
        self.assertEqual(len(lines), len(src))
        exported = [json.loads(line) for line in lines]
        self.assertEqual({e["priority"] for e in exported}, set(src))
        for e in exported:
            jid, raw, key = src[e["priority"]]
            self.assertEqual(e["id"], jid)
            self.assertEqual(e["queue"], "src")
            self.assertEqual(e["key"], key)
            self.assertEqual(e["body"], json.loads(raw.decode("utf-8")))

        out = self.ok("import", "dst", "--json", input=r.out_b).json()
        self.assertEqual(out, {"queue": "dst", "imported": len(src), "existed": 0})
        self.assertEqual(self.counts("dst"), (len(src), 0, 0, 0))
        self.assertEqual(self.counts("src")[:1], (len(src) - 2,))  # source untouched
        dst = self.ok("peek", "dst", "--limit", "0", "--json").json()
        self.assertEqual(len(dst), len(src))
        for d in dst:
            jid, raw, key = src[d["priority"]]
            self.assertNotEqual(d["id"], jid)
            self.assertEqual(d["key"], key)
            self.assertEqual(d["attempts"], 0)
            self.assertEqual(d["body"], json.loads(raw.decode("utf-8")))
            got = self.show_raw(d["id"])
            if b"\n" in raw:
                # NDJSON has one job per line: the newlines between tokens
                # cannot stay; the value must.
                self.assertEqual(json.loads(got.decode("utf-8")), json.loads(raw))
            else:
                self.assertEqual(got, raw, d["priority"])
        # ready order follows the priorities
        self.assertEqual([d["priority"] for d in dst], sorted(src))
        # the same file again: the keyed jobs are already there
        nkeys = sum(1 for v in src.values() if v[2])
        out = self.ok("import", "dst", "--json", input=r.out_b).json()
        self.assertEqual(out, {"queue": "dst", "imported": len(src) - nkeys, "existed": nkeys})
        # reserve --json hands out the very same bodies
        j = self.reserve("dst")
        self.assertEqual(j["body"], json.loads(TRICKY[0]))

    def test_import_bad_line_imports_nothing(self):
        self.put("imp", '{"keep":1}')
        before = self.snapshot()
        good = b'{"priority":5,"key":null,"body":{"a":1}}\n'
        for bad in (b'{"body":\n', b'{"priority":-1,"body":1}\n', b'[1,2]\n', b'{"key":"x"}\n',
                    b'{"body":"\xff"}\n', b'{"priority":"high","body":1}\n'):
            r = self.fails(1, "import", "imp", input=good + bad + good)
            self.assertIn("line 2", r.err)
            self.assertEqual(self.snapshot(), before)
        # a body over the queue's limit: nothing imported either
        self.ok("configure", "imp", "--max-body", "10")
        before = self.snapshot()
        r = self.fails(1, "import", "imp", input=good + b'{"body":"01234567890123"}\n')
        self.assertIn("line 2", r.err)
        self.assertEqual(self.snapshot(), before)
        # and an import into a new queue that fails creates nothing
        self.fails(1, "import", "fresh", input=b'not json\n')
        self.assertNotIn("fresh", self.stats())

    def test_export_empty_and_unknown(self):
        self.ok("create", "e")
        r = self.ok("export", "e")
        self.assertEqual(r.out_b, b"")
        r = self.fails(1, "export", "nosuch")
        self.assertIn("nosuch", r.err)


# ======================================================================
# 6. bad input: a clear error, a non-zero exit, nothing changed
# ======================================================================
class TestBadInput(QctlCase):

    def setUp(self):
        super().setUp()
        self.jid = self.put("q", '{"seed":1}')
        self.ok("create", "small", "--max-body", "16")

    def assertUnchanged(self, before):
        self.assertEqual(self.snapshot(), before)

    def test_malformed_json_body(self):
        before = self.snapshot()
        for body in ('{"a":', '{"a":1,}', "{'a':1}", "NaN", '{"a":1}{"b":2}', "01", "   "):
            r = self.fails(1, "put", "q", body)
            self.assertIn("JSON", r.err, body)
        r = self.fails(1, "put", "q", "-", input=b"")
        self.assertIn("JSON", r.err)
        self.fails(1, "put", "newq", '{"a":')
        self.assertUnchanged(before)
        self.assertNotIn("newq", self.stats())

    def test_invalid_utf8_body(self):
        before = self.snapshot()
        for raw in (b'{"a":"\xff\xfe"}', b'"\xc0\xaf"', b'"\xed\xa0\x80"', b'"\xe2\x82"',
                    b'"ok\xf4\x90\x80\x80"'):
            r = self.fails(1, "put", "q", "-", input=raw)
            self.assertIn("UTF-8", r.err, raw)
        self.assertUnchanged(before)

    def test_body_over_limit(self):
        before = self.snapshot()
        exact = '"' + "x" * 14 + '"'  # 16 bytes: the limit itself is fine
        over = '"' + "x" * 15 + '"'
        r = self.fails(1, "put", "small", over)
        self.assertIn("small", r.err)
        self.assertIn("--max-body", r.err)
        self.assertIn("17", r.err)
        self.assertUnchanged(before)
        jid = self.put("small", "-", input=("  " + exact + "\n").encode())
        self.assertEqual(self.show_raw(jid), exact.encode())
        # a new queue takes the default limit (1 MiB): over it, nothing is made
        big = b'"' + b"y" * (1 << 20) + b'"'
        r = self.fails(1, "put", "bigq", "-", input=big)
        self.assertIn("limit", r.err)
        self.assertNotIn("bigq", self.stats())

    def test_unknown_queue(self):
        before = self.snapshot()
        for args in (["reserve", "nosuch"], ["reserve", "nosuch", "--json"],
                     ["reserve", "nosuch", "--timeout", "0.1"], ["peek", "nosuch"],
                     ["stats", "nosuch"], ["stats", "nosuch", "--json"], ["kick", "nosuch"],
                     ["kick", "nosuch", "3"], ["purge", "nosuch"], ["pause", "nosuch"],
                     ["resume", "nosuch"], ["configure", "nosuch"], ["export", "nosuch"]):
            r = self.fails(1, *args)
            self.assertIn("'nosuch' does not exist", r.err, args)
            self.assertIn("create", r.err, args)
        self.assertUnchanged(before)

    def test_unknown_job(self):
        before = self.snapshot()
        for args in (["ack", "999"], ["ack", "999", "--lease", "5"], ["show", "999"],
                     ["show", "999", "--json"], ["bury", "999"], ["delete", "999"],
                     ["touch", "999"], ["release", "999"], ["kick-job", "999"]):
            r = self.fails(1, *args)
            self.assertIn("job 999 does not exist", r.err, args)
        self.assertUnchanged(before)

    def test_wrong_state(self):
        before = self.snapshot()
        r = self.fails(1, "release", str(self.jid))
        self.assertIn("not reserved", r.err)
        r = self.fails(1, "ack", str(self.jid), "--lease", "777")
        self.assertIn("lease", r.err)
        self.assertUnchanged(before)

    def test_not_a_data_directory(self):
        other = os.path.join(self.tmp, "other")
        os.mkdir(other)
        with open(os.path.join(other, "notes.txt"), "w") as f:
            f.write("my notes\n")
        for args in (["put", "q", "{}"], ["stats"], ["stats", "--json"], ["peek", "q"],
                     ["info"], ["reserve", "q"], ["create", "q"], ["import", "q"]):
            r = self.fails(1, *args, data=other, input=b'{"body":1}\n')
            self.assertIn(other, r.err, args)
            self.assertIn("not a pickline data directory", r.err, args)
        self.assertEqual(os.listdir(other), ["notes.txt"])
        with open(os.path.join(other, "notes.txt")) as f:
            self.assertEqual(f.read(), "my notes\n")
        # a file where the directory should be
        afile = os.path.join(other, "notes.txt")
        for args in (["put", "q", "{}"], ["stats"]):
            r = self.fails(1, *args, data=afile)
            self.assertIn("not a directory", r.err)

    def test_missing_data_dir_for_reads(self):
        missing = os.path.join(self.tmp, "missing")
        for args in (["stats"], ["stats", "--json"], ["queues"], ["peek", "q"], ["info"],
                     ["info", "--json"], ["show", "1"], ["export", "q"], ["reserve", "q"],
                     ["ack", "1"], ["pause", "q"], ["kick", "q"], ["configure", "q"],
                     ["top", "--iterations", "1"], ["compact", os.path.join(self.tmp, "c")]):
            r = self.fails(1, *args, data=missing)
            self.assertIn(missing, r.err, args)
            self.assertFalse(os.path.exists(missing), args)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "c")))
        # the default directory is ./pickline-data (or $PICKLINE_DATA)
        r = self.fails(1, "stats", nodata=True, cwd=self.tmp)
        self.assertIn("pickline-data", r.err)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "pickline-data")))
        env = dict(self.env, PICKLINE_DATA=os.path.join(self.tmp, "viaenv"))
        r = self.q("put", "e", "1", nodata=True, env=env, cwd=self.tmp)
        self.assertEqual(r.code, 0, r)
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "viaenv", "data.mdb")))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "pickline-data")))

    def test_bad_numbers_are_usage_errors(self):
        before = self.snapshot()
        cases = [
            ["put", "q", "--pri", "abc", "{}"], ["put", "q", "--pri", "-1", "{}"],
            ["put", "q", "--pri", "99999999999", "{}"], ["put", "q", "--pri", "4294967296", "{}"],
            ["put", "q", "--pri", " 1", "{}"], ["put", "q", "--pri", "+1", "{}"],
            ["put", "q", "--pri", "", "{}"], ["put", "q", "--delay", "-1", "{}"],
            ["put", "q", "--delay", "soon", "{}"], ["put", "q", "--delay", "1.0001", "{}"],
            ["put", "q", "--ttr", "0", "{}"], ["put", "q", "--ttr", "1e3", "{}"],
            ["reserve", "q", "--timeout", "x"], ["reserve", "q", "--ttr", "-2"],
            ["ack", "abc"], ["ack", "0"], ["ack", "-1"], ["ack", "18446744073709551616"],
            ["ack", str(self.jid), "--lease", "x"], ["show", "1.5"], ["kick", "q", "0"],
            ["kick", "q", "x"], ["peek", "q", "--limit", "-3"], ["peek", "q", "--state", "bogus"],
            ["purge", "q", "--state", "bogus"], ["release", str(self.jid), "--delay", "1",
                                                 "--backoff"],
            ["top", "--interval", "0.01"], ["top", "--iterations", "x"],
            ["configure", "q", "--max-attempts", "-1"], ["configure", "q", "--max-body", "x"],
            ["put", "bad name", "{}"], ["put", "", "{}"], ["put", "x" * 65, "{}"],
            ["bury", str(self.jid), "--reason", "r" * 1001], ["bury", str(self.jid), "--reason", ""],
            ["release", str(self.jid), "--error", "e" * 1001],
        ]
        for args in cases:
            r = self.fails(2, *args)
            self.assertIn("usage: qctl", r.err, args)
        self.assertUnchanged(before)
        # the bounds themselves are fine
        self.put("edge", "1", "--pri", "4294967295")
        self.put("edge", "1", "--pri", "0", "--delay", "0.001", "--ttr", "0.001")

    def test_unknown_command_and_flag(self):
        before = self.snapshot()
        for args, word in ((["frob"], "frob"), (["put", "q", "--frob", "1", "{}"], "--frob"),
                           (["-x", "stats"], "-x"), (["stats", "--lease", "3"], "--lease"),
                           (["put", "q", "{}", "extra"], "extra"), (["put"], "QUEUE"),
                           (["ack"], "ID"), (["put", "q", "--pri"], "--pri"),
                           (["stats", "--json=1"], "--json"), ([], "command")):
            r = self.fails(2, *args)
            self.assertIn(word, r.err, args)
        self.assertUnchanged(before)

    def test_help_for_every_command(self):
        r = self.ok("--help", nodata=True)
        self.assertTrue(r.out.startswith("usage: qctl"), r)
        listed = re.findall(r"^  ([a-z][a-z-]+)\s", r.out.split("commands:")[1].split("global")[0],
                            re.M)
        self.assertEqual(sorted(listed), sorted(COMMANDS))
        for cmd in COMMANDS:
            for argv in ([cmd, "--help"], [cmd, "-h"]):
                r = self.ok(*argv, nodata=True)
                self.assertTrue(r.out.startswith("usage: qctl [--data DIR] [--json] %s" % cmd), r)
                self.assertEqual(r.err, "", r)
        # help with a data dir that does not exist touches nothing
        missing = os.path.join(self.tmp, "nope")
        self.ok("put", "--help", data=missing)
        self.assertFalse(os.path.exists(missing))

    def test_read_only_data_directory(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to run qctl as 'nobody'")
        os.chmod(self.tmp, 0o755)
        os.chmod(self.data, 0o755)
        for n in os.listdir(self.data):
            os.chmod(os.path.join(self.data, n), 0o644)
        before = self.snapshot()
        files = {n: os.stat(os.path.join(self.data, n)).st_mtime_ns
                 for n in os.listdir(self.data)}

        def nobody():
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)

        r = self.fails(1, "put", "q", '{"y":2}', preexec_fn=nobody)
        self.assertIn(self.data, r.err)
        # reads: they work, or they fail clearly naming the directory
        for args in (["stats", "--json"], ["peek", "q", "--json"], ["info", "--json"]):
            r = self.q(*args, preexec_fn=nobody)
            if r.code == 0:
                out = r.json()
                if args[0] == "stats":
                    self.assertEqual(out["q"]["ready"], 1)
            else:
                self.assertEqual(r.code, 1, r)
                self.assertEqual(r.out_b, b"", r)
                self.assertIn(self.data, r.err)
                self.assertIn("permission", r.err)
        self.assertEqual({n: os.stat(os.path.join(self.data, n)).st_mtime_ns
                          for n in os.listdir(self.data)}, files)
        self.assertUnchanged(before)


# ======================================================================
# 7. top and compact
# ======================================================================
class TestTopCompact(QctlCase):

    def test_top_without_tty(self):
        self.put("alpha", "1")
        self.put("beta-2", "2")
        t0 = time.monotonic()
        r = self.ok("top", "--iterations", "2", "--interval", "0.2", input=b"")
        self.assertGreaterEqual(time.monotonic() - t0, 0.2)
        self.assertEqual(r.out.count("pickline top"), 2, r)
        self.assertEqual(r.out.count("alpha"), 2, r)
        self.assertEqual(r.out.count("beta-2"), 2, r)
        self.assertNotIn("\x1b[", r.out)  # no terminal codes when not a tty
        self.fails(2, "top", "--json", "--iterations", "1")

    def test_top_stops_on_sigterm(self):
        self.put("gamma", "1")
        p = subprocess.Popen([self.qctl, "--data", self.data, "top", "--interval", "0.1"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.env)
        try:
            time.sleep(0.5 * SLOW)
            p.terminate()
            out, err = p.communicate(timeout=10 * SLOW)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 0, err)
        self.assertGreaterEqual(out.count(b"gamma"), 2)

    def test_top_quits_on_q_from_a_terminal(self):
        import pty
        self.put("delta", "1")
        master, slave = pty.openpty()
        try:
            p = subprocess.Popen([self.qctl, "--data", self.data, "top", "--interval", "0.1"],
                                 stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=self.env)
            os.close(slave)
            slave = None
            try:
                time.sleep(0.4 * SLOW)
                os.write(master, b"q")
                out, err = p.communicate(timeout=10 * SLOW)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        finally:
            os.close(master)
            if slave is not None:
                os.close(slave)
        self.assertEqual(p.returncode, 0, err)
        self.assertIn(b"delta", out)

    def test_compact_copy(self):
        ids = [self.put("c1", json.dumps({"i": i, "pad": "x" * 500})) for i in range(60)]
        for jid in ids[:40]:
            self.ok("delete", str(jid))
        last = self.put("c2", '"later"', "--delay", "3600")
        self.ok("bury", str(ids[50]))
        self.ok("pause", "c2")
        before = self.snapshot()
        dest = os.path.join(self.tmp, "compacted")
        r = self.ok("compact", dest, "--json")
        out = r.json()
        self.assertEqual((out["source"], out["dest"]), (self.data, dest))
        self.assertGreater(out["after_bytes"], 0)
        self.assertEqual(self.snapshot(), before)
        # the copy holds the same queues, counters, settings and jobs
        src_data, self.data = self.data, dest
        self.assertEqual(self.snapshot(), before)
        # and new ids in the copy do not reuse old ones
        new = self.put("c1", '"new"')
        self.assertGreater(new, last)
        self.data = src_data
        # into a directory that is not empty: refused
        r = self.fails(1, "compact", dest)
        self.assertIn(dest, r.err)


# ======================================================================
# 8. concurrent writers
# ======================================================================
LOOP = ('i=1; while [ $i -le "$3" ]; do "$0" --data "$1" put q "{\\"w\\":$2,\\"i\\":$i}" '
        '|| exit 1; i=$((i+1)); done')
KEYLOOP = ('i=1; while [ $i -le "$3" ]; do "$0" --data "$1" put q --key "k$i" '
           '"{\\"w\\":$2,\\"i\\":$i}" || exit 1; i=$((i+1)); done')


class TestConcurrency(QctlCase):

    def loops(self, script, n):
        procs = [subprocess.Popen(["sh", "-c", script, self.qctl, self.data, str(w), str(n)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
                 for w in (1, 2)]
        outs = []
        try:
            for p in procs:
                out, err = p.communicate(timeout=60 * SLOW)
                self.assertEqual(p.returncode, 0, err)
                outs.append(out.decode().split())
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        return outs

    def test_two_writers(self):
        n = 100
        a, b = self.loops(LOOP, n)
        self.assertEqual((len(a), len(b)), (n, n))
        ids = [int(x) for x in a + b]
        self.assertEqual(len(set(ids)), 2 * n)
        # each writer sees its own ids grow
        self.assertEqual([int(x) for x in a], sorted(int(x) for x in a))
        st = self.stats()["q"]
        self.assertEqual((st["ready"], st["puts"]), (2 * n, 2 * n))
        lines = self.ok("export", "q").out_b.splitlines()
        bodies = {(j["body"]["w"], j["body"]["i"]) for j in map(json.loads, lines)}
        self.assertEqual(bodies, {(w, i) for w in (1, 2) for i in range(1, n + 1)})
        self.assertEqual({j["id"] for j in map(json.loads, lines)}, set(ids))

    def test_two_reservers_share_out_each_job_once(self):
        n = 100
        self.ok("import", "q", input=b"".join(b'{"body":%d}\n' % i for i in range(n)))
        script = 'while "$0" --data "$1" reserve q --json; do :; done; exit 0'
        procs = [subprocess.Popen(["sh", "-c", script, self.qctl, self.data],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
                 for _ in range(2)]
        got = []
        try:
            for p in procs:
                out, err = p.communicate(timeout=60 * SLOW)
                self.assertEqual(p.returncode, 0, err)
                got.append([json.loads(line)["body"] for line in out.splitlines()])
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        self.assertEqual(sorted(got[0] + got[1]), list(range(n)))
        self.assertEqual(self.counts("q"), (0, 0, n, 0))

    def test_two_writers_same_keys(self):
        n = 50
        a, b = self.loops(KEYLOOP, n)
        # each key made one job, and both writers were told its id
        self.assertEqual(a, b)
        self.assertEqual(len(set(a)), n)
        self.assertEqual(self.counts("q"), (n, 0, 0, 0))
        self.assertEqual(self.stats()["q"]["puts"], n)


if __name__ == "__main__":
    unittest.main()
