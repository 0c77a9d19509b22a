"""test_torture: the whole pipeline under faults, checked in the warehouse.

    clients --POST /queues/incoming/jobs, Idempotency-Key--> pickline run
        (validate `check` -> final -> batch `seal`) --> qload --follow
        --mode append --> PostgreSQL table `events` WITHOUT a primary key

Client threads post records ({"model":"events","row":{k, n, payload}}, the
row's key k is also the Idempotency-Key) and retry each one with the same
key until it is acknowledged with a 2xx (202 today; after keys outlive the
ack, a retry may get 200 with "existed": true: both count as acknowledged).
A few clients are impatient: after a request that got no answer they give
the record up (it was sent, never acknowledged).

Meanwhile the main thread runs a seeded schedule of faults: SIGKILL of
`pickline run` and of `qload --follow` at random moments (each restarted
after a random pause; about one qload restart in three also kills itself at
a seam of its first batch, PICKLINE_QLOAD_CRASH: before or during the COPY,
before or just after the commit), warehouse restarts (`pg_ctl restart`, fast
stop) and crashes (`pg_ctl stop -m immediate`, then start: crash recovery).
Then it
drains: no new records, pickline and qload run cleanly until every client
has its answer, the queues are empty and every batch is loaded; both are
stopped with SIGTERM (exit 0 expected). Then the checks:

  - every acknowledged key is in the warehouse exactly once, with the n and
    payload it was sent with (counts: acked, lost, duplicated);
  - a key that was sent but never acknowledged may be there, at most once
    (counted apart); no row has a key that was never sent;
  - no job is left on any queue (ready, delayed, reserved or buried: every
    record is valid, so nothing has a reason to be buried);
  - `qctl batches`: every batch loaded (none failed or held), and each one
    the store calls loaded is in the warehouse's ledger (pickline_ledger),
    whose row counts add up to the table's;
  - no staged row is left in the store once every batch loaded (issue 9,
    item 7: `mdb_stat -s stage` of the data directory counts 0 entries);
  - pickline and qload never exited by themselves.

Two runs: the warehouse with synchronous_commit=on, and one with
synchronous_commit=off (common on tuned servers: COMMIT returns before the
WAL is written, so a crash loses the last commits unless qload asks for a
durable commit for its own session).

Counts: 44 kills (22 of each program) per run, plus 3 restarts and 4
crashes of the warehouse, in the release and the ASan build alike (about 30 s
a run in release, 50 s under ASan, where plhelp.SLOW stretches the pauses
between faults 2x and the clients' pace 4x, so fewer records go through).

Environment:
  PICKLINE_TORTURE_SEED=N  replay a run's schedule of faults (the seed is
                           printed on stderr and in every failure message;
                           the thread interleaving is not replayed)
  PICKLINE_SOAK=1          a soak run: ten times the kills and faults
  PICKLINE_SOAK=N          (N > 1) a soak run with N kills per run
  PICKLINE_KEEP_TEST_DIRS=1  keep the work directory (data, logs; kept anyway when
                           the run fails)
"""
import collections
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgfix  # noqa: E402
import plhelp  # noqa: E402

SLOW = plhelp.SLOW

QUEUES = ("incoming", "final")
SEAMS = ("before_copy", "during_copy", "before_commit", "after_commit")  # qload --help


class HarnessError(AssertionError):
    pass


# ---------------------------------------------------------------- sizing

def plan_sizes():
    """(kills, warehouse restarts, warehouse crashes) per run."""
    base = 44
    soak = os.environ.get("PICKLINE_SOAK", "").strip()
    kills = base
    if soak:
        try:
            n = int(soak)
        except ValueError:
            raise HarnessError("PICKLINE_SOAK must be 1 (ten times the kills) or a number of kills, "
                               "not %r" % soak) from None
        if n < 1:
            raise HarnessError("PICKLINE_SOAK must be 1 or more, not %d" % n)
        kills = base * 10 if n == 1 else n
    restarts = max(2, round(kills / 15))
    crashes = max(2, round(kills / 11))
    return kills, restarts, crashes


