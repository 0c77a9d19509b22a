"""test_signals: `pickline run` as a service is driven by signals and read
through its log: SIGHUP reloads the pipeline file (drain, then a restart in
place with the new file, or nothing but a logged reason when the file does
not check), SIGUSR1 reopens the log file, and the log is one line per event
in text or JSON (--log-level, --log-format, --log-file), libpq's multi-line
messages folded into that one line (the pg stages and qload).

Real processes: the engine, qctl, qload, prog_stagefill; HTTP over loopback;
no server where libpq is sent (a port nobody listens on)."""
import json
import os
import re
import signal
import threading
import time

import plhelp
from engine_fixtures import EngineTestCase, qctl
from plhelp import SLOW, free_port, pipeline, wait_for

TIME_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warn|info|debug) ")

HOP = """\
listen:
  port: ${port}
drain: 2
queues:
  retrieve: {ttr: 10}
  final: {ttr: 10}
stages:
  - name: hop
    kind: noop
    input: retrieve
    output: final
"""

# HOP with a second stage and queue: what the reload brings.
HOP2 = HOP.replace("  final: {ttr: 10}\n", "  final: {ttr: 10}\n  done: {ttr: 10}\n") + """\
  - name: hop2
    kind: noop
    input: final
    output: done
"""


# A stage whose service answers in 30 s, a drain of 1 s, and two attempts
# allowed: a reload's drain ends with the requests in flight canceled.
SLOW_SERVICE = """\
listen:
  port: ${port}
drain: 1
queues:
  retrieve: {ttr: 60, max_attempts: 2, backoff: 0.1}
  final: {ttr: 60}
stages:
  - name: extract
    kind: http_extract
    input: retrieve
    output: final
    url: ${records}/records/{id}
    key_field: id
    model: users
    concurrency: 4
    timeout: 60
"""


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def fd_targets(pid):
    """What each open descriptor of process pid points at (sorted), but
    sockets (connections of clients come and go)."""
    out = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            t = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except FileNotFoundError:
            continue
        if not t.startswith("socket:"):
            out.append(t)
    return sorted(out)


class Putter(threading.Thread):
    """Puts jobs {"n": i} to queue retrieve, each with its own
    Idempotency-Key, as a client that retries until it is answered: a
    refused or reset connection is tried again with the same key. acked
    holds every n the engine acknowledged (2xx)."""

    def __init__(self, eng, count):
        super().__init__(daemon=True)
        self.eng, self.count = eng, count
        self.acked, self.refused = [], 0
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            for n in range(self.count):
                deadline = time.monotonic() + 30 * SLOW
                while not self.stop.is_set():
                    try:
                        r = self.eng.put("retrieve", {"n": n}, key="k%d" % n)
                        if r.status in (200, 202):
                            self.acked.append(n)
                            break
                        if r.status != 503:
                            raise AssertionError("put %d: unexpected answer %r" % (n, r))
                    except OSError:
                        self.refused += 1
                    if time.monotonic() > deadline:
                        raise AssertionError("put %d was never answered" % n)
                    time.sleep(0.01)
                time.sleep(0.005)
        except Exception as ex:  # reported by the test
            self.error = ex


