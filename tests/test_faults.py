"""Faults the engine must survive without breaking a promise (issue 9): a
hand-off whose commit fails, a client that retries after the ack, a full disk,
a damaged data directory. Real binaries, real files, real SIGKILLs.

Set PICKLINE_KEEP_TEST_DIRS=1 to keep the temp dirs for a look afterwards."""
import collections
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import EngineTestCase, qctl, qctl_peek
from plhelp import SLOW, binary, pipeline, wait_for


class FaultTest(EngineTestCase):
    def qctl_ok(self, *args, data=None):
        p = qctl(data or os.path.join(self.dir, "data"), *args)
        self.assertEqual(p.returncode, 0, "qctl %s: %s%s" % (" ".join(map(str, args)), p.stdout, p.stderr))
        return p.stdout


class HandOffTest(FaultTest):
    """Issue 9.1: a failed hand-off never stops the engine."""

    PIPE = pipeline("handoff")

    def test_output_too_big_for_next_queue_is_buried_and_engine_runs_on(self):
        e = self.engine(self.PIPE).start()
        r = e.put("notices", json.dumps({"id": 1, "name": "far more than twenty bytes"}))
        self.assertIn(r.status, (200, 202), r)
        jid = r.json()["id"]
        peek = {}

        def buried():
            if not e.running():
                raise AssertionError("pickline died on a failed hand-off\n" + e.stderr_tail())
            peek["j"] = qctl_peek(e.data, "notices", "buried")
            return len(peek["j"]) == 1
        wait_for(buried, 15 * SLOW, 0.1, "the job to be buried")
        j = peek["j"][0]
        self.assertEqual(j["id"], jid)
        self.assertIn("final", j["error"])
        self.assertIn("max_body", j["error"])
        # the engine is still up and answers
        self.assertEqual(e.request("GET", "/health").status, 200)
        # qctl show says why
        show = self.qctl_ok("show", jid)
        self.assertIn("max_body", show)
        # a job that fits still flows
        r = e.put("notices", json.dumps({"id": 2}))
        self.assertIn(r.status, (200, 202), r)
        wait_for(lambda: len(qctl_peek(e.data, "final", "ready")) == 1, 15 * SLOW, 0.1, "the small job")
        # the buried job kicked: buried again, the engine still runs (no crash loop)
        self.qctl_ok("kick", "notices")
        wait_for(lambda: len(qctl_peek(e.data, "notices", "buried")) == 1 and e.running(),
                 15 * SLOW, 0.1, "the kicked job to be buried again")
        rc, _ = e.terminate()
        self.assertEqual(rc, 0, e.stderr_tail())
        e.start()
        time.sleep(0.5)
        self.assertTrue(e.running(), e.stderr_tail())
        rc, _ = e.terminate()
        self.assertEqual(rc, 0, e.stderr_tail())



class RetryAfterAckTest(FaultTest):
    """Issue 9.2: a client that retries with the same Idempotency-Key after
    its job was already worked (the answer was lost: the engine was killed
    after the commit, before the 202 left) gets the first job back, across a
    SIGKILL and a restart, and no second record enters the line."""

    PIPE = pipeline("retry_after_ack")

    def test_retry_after_ack_returns_the_first_job(self):
        e = self.engine(self.PIPE).start()
        r1 = e.put("notices", json.dumps({"n": 1}), key="order-17")
        self.assertEqual(r1.status, 202, r1)
        first = r1.json()["id"]
        # worked: forwarded out of "notices" and acked at the end of the line
        wait_for(lambda: len(qctl_peek(e.data, "final", "ready")) == 1, 15 * SLOW, 0.1, "the hand-off")
        got = json.loads(self.qctl_ok("reserve", "final", "--json"))
        self.qctl_ok("ack", got["id"])
        self.assertEqual(e.stats()["notices"]["puts"], 1)
        # the answer was lost: the engine dies; the client retries later
        e.kill()
        e.start()
        r2 = e.put("notices", json.dumps({"n": 1}), key="order-17")
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.json(), {"id": first, "existed": True, "done": True})
        time.sleep(0.3)
        st = e.stats()
        self.assertEqual(st["notices"]["puts"], 1, st)
        self.assertEqual(st["final"]["puts"], 1, st)
        # qctl put --key says the same and adds nothing
        p = qctl(e.data, "put", "notices", "--key", "order-17", "--json", '{"n": 1}')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout), {"id": first, "existed": True})
        self.assertIn("already done", p.stderr)
        self.assertEqual(e.stats()["notices"]["puts"], 1)
        # a queue keeping keys 1 s: after that a key is free again, and swept
        self.assertEqual(qctl(e.data, "put", "short", "--key", "k", "{}").returncode, 0)
        got = json.loads(self.qctl_ok("reserve", "short", "--json"))
        self.qctl_ok("ack", got["id"])
        p = qctl(e.data, "put", "short", "--key", "k", "--json", "{}")
        self.assertTrue(json.loads(p.stdout)["existed"], p.stdout)
        time.sleep(1.2)
        p = qctl(e.data, "put", "short", "--key", "k", "--json", "{}")
        self.assertFalse(json.loads(p.stdout)["existed"], p.stdout)
        rc, _ = e.terminate()
        self.assertEqual(rc, 0, e.stderr_tail())