def payload(i):
    """The payload of record i: hostile text now and then, '' and NULL too."""
    kind = i % 7
    if kind == 0:
        return "plain %d" % i
    if kind == 1:
        return 'comma, "quoted", %d,' % i
    if kind == 2:
        return "line\nfeed\r\nand cr %d" % i
    if kind == 3:
        return "back\\slash \\N \\. tab\there %d" % i
    if kind == 4:
        return "\u00fcn\u00efc\u00f6d\u00e9 \u2603 \U0001F600 %d" % i
    if kind == 5:
        return ""
    return None


def pick_port():
    """A free TCP port on 127.0.0.1 outside the kernel's ephemeral range, so
    no outgoing connection (of this test or another) takes it while pickline
    is down between a kill and its restart."""
    lo, hi = 32768, 60999
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        pass
    ranges = []
    if lo > 11000:
        ranges.append((10000, lo))
    if hi < 64000:
        ranges.append((hi + 1, 65536))
    if not ranges:
        ranges.append((1024, 65536))
    rnd = random.SystemRandom()
    for _ in range(500):
        a, b = rnd.choice(ranges)
        port = rnd.randrange(a, b)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise HarnessError("no free TCP port found on 127.0.0.1")


def describe_exit(rc):
    if rc is None:
        return "running"
    if rc < 0:
        try:
            return "killed by %s" % signal.Signals(-rc).name
        except ValueError:
            return "killed by signal %d" % -rc
    return "exit %d" % rc


# ---------------------------------------------------------------- a restartable child

