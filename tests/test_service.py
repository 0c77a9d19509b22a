"""Running pickline as a service: --version of every program, the
service manager's notifications (sd_notify: READY, WATCHDOG, STOPPING) to a
fake $NOTIFY_SOCKET, the man pages (groff -ww), and `scons install` with the
systemd unit checked by systemd-analyze verify."""
import os
import re
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import EngineTestCase
from plhelp import BUILD, ROOT, SLOW, TempDirTest, binary, run, wait_for

PROGRAMS = ("pickline", "qctl", "qload")


def sconstruct_version():
    """VERSION of SConstruct: the one home of the version."""
    with open(os.path.join(ROOT, "SConstruct")) as f:
        m = re.search(r"^VERSION = '([^']+)'$", f.read(), re.M)
    assert m, "SConstruct has no VERSION = '...' line"
    return m.group(1)


class VersionTest(unittest.TestCase):
    def test_version_of_every_program(self):
        want = sconstruct_version()
        checkout = os.path.exists(os.path.join(ROOT, ".git"))
        seen = set()
        for prog in PROGRAMS:
            r = run([binary(prog), "--version"])
            self.assertEqual(r.code, 0, r)
            self.assertEqual(r.err, "", r)
            m = re.fullmatch(r"(\S+) (\S+)(?: \(git (\S+)\))?\n", r.out)
            self.assertTrue(m, "%s --version printed %r" % (prog, r.out))
            self.assertEqual(m.group(1), prog)
            self.assertEqual(m.group(2), want, "%s's version is not SConstruct's" % prog)
            if checkout:
                self.assertTrue(m.group(3), "built from a checkout, %s --version names no git "
                                "describe: %r" % (prog, r.out))
            seen.add(r.out.split(" ", 1)[1])
        self.assertEqual(len(seen), 1, "the programs disagree: %s" % seen)

    def test_version_is_in_the_help(self):
        for prog in PROGRAMS:
            r = run([binary(prog), "--help"])
            self.assertEqual(r.code, 0, r)
            self.assertIn("--version", r.out, "%s --help does not mention --version" % prog)


class NotifySocket:
    """A fake service manager: a unix datagram socket that records what
    the engine tells it (sd_notify's messages, one per datagram)."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.msgs = []

    def wait(self, what, timeout=15.0):
        """Reads messages until one holds the line what (returned: its
        lines); AssertionError with what came on a timeout."""
        deadline = time.monotonic() + timeout * SLOW
        for m in self.msgs:
            if what in m:
                return m
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                break
            m = data.decode().split("\n")
            self.msgs.append(m)
            if what in m:
                return m
        raise AssertionError("no %s on $NOTIFY_SOCKET within %.0fs; got %d messages, the last: %s"
                             % (what, timeout * SLOW, len(self.msgs), self.msgs[-5:]))

    def drain(self):
        """Reads what is waiting, without blocking."""
        self.sock.setblocking(False)
        try:
            while True:
                self.msgs.append(self.sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def index(self, what):
        return next((i for i, m in enumerate(self.msgs) if what in m), None)

    def close(self):
        self.sock.close()


PIPE = """listen:
  address: 127.0.0.1
  port: ${port}
drain: 2
queues:
  a:
  b:
stages:
  - {name: pass, kind: noop, input: a, output: b}
"""


class NotifyTest(EngineTestCase):
    def notify_socket(self):
        ns = NotifySocket(os.path.join(self.dir, "notify.sock"))
        self.addCleanup(ns.close)
        return ns

    def test_ready_watchdog_stopping(self):
        ns = self.notify_socket()
        eng = self.engine(PIPE)
        eng.start(wait=False, env={"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "200000"})
        ready = ns.wait("READY=1")
        # READY means open and listening: the listener answers at once.
        r = eng.request("GET", "/health")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(any(l.startswith("STATUS=running 1 stages") for l in ready), ready)
        # The loop pings the watchdog (every 0.1 s for WatchdogSec=0.2s).
        r = eng.put("a", '{"n": 1}')
        self.assertEqual(r.status, 202, r)
        self.wait(lambda: eng.stats()["b"]["ready"] == 1, 15, "the job to pass", eng)
        self.wait(lambda: ns.drain() or sum("WATCHDOG=1" in m for m in ns.msgs) >= 3, 15,
                  "three WATCHDOG=1 pings", eng)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())
        ns.wait("STOPPING=1")
        ns.drain()
        i_ready, i_stop = ns.index("READY=1"), ns.index("STOPPING=1")
        self.assertLess(i_ready, i_stop, ns.msgs)
        self.assertEqual(sum("READY=1" in m for m in ns.msgs), 1, ns.msgs)
        # Nothing but the watchdog between READY and STOPPING.
        between = [m for m in ns.msgs[i_ready + 1:i_stop] if "WATCHDOG=1" not in m]
        self.assertEqual(between, [], ns.msgs)

    def test_no_watchdog_unless_asked(self):
        ns = self.notify_socket()
        eng = self.engine(PIPE)
        eng.start(wait=False, env={"NOTIFY_SOCKET": ns.path})
        ns.wait("READY=1")
        r = eng.put("a", '{"n": 1}')
        self.assertEqual(r.status, 202, r)
        self.wait(lambda: eng.stats()["b"]["ready"] == 1, 15, "the job to pass", eng)
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())
        ns.wait("STOPPING=1")
        ns.drain()
        self.assertFalse([m for m in ns.msgs if "WATCHDOG=1" in m], ns.msgs)

    def test_without_notify_socket_nothing_is_sent(self):
        """No $NOTIFY_SOCKET (started by hand): the engine runs and logs no
        complaint about the service manager."""
        eng = self.engine(PIPE)
        env = {"WATCHDOG_USEC": "200000"}
        saved = os.environ.pop("NOTIFY_SOCKET", None)
        try:
            eng.start(env=env)
        finally:
            if saved is not None:
                os.environ["NOTIFY_SOCKET"] = saved
        rc, _ = eng.terminate()
        self.assertEqual(rc, 0, eng.stderr_tail())
        self.assertNotIn("service manager", eng.stderr())


if __name__ == "__main__":
    unittest.main()