def mount_tmpfs(path, size_mib):
    """Mounts a tmpfs of size_mib at path; returns None, or why it cannot."""
    if os.geteuid() != 0:
        return "not root: cannot mount a small tmpfs for a full disk"
    os.makedirs(path, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % size_mib, "tmpfs", path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        return "cannot mount a tmpfs (%s)" % p.stderr.strip()
    return None


class FullDiskTest(FaultTest):
    """Issue 9.4: on a full disk puts are refused with 507 before space runs
    out, acks and deletes still work, a refused put never fails its
    neighbours, and puts resume once there is room again. On a real (small)
    tmpfs."""

    PIPE = pipeline("full_disk")

    def setUp(self):
        super().setUp()
        self.mnt = os.path.join(self.dir, "mnt")
        why = mount_tmpfs(self.mnt, 48)
        if why:
            self.skipTest(why)
        self.addCleanup(lambda: subprocess.run(["umount", "-l", self.mnt]))

    def post_many(self, e, n, size, par=1):
        """Posts n bodies of about size bytes (par at a time); returns the
        statuses and the ids accepted."""
        import concurrent.futures
        body = json.dumps({"pad": "x" * size})

        def one(i):
            r = e.put("notices", body, key="k-%d-%d" % (time.monotonic_ns(), i))
            return r.status, (r.json().get("id") if r.status in (200, 202) else None), r.text
        with concurrent.futures.ThreadPoolExecutor(par) as ex:
            return list(ex.map(one, range(n)))

    def test_full_disk_refuses_puts_with_507_and_recovers(self):
        data = os.path.join(self.mnt, "data")
        e = self.engine(self.PIPE, data=data)
        e.start()
        # Leave a little room on the disk: a filler file takes the rest.
        st = os.statvfs(self.mnt)
        free = st.f_bavail * st.f_frsize
        filler = os.path.join(self.mnt, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, free - 20 * 2**20))
        accepted, statuses = set(), []
        # Big bodies from many clients at once: one group commit holds
        # more than the headroom, so room must be asked per put.
        for round_ in range(40):
            res = self.post_many(e, 32, 400 * 1024, par=32)
            statuses += [s for s, _, _ in res]
            accepted |= {i for s, i, _ in res if s == 202}
            if all(s == 507 for s, _, _ in res):
                break
        self.assertTrue(e.running(), e.stderr_tail())
        bad = collections.Counter(s for s in statuses if s not in (202, 507))
        self.assertEqual(bad, {}, "answers other than 202/507 on a full disk\n" + e.stderr_tail())
        self.assertIn(507, statuses, "the disk never filled (%d puts)" % len(statuses))
        self.assertTrue(all(s == 507 for s, _, _ in res), "the last round was not refused whole")
        self.assertIn("no room", res[0][2])
        self.assertIn("disk full", res[0][2])
        # Every job that got a 202 is on disk, none more.
        wait_for(lambda: e.stats()["notices"]["reserved"] == 0, 10 * SLOW, 0.1, "hand-offs to settle")
        stt = e.stats()
        self.assertEqual(stt["notices"]["puts"], len(accepted), stt)
        self.assertEqual(stt["notices"]["ready"] + stt["out"]["ready"], len(accepted), stt)
        self.assertEqual(stt["notices"]["buried"], 0, stt)
        # Acks and deletes still work on the full disk: the headroom is theirs.
        p = qctl(data, "purge", "out")
        self.assertEqual(p.returncode, 0, p.stderr)
        # The engine is up; once there is room again, puts resume.
        self.assertEqual(e.request("GET", "/health").status, 200)
        os.unlink(filler)
        ok = []
        wait_for(lambda: ok.append(self.post_many(e, 1, 1024)[0][0]) or ok[-1] == 202, 10 * SLOW, 0.2,
                 "puts to resume")
        rc, _ = e.terminate()
        self.assertEqual(rc, 0, e.stderr_tail())