class Proc:
    """One restartable child process. Every start appends to one log file
    (stdout and stderr), after a marker line naming the start."""

    def __init__(self, name, log, env):
        self.name = name
        self.log = log
        self.env = env
        self.p = None
        self.starts = 0
        self.kills = 0
        self.start_offset = 0

    def start(self, argv, extra_env=None):
        assert not self.running(), "%s is already running" % self.name
        self.starts += 1
        env = dict(self.env, **(extra_env or {}))
        with open(self.log, "ab") as f:
            f.write(("=== harness: start %d of %s: %s%s\n" % (
                self.starts, self.name, " ".join(argv),
                "".join(" (%s=%s)" % kv for kv in sorted((extra_env or {}).items())))).encode())
            self.start_offset = f.tell()
            self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                      env=env, start_new_session=True)

    def running(self):
        return self.p is not None and self.p.poll() is None

    def exited(self):
        """The exit status when the process ended by itself (not reaped by
        kill/terminate yet), else None."""
        if self.p is None:
            return None
        return self.p.poll()

    def kill(self):
        """SIGKILL and reap; counts the kill when the process was running."""
        if self.p is None:
            return None
        if self.p.poll() is None:
            try:
                os.kill(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.kills += 1
        rc = self.p.wait()
        self.p = None
        return rc

    def terminate(self, timeout):
        """SIGTERM; waits up to timeout and returns the exit status, or None
        when it did not exit (it is SIGKILLed then)."""
        if self.p is None:
            return None
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            rc = None
        self.p = None
        return rc

    def forget(self):
        """Drops a process that exited by itself (after it was recorded)."""
        if self.p is not None:
            self.p.wait()
            self.p = None

    def this_start_log(self):
        try:
            with open(self.log, "rb") as f:
                f.seek(self.start_offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, n=25):
        try:
            with open(self.log, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no log)"
        return "--- %s (last %d of %d lines)\n%s" % (self.log, min(n, len(lines)), len(lines),
                                                     "\n".join(lines[-n:]))


# ---------------------------------------------------------------- the clients

class Clients:
    """Client threads that post records with an Idempotency-Key and retry
    each until a 2xx. All bookkeeping is under self.lock."""

    def __init__(self, run, threads, seed):
        self.run = run
        self.lock = threading.Lock()
        self.next_i = 0
        self.sent = {}            # key -> (n, payload): every key tried at least once
        self.acked = {}           # key -> {"status", "id", "existed", "attempts"}
        self.abandoned = set()    # sent, no answer, given up (impatient clients)
        self.refused = {}         # key -> (status, body): a 4xx that is not worth a retry
        self.outcomes = collections.Counter()  # per attempt: "202", "conn refused", "no answer", ...
        self.ambiguous = 0        # attempts that reached pickline and got no answer
        self.stop_new = threading.Event()   # finish the records in hand, take no new one
        self.hard_stop = threading.Event()  # give up now (the harness is ending)
        self.errors = []          # exceptions of the threads themselves (harness bugs)
        self.threads = [threading.Thread(target=self._main, args=(random.Random(seed * 1000 + t),),
                                         name="client-%d" % t, daemon=True)
                        for t in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        """Takes no new records: each thread ends once its record in hand is
        answered (or abandoned)."""
        self.stop_new.set()

    def done(self):
        return not any(t.is_alive() for t in self.threads)

    def kill(self):
        self.stop_new.set()
        self.hard_stop.set()
        for t in self.threads:
            t.join(30)

    def _take(self):
        with self.lock:
            if self.stop_new.is_set() or self.next_i >= self.run.max_records:
                return None
            self.next_i += 1
            return self.next_i

    def _main(self, rnd):
        try:
            while not self.stop_new.is_set():
                i = self._take()
                if i is None:
                    return
                self._deliver(i, rnd)
                time.sleep(rnd.uniform(0, self.run.pace))
        except BaseException as e:  # a harness bug must not pass as a quiet thread death
            import traceback
            with self.lock:
                self.errors.append("%s: %s" % (threading.current_thread().name, traceback.format_exc()))
            raise e

    def _deliver(self, i, rnd):
        key = "r%06d" % i
        p = payload(i)
        body = json.dumps({"model": "events", "row": {"k": key, "n": i, "payload": p}}).encode("utf-8")
        impatient = rnd.random() < 0.04
        with self.lock:
            self.sent[key] = (i, p)
        attempts = 0
        while not self.hard_stop.is_set():
            attempts += 1
            conn = http.client.HTTPConnection("127.0.0.1", self.run.port, timeout=15 * SLOW)
            connected = False
            try:
                conn.connect()
                connected = True
                conn.request("POST", "/queues/incoming/jobs", body=body,
                             headers={"Content-Type": "application/json", "Idempotency-Key": key})
                r = conn.getresponse()
                data = r.read()
                status = r.status
            except (OSError, http.client.HTTPException) as e:
                if not connected:
                    what = "conn refused" if isinstance(e, ConnectionRefusedError) else "connect: " + type(e).__name__
                else:
                    what = "no answer: " + type(e).__name__
                with self.lock:
                    self.outcomes[what] += 1
                    if connected:
                        self.ambiguous += 1
                    if connected and impatient:
                        self.abandoned.add(key)
                        return
                time.sleep(rnd.uniform(0.01, 0.25))
                continue
            finally:
                conn.close()
            with self.lock:
                self.outcomes[str(status)] += 1
            if 200 <= status < 300:
                try:
                    ans = json.loads(data)
                except ValueError:
                    ans = {}
                with self.lock:
                    self.acked[key] = {"status": status, "id": ans.get("id"),
                                       "existed": bool(ans.get("existed")), "attempts": attempts}
                return
            if status in (408, 429, 507) or status >= 500:
                time.sleep(rnd.uniform(0.02, 0.25))
                continue
            with self.lock:
                self.refused[key] = (status, data[:300].decode("utf-8", "replace"))
            return


# ---------------------------------------------------------------- one run

class Run:
    def __init__(self, test, label, pg_conf):
        self.test = test
        self.label = label
        self.pg_conf = pg_conf
        env_seed = os.environ.get("PICKLINE_TORTURE_SEED", "").strip()
        self.seed = int(env_seed) if env_seed else random.SystemRandom().randrange(1, 1 << 31)
        self.rnd = random.Random(self.seed)
        self.kills_planned, self.restarts_planned, self.crashes_planned = plan_sizes()
        self.max_records = 200000
        self.pace = 0.012 * SLOW     # a client's pause between records: up to this (seconds)
        self.problems = []
        self.faults = collections.Counter()
        self.self_exits = collections.Counter()
        self.seam_kills = collections.Counter()
        self.qload_seam = None
        self.t0 = time.monotonic()
        self.tmp = plhelp.make_tempdir("pickline-torture-")
        test.addCleanup(self._remove_tmp)
        self.data = os.path.join(self.tmp, "data")
        self.pipeline = os.path.join(self.tmp, "pipeline.yml")
        self.port = pick_port()
        with open(self.pipeline, "w") as f:
            f.write(plhelp.pipeline("torture", port=self.port))
        env = dict(os.environ)
        for k in ("PICKLINE_DATA", "PICKLINE_TARGET", "PICKLINE_QLOAD_CRASH"):
            env.pop(k, None)
        self.pickline = Proc("pickline", os.path.join(self.tmp, "pickline.log"), env)
        self.qload = Proc("qload", os.path.join(self.tmp, "qload.log"), env)
        test.addCleanup(self._kill_all)
        self.clients = None
        self.pg = None
        self.dsn = None
        sys.stderr.write("\ntorture [%s]: seed %d (PICKLINE_TORTURE_SEED=%d replays it); %d kills, "
                         "%d warehouse restarts, %d warehouse crashes planned; work dir %s\n"
                         % (label, self.seed, self.seed, self.kills_planned, self.restarts_planned,
                            self.crashes_planned, self.tmp))

    # ------------------------------------------------------------ cleanup
    def _kill_all(self):
        if self.clients:
            self.clients.kill()
        self.pickline.kill()
        self.qload.kill()
        if self.pg:
            try:
                self.pg.close()
            except (pgfix.PgFixError, subprocess.SubprocessError) as e:
                sys.stderr.write("torture [%s]: stopping the warehouse: %s\n" % (self.label, e))

    def _remove_tmp(self):
        if plhelp.keep_dirs() or plhelp.test_failed(self.test):
            sys.stderr.write("torture [%s]: kept %s\n" % (self.label, self.tmp))
            return
        plhelp.remove_tree(self.tmp)

    # ------------------------------------------------------------ tools
    def qctl_json(self, *args):
        r = plhelp.run([plhelp.binary("qctl"), "--data", self.data] + list(args) + ["--json"],
                       timeout=60)
        if r.code != 0:
            raise HarnessError("qctl %s failed: %r" % (" ".join(args), r))
        return json.loads(r.out) if r.out.strip() else None

    def stats(self):
        return self.qctl_json("stats") or {}

    def batches(self):
        return self.qctl_json("batches", "--limit", "0") or []

    def elapsed(self):
        return time.monotonic() - self.t0

    # ------------------------------------------------------------ processes
    def healthy(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2 * SLOW)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def start_pickline(self):
        for _ in range(5):
            self.pickline.start([plhelp.binary("pickline"), "run", self.pipeline, "--data", self.data,
                                 "--port", str(self.port)])
            end = time.monotonic() + 60 * SLOW
            while time.monotonic() < end:
                if self.pickline.exited() is not None:
                    break
                if self.healthy():
                    return
                time.sleep(0.02)
            rc = self.pickline.exited()
            if rc is None:
                self.pickline.kill()
                raise HarnessError("pickline did not answer GET /health within %.0f s of start %d\n%s"
                                   % (60 * SLOW, self.pickline.starts, self.pickline.tail()))
            log = self.pickline.this_start_log()
            self.pickline.forget()
            if "Address already in use" in log:
                # someone took the port while pickline was down: move (the clients follow)
                self.port = pick_port()
                continue
            raise AssertionError("pickline could not start again (%s) after %d kills: %s\n%s\n%s"
                                 % (describe_exit(rc), self.pickline.kills, log[-2000:],
                                    self.summary(), self.pickline.tail()))
        raise HarnessError("pickline found its port taken 5 times in a row")

    def start_qload(self, seam=None):
        """qload --follow; with seam, it SIGKILLs itself at that point of its
        first batch (PICKLINE_QLOAD_CRASH, qload's crash test seam)."""
        self.qload_seam = seam
        self.qload.start([plhelp.binary("qload"), "--data", self.data, "--target", self.dsn,
                          "--follow", "--mode", "append", "--poll", "0.1"],
                         {"PICKLINE_QLOAD_CRASH": seam} if seam else None)

    def check_self_exits(self):
        """Records a pickline or qload that ended by itself, and starts it
        again (a crash is a finding, but the run goes on to see the rest)."""
        for proc in (self.pickline, self.qload):
            rc = proc.exited()
            if rc is None:
                continue
            if proc is self.qload and self.qload_seam and rc == -signal.SIGKILL:
                # the kill it was started for, at a seam of its first batch
                self.seam_kills[self.qload_seam] += 1
                proc.forget()
                if not self.pg.running:
                    self.pg.start()
                self.start_qload()
                continue
            self.self_exits[proc.name] += 1
            self.problems.append("%s exited by itself (%s) at %.1f s, start %d; its log:\n%s"
                                 % (proc.name, describe_exit(rc), self.elapsed(), proc.starts,
                                    proc.this_start_log()[-1500:]))
            proc.forget()
            if self.self_exits[proc.name] > 5:
                raise AssertionError("%s keeps exiting by itself (%d times); giving up\n%s"
                                     % (proc.name, self.self_exits[proc.name],
                                        "\n".join(self.problems[-3:])))
            if not self.pg.running:
                self.pg.start()
            if proc is self.pickline:
                self.start_pickline()
            else:
                self.start_qload()

    # ------------------------------------------------------------ setup
    def setup(self):
        conf = {"max_connections": "50"}
        conf.update(self.pg_conf)
        self.pg = pgfix.PgCluster(extra_conf=conf)
        self.dsn = self.pg.create_db("torture")
        got = self.pg.scalar("SHOW synchronous_commit", dsn=self.dsn)
        want = self.pg_conf.get("synchronous_commit", "on")
        if got != want:
            raise HarnessError("the warehouse runs with synchronous_commit=%s, wanted %s" % (got, want))
        r = plhelp.run([plhelp.binary("pickline"), "check", self.pipeline])
        if r.code != 0:
            raise HarnessError("pickline check refused the pipeline: %r" % r)
        self.start_pickline()
        # The table from the model's DDL, then without its primary key: a
        # row loaded twice shows as two rows.
        r = plhelp.run([plhelp.binary("qload"), "--data", self.data, "--target", self.dsn,
                        "--create-tables", "--json"], timeout=60)
        if r.code != 0:
            raise HarnessError("qload --create-tables failed: %r" % r)
        self.pg.psql("""DO $$ DECLARE c text; BEGIN
              FOR c IN SELECT conname FROM pg_constraint WHERE conrelid = 'events'::regclass
                       AND contype IN ('p', 'u') LOOP
                EXECUTE format('ALTER TABLE events DROP CONSTRAINT %I', c);
              END LOOP; END $$""", dsn=self.dsn)
        n = self.pg.scalar("SELECT count(*) FROM pg_index WHERE indrelid = 'events'::regclass",
                           dsn=self.dsn)
        if n != "0":
            raise HarnessError("events still has %s indexes after dropping its keys" % n)
        self.start_qload()

    # ------------------------------------------------------------ the faults
    def chaos(self):
        kills = self.kills_planned
        plan = (["kill pickline"] * (kills - kills // 2) + ["kill qload"] * (kills // 2)
                + ["restart warehouse"] * self.restarts_planned
                + ["crash warehouse"] * self.crashes_planned)
        self.rnd.shuffle(plan)
        # Let the line fill before the first fault.
        time.sleep(0.3 * SLOW)
        for action in plan:
            time.sleep(self.rnd.uniform(0.02, 0.6) * (1 if SLOW == 1.0 else 2))
            self.check_self_exits()
            down = self.rnd.uniform(0.0, 0.3)
            if action == "kill pickline":
                self.pickline.kill()
                time.sleep(down)
                self.start_pickline()
            elif action == "kill qload":
                self.qload.kill()
                time.sleep(down)
                # now and then the next one kills itself at a seam of its
                # first batch: between COPY, the ledger row and the commit
                seam = self.rnd.choice(SEAMS) if self.rnd.random() < 0.3 else None
                self.start_qload(seam)
            elif action == "restart warehouse":
                self.pg.stop()
                self.pg.start()
            elif action == "crash warehouse":
                self.pg.crash()
                time.sleep(down)
                self.pg.start()
            self.faults[action] += 1
        self.check_self_exits()

    # ------------------------------------------------------------ drain
    def drained(self):
        s = self.stats()
        for q in QUEUES:
            st = s.get(q) or {}
            if any(st.get(k, 0) for k in ("ready", "delayed", "reserved")):
                return False
        for b in self.batches():
            if b["state"] in ("sealed", "loading") or (b["state"] == "open" and b["rows"]):
                return False
        return True

    def drain(self):
        t0 = time.monotonic()
        if not self.pg.running:
            self.pg.start()
        if not self.pickline.running():
            self.start_pickline()
        if not self.qload.running():
            self.start_qload()
        timeout = 120 * SLOW
        end = time.monotonic() + timeout
        self.clients.finish()
        while not self.clients.done():
            self.check_self_exits()
            if time.monotonic() > end:
                self.clients.kill()
                raise AssertionError("the clients did not get their answers within %.0f s of the "
                                     "last fault\n%s\n%s" % (timeout, self.summary(),
                                                              self.pickline.tail()))
            time.sleep(0.1)
        while True:
            self.check_self_exits()
            if self.drained():
                break
            if time.monotonic() > end:
                raise AssertionError("not drained %.0f s after the last fault: stats %s; batches not "
                                     "loaded: %s\n%s\n%s\n%s" % (
                                         timeout, json.dumps(self.stats()),
                                         [b for b in self.batches() if b["state"] != "loaded"][:10],
                                         self.summary(), self.pickline.tail(), self.qload.tail()))
            time.sleep(0.2)
        self.drain_s = time.monotonic() - t0
        rc = self.qload.terminate(60 * SLOW)
        if rc != 0:
            self.problems.append("qload --follow did not exit 0 on SIGTERM (%s)\n%s"
                                 % (describe_exit(rc), self.qload.tail(15)))
        rc = self.pickline.terminate(60 * SLOW)
        if rc != 0:
            self.problems.append("pickline did not exit 0 on SIGTERM (%s)\n%s"
                                 % (describe_exit(rc), self.pickline.tail(15)))

    # ------------------------------------------------------------ checks
    def check(self):
        c = self.clients
        if c.errors:
            raise HarnessError("a client thread broke:\n" + "\n".join(c.errors))
        rows = self.pg.query_json("SELECT k, n, payload FROM events", dsn=self.dsn)
        by_key = collections.defaultdict(list)
        for r in rows:
            by_key[r["k"]].append(r)
        acked = set(c.acked)
        unacked = set(c.sent) - acked
        self.n_rows = len(rows)
        self.lost = sorted(k for k in acked if k not in by_key)
        self.dup = {k: len(v) for k, v in by_key.items() if len(v) > 1}
        self.dup_acked = {k: n for k, n in self.dup.items() if k in acked}
        self.foreign = sorted(k for k in by_key if k not in c.sent)
        self.unacked_present = sorted(k for k in unacked if k in by_key)
        self.unacked_absent = sorted(k for k in unacked if k not in by_key)
        wrong = []
        for k, rs in by_key.items():
            if k in c.sent:
                n, p = c.sent[k]
                for r in rs:
                    if r["n"] != n or r["payload"] != p:
                        wrong.append((k, r, {"n": n, "payload": p}))
        if self.lost:
            self.problems.append("LOST: %d acknowledged keys are not in the warehouse (of %d acked), "
                                 "e.g. %s" % (len(self.lost), len(acked), self.lost[:12]))
        s = self.stats()
        self.puts = (s.get("incoming") or {}).get("puts")
        if self.dup:
            # Where the second row came from: a second job for one key (the
            # listener), or one job loaded twice (the batch or qload).
            known = len(acked | set(self.unacked_present))
            hint = ""
            if isinstance(self.puts, int) and self.puts > known:
                hint = ("; the listener created %d jobs on 'incoming' for %d keys: %d retries with "
                        "an Idempotency-Key made a second job" % (self.puts, known, self.puts - known))
            self.problems.append("DUPLICATED: %d keys are in the warehouse more than once (%d extra "
                                 "rows; %d of those keys were acknowledged), e.g. %s%s"
                                 % (len(self.dup), sum(n - 1 for n in self.dup.values()),
                                    len(self.dup_acked), sorted(self.dup.items())[:12], hint))
        if self.foreign:
            self.problems.append("%d rows have a key no client sent: %s" % (len(self.foreign), self.foreign[:12]))
        if wrong:
            self.problems.append("%d rows differ from what was sent, e.g. %s" % (len(wrong), wrong[:5]))
        if c.refused:
            self.problems.append("%d records were refused with a 4xx: %s"
                                 % (len(c.refused), sorted(c.refused.items())[:5]))

        # the queues: nothing left, nothing buried
        for q in sorted(s):
            st = s[q]
            left = {k: st.get(k, 0) for k in ("ready", "delayed", "reserved", "buried") if st.get(k, 0)}
            if left:
                why = ""
                if st.get("buried"):
                    try:
                        jobs = self.qctl_json("peek", q, "--state", "buried", "--limit", "5") or []
                        why = "; buried because: %s" % [j.get("error") for j in jobs]
                    except HarnessError as e:
                        why = "; (peek failed: %s)" % e
                self.problems.append("queue '%s' still holds %s after the drain%s" % (q, left, why))

        # the batches, and the ledger
        bs = self.batches()
        self.batch_states = collections.Counter(b["state"] for b in bs)
        for b in bs:
            if b["state"] in ("failed", "held"):
                self.problems.append("batch %d is %s: %s" % (b["id"], b["state"], b.get("error")))
        ledger = self.pg.query_json("SELECT batch, rows FROM pickline_ledger", dsn=self.dsn)
        in_ledger = collections.Counter(int(x["batch"]) for x in ledger)
        loaded = [b for b in bs if b["state"] == "loaded"]
        missing = [b for b in loaded if b["id"] not in in_ledger]
        self.ledger_missing = missing
        if missing:
            self.problems.append("%d batches are loaded in the store but absent from the warehouse's "
                                 "ledger (%d rows, dropped from the store): %s"
                                 % (len(missing), sum(b["rows"] for b in missing),
                                    [b["id"] for b in missing][:20]))
        twice = [b for b, n in in_ledger.items() if n > 1]
        if twice:
            self.problems.append("batches in the ledger more than once: %s" % twice[:20])
        ledger_rows = sum(int(x["rows"]) for x in ledger)
        if ledger_rows != len(rows):
            self.problems.append("the ledger counts %d rows, the table holds %d" % (ledger_rows, len(rows)))

        # staged rows left in the store (issue 9, item 7)
        self.staged_left = self.stage_entries()
        if self.staged_left:
            self.problems.append("STAGED ROWS LEFT: %d entries in the store's staging (mdb_stat -s "
                                 "stage) after every batch loaded, for %d keys sent; wanted 0 (no "
                                 "batch row, no reject, no staged row in flight)"
                                 % (self.staged_left, len(c.sent)))

        # the run did what it says, or it proves little
        kills = self.pickline.kills + self.qload.kills
        if kills < self.kills_planned:
            raise HarnessError("only %d kills done of %d planned" % (kills, self.kills_planned))
        if len(acked) < 100 or not loaded:
            raise HarnessError("too little went through to judge: %d records acked, %d batches loaded"
                               % (len(acked), len(loaded)))

    def stage_entries(self):
        tool = shutil.which("mdb_stat")
        if not tool:
            raise HarnessError("mdb_stat not found: install lmdb-utils (scripts/install-deps.sh does)")
        r = plhelp.run([tool, "-s", "stage", self.data])
        if r.code != 0:
            raise HarnessError("mdb_stat -s stage %s failed: %r" % (self.data, r))
        for line in r.out.splitlines():
            if line.strip().startswith("Entries:"):
                return int(line.split(":")[1])
        raise HarnessError("no Entries line in mdb_stat's output: %r" % r)

    # ------------------------------------------------------------ report
    def summary(self):
        c = self.clients or Clients(self, 0, 0)
        with c.lock:
            sent, acked = len(c.sent), len(c.acked)
            existed = sum(1 for a in c.acked.values() if a["existed"])
            retried = sum(1 for a in c.acked.values() if a["attempts"] > 1)
            abandoned = len(c.abandoned)
            outcomes = dict(c.outcomes)
            ambiguous = c.ambiguous
        out = ["torture [%s] seed %d: %d kills (%d pickline, %d qload), %d qload self-kills at a "
               "seam %s, %d warehouse restarts, %d warehouse crashes, pickline/qload exits by "
               "themselves %d/%d; %.1f s"
               % (self.label, self.seed, self.pickline.kills + self.qload.kills, self.pickline.kills,
                  self.qload.kills, sum(self.seam_kills.values()), dict(self.seam_kills),
                  self.faults["restart warehouse"], self.faults["crash warehouse"],
                  self.self_exits["pickline"], self.self_exits["qload"], self.elapsed())
               + ("" if not hasattr(self, "drain_s") else
                  " (faults %.1f s, drain %.1f s)" % (self.chaos_s, self.drain_s)),
               "  records: %d sent, %d acked (%d after a retry, %d answered existed:true), %d abandoned "
               "by impatient clients; %d attempts got no answer after reaching pickline; answers %s"
               % (sent, acked, retried, existed, abandoned, ambiguous, outcomes)]
        if hasattr(self, "lost"):
            out.append("  warehouse: %d rows; acked keys lost %d, duplicated keys %d (%d acked, %d extra "
                       "rows), foreign %d; sent-never-acked keys present %d, absent %d"
                       % (self.n_rows, len(self.lost), len(self.dup), len(self.dup_acked),
                          sum(n - 1 for n in self.dup.values()), len(self.foreign),
                          len(self.unacked_present), len(self.unacked_absent)))
            out.append("  store: jobs created on 'incoming' %s for %d keys sent; batches %s; loaded "
                       "batches missing from the ledger %d; staged entries left %d"
                       % (self.puts, sent, dict(self.batch_states), len(self.ledger_missing),
                          self.staged_left))
        return "\n".join(out)

    # ------------------------------------------------------------ all of it
    def go(self):
        self.setup()
        self.clients = Clients(self, threads=4, seed=self.seed)
        self.clients.start()
        t = time.monotonic()
        self.chaos()
        self.chaos_s = time.monotonic() - t
        self.drain()
        self.check()
        text = self.summary()
        sys.stderr.write(text + "\n")
        if self.problems:
            raise AssertionError("%s\n\n%d problems:\n- %s" % (text, len(self.problems),
                                                              "\n- ".join(self.problems)))


class TortureTest(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        for b in ("pickline", "qctl", "qload"):
            plhelp.binary(b)  # fails (not skips) when one is not built

    def test_torture_warehouse_synchronous_commit_on(self):
        Run(self, "synchronous_commit=on", {"synchronous_commit": "on"}).go()

    def test_torture_warehouse_synchronous_commit_off(self):
        Run(self, "synchronous_commit=off", {"synchronous_commit": "off"}).go()


if __name__ == "__main__":
    unittest.main()