class SignalTest(EngineTestCase):
    tmp_prefix = "pickline-signals-"

    def test_sighup_reloads_in_place_without_losing_an_acknowledged_job(self):
        eng = self.engine(HOP)
        log = os.path.join(self.dir, "engine.log")
        eng.start(args=["--log-file", log])
        pid = eng.proc.pid
        fds_before = fd_targets(pid)
        putter = Putter(eng, 300)
        putter.start()
        wait_for(lambda: len(putter.acked) >= 50, 30, what="50 puts acknowledged")
        # The new file: a second stage and queue.
        with open(eng.path, "w") as f:
            f.write(HOP2.replace("${port}", str(eng.port)))
        eng.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "restarting with" in read(log), 30, what="the restart")
        eng.wait_healthy()
        putter.join(120 * SLOW)
        self.assertFalse(putter.is_alive(), "the client never finished")
        if putter.error:
            raise putter.error
        self.assertEqual(eng.proc.pid, pid)
        self.assertIsNone(eng.proc.poll(), "the engine exited")
        # Every acknowledged job went through both stages of the new file.
        self.assertEqual(sorted(putter.acked), list(range(300)))
        self.wait_depth(eng, "done", 300, timeout=60)
        bodies = sorted(json.loads(j["body"])["n"] if isinstance(j["body"], str) else j["body"]["n"]
                        for j in eng.peek("done", "ready"))
        self.assertEqual(bodies, list(range(300)), "a job was lost or doubled")
        text = read(log)
        self.assertIn("SIGHUP: %s checks (3 queues, 2 stages); reloading" % eng.path, text)
        self.assertIn("drained; every job committed or released", text)
        # The same process, with the same kinds of descriptors: nothing of
        # the old engine leaked into the new one.
        self.assertEqual(fd_targets(pid), fds_before)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0)

    def test_reloads_do_not_count_attempts_of_the_jobs_in_flight(self):
        # Jobs in flight when a reload's drain time is over are given back
        # (their requests canceled), and reloads are the operator's doing,
        # not the jobs': they never count against max_attempts. Two reloads
        # with max_attempts 2 used to bury them ("gave up after 2 attempts").
        from engine_fixtures import RecordAPI
        api = self.fx.add(RecordAPI())
        api.delay = 30
        for rid in ("r1", "r2"):
            api.add(rid, {"id": rid, "tenant": 1, "email": "%s@example.org" % rid})
        eng = self.engine(SLOW_SERVICE, records=api.url)
        log = os.path.join(self.dir, "engine.log")
        eng.start(args=["--log-file", log])
        pid = eng.proc.pid
        for rid in ("r1", "r2"):
            self.assertEqual(eng.put("retrieve", {"id": rid}).status, 202)
        for n in (1, 2):
            self.wait(lambda: api.hits["r1"] >= n and api.hits["r2"] >= n, 30,
                      "both requests in flight (%d)" % n, eng)
            eng.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: read(log).count("restarting with") >= n, 30, what="reload %d" % n)
            eng.wait_healthy()
        # They are worked again after the second reload, and nothing was
        # counted against them.
        self.wait(lambda: api.hits["r1"] >= 3 and api.hits["r2"] >= 3, 30,
                  "both requests in flight after the reloads", eng)
        self.assertEqual(eng.proc.pid, pid)
        jobs = eng.peek("retrieve")
        self.assertEqual(sorted(j["body"]["id"] for j in jobs), ["r1", "r2"])
        self.assertEqual([(j["state"], j["attempts"]) for j in jobs], [("ready", 0)] * 2, jobs)
        self.assertEqual(eng.peek("retrieve", "buried"), [])
        self.assertIn("drain time over", read(log))
        # A stop's drain still counts the attempt it cut short (test_engine 6b).
        rc, _ = eng.terminate(timeout=1 + 10)
        self.assertEqual(rc, 0)
        jobs = eng.peek("retrieve")
        self.assertEqual(sorted(j["attempts"] for j in jobs), [1, 1], jobs)

    def test_sighup_tells_the_service_manager_reloading_then_ready(self):
        from test_service import NotifySocket
        ns = NotifySocket(os.path.join(self.dir, "notify.sock"))
        self.addCleanup(ns.close)
        eng = self.engine(HOP)
        eng.start(env={"NOTIFY_SOCKET": ns.path})
        ns.wait("READY=1")
        eng.proc.send_signal(signal.SIGHUP)
        ns.wait("RELOADING=1")
        wait_for(lambda: ns.drain() or sum("READY=1" in m for m in ns.msgs) >= 2, 30,
                 what="READY=1 from the restarted engine")
        self.assertFalse([m for m in ns.msgs if "STOPPING=1" in m], "a reload is no stop: %s" % ns.msgs)
        self.assertLess(ns.index("RELOADING=1"), len(ns.msgs) - 1)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0)
        ns.wait("STOPPING=1")

    def test_sighup_with_a_file_that_does_not_check_keeps_running(self):
        eng = self.engine(HOP)
        log = os.path.join(self.dir, "engine.log")
        eng.start(args=["--log-file", log])
        with open(eng.path, "a") as f:
            f.write("  - name: broken\n    kind: no_such_kind\n    input: final\n")
        eng.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "does not check" in read(log), 20, what="the refusal in the log")
        text = read(log)
        self.assertIn("kind 'no_such_kind'", text)
        self.assertNotIn("draining", text)
        # It still works the old pipeline.
        self.assertEqual(eng.put("retrieve", {"n": 1}).status, 202)
        self.wait_depth(eng, "final", 1)
        self.assertIsNone(eng.proc.poll())
        # SIGTERM still drains and exits 0.
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0)
        self.assertIn("signal 15: draining", read(log))

    def test_sigterm_during_a_reload_stops(self):
        eng = self.engine(HOP)
        log = os.path.join(self.dir, "engine.log")
        eng.start(args=["--log-file", log])
        eng.proc.send_signal(signal.SIGHUP)
        eng.proc.send_signal(signal.SIGTERM)
        rc = eng.proc.wait(30 * SLOW)
        self.assertEqual(rc, 0, read(log))
        # It never restarted: SIGTERM made the reload's drain a stop (or, had
        # the reload been done, SIGTERM stopped the new engine: then it says
        # so).
        text = read(log)
        self.assertIn("drained", text)
        if "restarting with" in text:
            self.assertIn("signal 15: draining", text.split("restarting with", 1)[1])

    def test_sigusr1_reopens_the_log_file(self):
        eng = self.engine(HOP)
        log = os.path.join(self.dir, "engine.log")
        eng.start(args=["--log-file", log])
        wait_for(lambda: "engine: running" in read(log), 10, what="the first line")
        os.rename(log, log + ".1")  # what logrotate does
        eng.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: "reopened" in read(log), 10, what="the new log file")
        self.assertIn("engine: running", read(log + ".1"))
        self.assertNotIn("engine: running", read(log))
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0)
        self.assertIn("drained", read(log))
        self.assertNotIn("drained", read(log + ".1"))
        self.assertEqual(eng.stderr(), "", "with --log-file, nothing goes to stderr")