class DamagedStoreTest(FaultTest):
    """Issue 9.5: a data directory that is not a valid store is refused with
    a clear error naming the file; it is never re-created over, a cut file
    never kills a command with SIGBUS, a damaged record is named."""

    def fill(self, n=300):
        data = os.path.join(self.dir, "data")
        body = "\n".join(json.dumps({"body": {"n": i, "pad": "x" * 600}}) for i in range(n)) + "\n"
        p = qctl(data, "import", "q", input=body)
        self.assertEqual(p.returncode, 0, p.stderr)
        return data

    def assert_refused(self, data, *words):
        for argv in (["stats"], ["put", "q", "{}"]):
            p = qctl(data, *argv)
            self.assertEqual(p.returncode, 1, "qctl %s: rc %d\n%s" % (argv, p.returncode, p.stderr))
            for w in words:
                self.assertIn(w, p.stderr, "qctl %s" % argv)
        pipe = os.path.join(self.dir, "p.yml")
        with open(pipe, "w") as f:
            f.write("queues:\n  q: {}\n  q2: {}\nstages:\n  - {name: s, kind: noop, input: q, output: q2}\n")
        p = subprocess.run([binary("pickline"), "run", pipe, "--data", data], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30 * SLOW)
        self.assertEqual(p.returncode, 1, "pickline run: rc %d\n%s" % (p.returncode, p.stderr))
        for w in words:
            self.assertIn(w, p.stderr)

    def test_truncated_store_is_refused_without_sigbus(self):
        data = self.fill(3000)
        f = os.path.join(data, "data.mdb")
        os.truncate(f, 512 * 1024)
        self.assert_refused(data, "data.mdb", "truncated")
        self.assertEqual(os.path.getsize(f), 512 * 1024)

    def test_empty_store_file_is_refused_not_recreated(self):
        data = os.path.join(self.dir, "data")
        os.makedirs(data)
        open(os.path.join(data, "data.mdb"), "wb").close()
        self.assert_refused(data, "data.mdb", "0 bytes")
        self.assertEqual(os.path.getsize(os.path.join(data, "data.mdb")), 0)

    def test_damaged_record_is_named_and_verify_finds_it(self):
        data = self.fill(5)
        # Job 3's header becomes a msgpack array claiming 4 billion items.
        dump = ("VERSION=3\nformat=bytevalue\ndatabase=jobs\ntype=btree\nHEADER=END\n"
                " 000000000000000300\n ddffffffff010203\nDATA=END\n")
        p = subprocess.run(["mdb_load", "-s", "jobs", data], input=dump, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = qctl(data, "show", "3")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("damaged", p.stderr)
        self.assertIn("job 3", p.stderr)
        self.assertNotIn("newer pickline", p.stderr)
        self.assertEqual(qctl(data, "show", "2").returncode, 0)
        p = qctl(data, "verify")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("job 3", p.stdout)



class OneEngineTest(FaultTest):
    """Issue 13.3: one engine per data directory. A second `pickline run`
    on the same directory is refused naming the first (its pid and pipeline
    file), and changes nothing (the stored pipeline stays the first's);
    qctl works beside the engine; after the first is SIGKILLed, the lock is
    gone with it."""

    PIPE = pipeline("one_engine")

    def test_second_engine_is_refused(self):
        data = os.path.join(self.dir, "data")
        a = self.engine(self.PIPE, model="first", data=data, name="a")
        b = self.engine(self.PIPE, model="second", data=data, name="b")
        a.start()
        p = subprocess.run([binary("pickline"), "run", b.path, "--data", data, "--port", str(b.port)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30 * SLOW)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("in use by another pickline engine", p.stderr)
        self.assertIn("pid %d" % a.proc.pid, p.stderr)
        self.assertIn(a.path, p.stderr)
        schema = self.qctl_ok("schema", "--json", data=data)
        self.assertIn("first", schema)
        self.assertNotIn("second", schema)
        self.assertEqual(a.put("q", "{}").status, 202)
        self.assertEqual(qctl(data, "stats").returncode, 0)
        a.kill()
        b.start()
        self.assertIn("second", self.qctl_ok("schema", "--json", data=data))
        rc, _ = b.terminate()
        self.assertEqual(rc, 0, b.stderr_tail())


if __name__ == "__main__":
    unittest.main()