class LogTest(EngineTestCase):
    tmp_prefix = "pickline-logs-"

    def test_json_lines_with_stage_and_job(self):
        eng = self.engine(pipeline("handoff"))
        eng.start(args=["--log-format", "json"])
        # An output over final's max_body: the hand-off fails and the job is
        # buried, logged with its stage and job.
        r = eng.put("notices", {"big": "x" * 100})
        self.assertEqual(r.status, 202, r)
        job = r.json()["id"]
        self.wait_depth(eng, "notices", 1, states=("buried",))
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0)
        lines = eng.stderr().splitlines()
        self.assertGreater(len(lines), 2)
        objs = []
        for line in lines:
            o = json.loads(line)  # every line is one JSON object
            self.assertEqual(sorted(o), ["job", "level", "message", "stage", "time"], line)
            self.assertRegex(o["time"], TIME_MS)
            self.assertIn(o["level"], ("error", "warn", "info", "debug"))
            objs.append(o)
        mine = [o for o in objs if o["stage"] == "pass" and o["job"] == job]
        self.assertTrue(mine, "no line of stage pass and job %d in %s" % (job, lines))
        self.assertIn("max_body", mine[0]["message"])
        self.assertTrue(any(o["stage"] is None and o["job"] is None and
                            o["message"].startswith("engine: running") for o in objs))

    def test_log_level_and_bad_flags(self):
        eng = self.engine(HOP)
        eng.start(args=["--log-level", "warn"])
        eng.put("retrieve", {"n": 1})
        self.wait_depth(eng, "final", 1)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0)
        self.assertNotIn("engine: running", eng.stderr())  # an info line
        for args, what in ((["--log-level", "loud"], "--log-level needs one of error, warn, info, debug"),
                           (["--log-format", "xml"], "--log-format needs text or json"),
                           (["--log-file"], "--log-file needs a path")):
            r = plhelp.run([plhelp.binary("pickline"), "run", eng.path] + args)
            self.assertEqual(r.code, 2, r)
            self.assertIn(what, r.err)
        r = plhelp.run([plhelp.binary("pickline"), "run", eng.path, "--data", eng.data,
                        "--log-file", os.path.join(self.dir, "no", "such", "dir", "x.log")])
        self.assertEqual(r.code, 1, r)
        self.assertIn("cannot open the log file", r.err)

    def test_pg_stage_error_is_one_line(self):
        # pg_notify against a port nobody listens on: libpq's message is two
        # lines ("...Connection refused\n\tIs the server running...?").
        text = HOP.replace("stages:\n", "stages:\n  - name: notices\n    kind: pg_notify\n"
                           "    dsn: \"host=127.0.0.1 port=%d dbname=x connect_timeout=5\"\n"
                           "    channels: [users_changed]\n    output: retrieve\n" % free_port())
        for fmt in ("text", "json"):
            eng = self.engine(text, name="pg-" + fmt)
            eng.start(args=["--log-format", fmt])
            self.wait(lambda: "Is the server running" in eng.stderr(), 20, "the libpq error", eng)
            rc, _ = eng.terminate()
            self.assertEqual(rc, 0)
            lines = eng.stderr().splitlines()
            for line in lines:
                if fmt == "json":
                    json.loads(line)
                else:
                    self.assertRegex(line, TEXT_LINE)
            down = [line for line in lines if "Is the server running" in line]
            self.assertIn("Connection refused; Is the server running", down[0])


class QloadLogTest(plhelp.TempDirTest):
    tmp_prefix = "pickline-qload-log-"

    def test_libpq_error_is_one_line(self):
        pipe = self.write("pipeline.yml", "models:\n  events:\n    properties:\n"
                          "      id: {type: integer, key: true}\nqueues:\n  final:\n"
                          "stages:\n  - name: seal\n    kind: batch\n    input: final\n")
        data = os.path.join(self.dir, "data")
        r = plhelp.run([plhelp.binary("tests/prog_stagefill"), data, pipe, "events"],
                       input='{"id": 1}\n')
        self.assertEqual(r.code, 0, r)
        r = plhelp.run([plhelp.binary("qload"), "--data", data, "--target",
                        "host=127.0.0.1 port=%d dbname=x" % free_port()])
        self.assertEqual(r.code, 1, r)
        self.assertIn("Connection refused; Is the server running", r.err)
        for line in r.err.splitlines():
            self.assertTrue(line.startswith("qload: "), "a line of its own: %r in\n%s" % (line, r.err))
