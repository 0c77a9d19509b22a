"""Running pickline as a service: --version of every program, the
service manager's notifications (sd_notify: READY, WATCHDOG, STOPPING) to a
fake $NOTIFY_SOCKET, and `scons install` into a temporary prefix: the
layout, the systemd unit (systemd-analyze verify and security), the
sysusers.d file, the man pages (groff -ww, and that they cover every command,
flag and pipeline key the programs know) and the installed examples."""
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import EngineTestCase
from plhelp import BUILD, ROOT, SLOW, TempDirTest, binary, make_tempdir, remove_tree, run, wait_for

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


# ---------------------------------------------------------------- install

def scons_install(prefix, destdir=""):
    """`scons install PREFIX=prefix DESTDIR=destdir` for the build under
    test (its builddir and variant); returns the Result."""
    rel = os.path.relpath(BUILD, ROOT)
    builddir, variant = os.path.dirname(rel) or ".", os.path.basename(rel)
    argv = ["scons", "-Q", "variant=" + variant, "builddir=" + builddir, "install",
            "PREFIX=" + prefix]
    if destdir:
        argv.append("DESTDIR=" + destdir)
    return run(argv, cwd=ROOT, timeout=600)


def known_keys(text):
    """The keys pickline check lists for an unknown key in text: "unknown
    key 'zzzz'; X takes a, b, c" -> [a, b, c]."""
    d = make_tempdir()
    try:
        path = os.path.join(d, "k.yml")
        with open(path, "w") as f:
            f.write(text)
        r = run([binary("pickline"), "check", path])
    finally:
        remove_tree(d)
    m = re.search(r"takes (.*)$", r.err.strip())
    assert r.code == 1 and m, "pickline check did not list the keys: %r" % r
    return [k.strip() for k in m.group(1).split(",")]


class InstallTest(unittest.TestCase):
    """One `scons install` into a temporary prefix for the class."""

    @classmethod
    def setUpClass(cls):
        cls.dir = make_tempdir("pickline-install-")
        cls.prefix = os.path.join(cls.dir, "usr")
        cls.r = scons_install(cls.prefix)
        if cls.r.code != 0:
            remove_tree(cls.dir)
            raise AssertionError("scons install failed: %r" % cls.r)
        cls.unit = os.path.join(cls.prefix, "lib/systemd/system/pickline@.service")
        cls.man = os.path.join(cls.prefix, "share/man")

    @classmethod
    def tearDownClass(cls):
        remove_tree(cls.dir)

    def path(self, rel):
        return os.path.join(self.prefix, rel)

    def test_layout(self):
        for rel in ("bin/pickline", "bin/qctl", "bin/qload",
                    "share/man/man1/pickline.1", "share/man/man1/qctl.1", "share/man/man1/qload.1",
                    "share/man/man5/pickline.yml.5", "lib/systemd/system/pickline@.service",
                    "lib/sysusers.d/pickline.conf",
                    "share/bash-completion/completions/pickline",
                    "share/bash-completion/completions/qctl",
                    "share/bash-completion/completions/qload",
                    "share/doc/pickline/examples/service.yml",
                    "share/doc/pickline/examples/reference.yml",
                    "share/doc/pickline/examples/realtime/pipeline.yml",
                    "share/doc/pickline/examples/edge-copy/pipeline.yml"):
            self.assertTrue(os.path.isfile(self.path(rel)), "%s is not installed" % rel)
        for prog in PROGRAMS:
            r = run([self.path("bin/" + prog), "--version"])
            self.assertEqual(r.code, 0, r)
            self.assertTrue(r.out.startswith(prog + " " + sconstruct_version()), r)

    def test_unit_verifies(self):
        """systemd-analyze verify: the unit parses, every setting is known
        and valid, ExecStart= is an executable, and man finds the pages of
        Documentation= (MANPATH: the installed ones). It prints nothing when
        all is well (warnings alone do not change its exit status)."""
        r = run(["systemd-analyze", "verify", self.unit],
                env=dict(os.environ, MANPATH=self.man, SYSTEMD_LOG_COLOR="0"))
        self.assertEqual((r.code, r.out + r.err), (0, ""), r)
        # and it does find faults: a unit with one wrong setting
        bad = os.path.join(self.dir, "pickline-bad@.service")
        with open(self.unit) as f, open(bad, "w") as g:
            g.write(f.read().replace("ProtectSystem=strict", "ProtectSystem=very"))
        r = run(["systemd-analyze", "verify", bad], env=dict(os.environ, MANPATH=self.man))
        self.assertRegex(r.err, r"pickline-bad@\.service:\d+: .*: very", r)

    def test_unit_is_hardened(self):
        """systemd-analyze security rates the unit's exposure at most 2.5
        ("OK"; 10 is a service with no protection at all)."""
        r = run(["systemd-analyze", "security", "--offline=yes", "--threshold=25", self.unit],
                env=dict(os.environ, SYSTEMD_LOG_COLOR="0"))
        self.assertEqual(r.code, 0, r)
        self.assertRegex(r.out + r.err, r"Overall exposure level for pickline@\S*\.service: [0-2]\.")

    def test_unit_settings(self):
        with open(self.unit) as f:
            unit = f.read()
        settings = dict(l.split("=", 1) for l in unit.splitlines() if "=" in l and not l.startswith("#"))
        self.assertEqual(settings["Type"], "notify")
        self.assertEqual(settings["User"], "pickline")
        self.assertEqual(settings["ProtectSystem"], "strict")
        self.assertEqual(settings["StateDirectory"], "pickline/%i")
        self.assertIn("WatchdogSec", settings)
        self.assertEqual(settings["ExecStart"], "%s/bin/pickline run /etc/pickline/%%i.yml "
                         "--data /var/lib/pickline/%%i" % self.prefix)

    def test_sysusers(self):
        r = run(["systemd-sysusers", "--dry-run", self.path("lib/sysusers.d/pickline.conf")])
        self.assertEqual(r.code, 0, r)
        self.assertIn("Creating user 'pickline'", r.out + r.err)

    def test_man_pages_format_cleanly(self):
        """groff -ww (every warning) prints nothing for each page; each says
        the version."""
        pages = [os.path.join(self.man, d, n) for d in ("man1", "man5")
                 for n in sorted(os.listdir(os.path.join(self.man, d)))]
        self.assertEqual(len(pages), 4, pages)
        for p in pages:
            r = run(["groff", "-ww", "-z", "-man", p])
            self.assertEqual((r.code, r.out + r.err), (0, ""), "%s: %r" % (p, r))
            with open(p) as f:
                th = next(l for l in f if l.startswith(".TH "))
            self.assertIn('"pickline %s"' % sconstruct_version(), th)

    def man_text(self, name):
        """The page as man renders it (plain text, no hyphenation breaks)."""
        sec = name.rsplit(".", 1)[1]
        r = run(["groff", "-man", "-Tutf8", "-P-cbou", "-rHY=0", "-rLL=300n",
                 os.path.join(self.man, "man" + sec, name)])
        self.assertEqual(r.code, 0, r)
        return r.out

    def test_man_pages_cover_what_the_programs_know(self):
        qctl_cmds = re.findall(r"^  (\S+) ", run([binary("qctl"), "--help"]).out.split("commands:")[1]
                               .split("\n\n")[0], re.M)
        self.assertGreater(len(qctl_cmds), 20)
        # the entries of qctl(1): "       put QUEUE ...", "       pause QUEUE, resume QUEUE"
        heads = [l.strip() for l in self.man_text("qctl.1").splitlines() if re.match(r" {7}\S", l)]
        entries = {item.split()[0] for h in heads for item in h.split(", ")}
        for c in qctl_cmds:
            self.assertIn(c, entries, "qctl(1) has no entry for the command %s" % c)
        page = self.man_text("qload.1")
        for fl in set(re.findall(r"--[a-z-]+", run([binary("qload"), "--help"]).out)):
            self.assertIn(fl, page, "qload(1) lacks %s" % fl)
        page = self.man_text("pickline.1")
        for fl in set(re.findall(r"--[a-z-]+", run([binary("pickline"), "run", "--help"]).out)):
            self.assertIn(fl, page, "pickline(1) lacks %s" % fl)
        page = self.man_text("pickline.yml.5")
        keys = set(known_keys("zzzzzzzz: 1\n") + known_keys("listen:\n  zzzzzzzz: 1\n") +
                   known_keys("queues:\n  a: {zzzzzzzz: 1}\n") +
                   known_keys("models:\n  m:\n    zzzzzzzz: 1\n") +
                   known_keys("models:\n  m:\n    properties:\n      id: {type: serial, "
                              "zzzzzzzz: 1}\n"))
        for kind in ("http_poll", "http_extract", "http_enrich", "async_submit", "route", "noop",
                     "validate", "batch", "pg_notify", "pg_extract"):
            keys |= set(known_keys("queues:\n  a:\nstages:\n  - name: s\n    kind: %s\n"
                                   "    zzzzzzzz: 1\n" % kind))
            self.assertRegex(page, r"(?m)^ +%s\b" % kind, "pickline.yml(5) lacks kind %s" % kind)
        self.assertGreater(len(keys), 50)
        for k in sorted(keys):
            self.assertIn(k + ":", page, "pickline.yml(5) lacks the key %s:" % k)

    def test_every_kind_is_in_the_manual(self):
        """The kinds pickline knows (its "use one of" list) are the ones
        pickline.yml(5) describes."""
        d = make_tempdir()
        try:
            p = os.path.join(d, "k.yml")
            with open(p, "w") as f:
                f.write("queues:\n  a:\nstages:\n  - {name: s, kind: zzzzzzzzzz, input: a, output: a}\n")
            r = run([binary("pickline"), "check", p])
        finally:
            remove_tree(d)
        m = re.search(r"use one of (.*)$", r.err.strip())
        self.assertTrue(m, r)
        page = self.man_text("pickline.yml.5")
        for kind in m.group(1).split(", "):
            self.assertRegex(page, r"(?m)^ +%s\b" % re.escape(kind), "pickline.yml(5) lacks kind %s" % kind)

    def test_installed_examples_check(self):
        ex = self.path("share/doc/pickline/examples")
        d = make_tempdir()
        try:
            with open(os.path.join(d, "token"), "w") as f:
                f.write("0123456789abcdef0123456789abcdef\n")
            env = dict(os.environ, CREDENTIALS_DIRECTORY=d, ORDERS_API="https://orders.example.com/api",
                       ORDERS_API_TOKEN="t0k3n")
            for rel in ("service.yml", "reference.yml", "realtime/pipeline.yml", "edge-copy/pipeline.yml"):
                r = run([self.path("bin/pickline"), "check", os.path.join(ex, rel)],
                        env=dict(env, SOURCE_DSN="host=/tmp dbname=x"))
                self.assertEqual(r.code, 0, r)
            # service.yml takes its addresses and secrets from the environment
            r = run([self.path("bin/pickline"), "check", os.path.join(ex, "service.yml")],
                    env=dict(os.environ, CREDENTIALS_DIRECTORY=d, ORDERS_API_TOKEN="t"))
            self.assertEqual(r.code, 1, r)
            self.assertIn("${ORDERS_API} is not set", r.err)
        finally:
            remove_tree(d)

    def test_bash_completion_finds_the_scripts(self):
        """bash-completion's loader (as an interactive shell runs it on the
        first <TAB>) finds the installed scripts by XDG_DATA_DIRS."""
        loader = "/usr/share/bash-completion/bash_completion"
        self.assertTrue(os.path.isfile(loader), "bash-completion is not installed "
                        "(scripts/install-deps.sh installs it)")
        r = run(["bash", "--norc", "-c", 'source "$1"; for c in pickline qctl qload; do '
                 '__load_completion $c && complete -p $c; done', "bash", loader],
                env=dict(os.environ, XDG_DATA_DIRS=os.path.join(self.prefix, "share")))
        self.assertEqual(r.code, 0, r)
        self.assertEqual(r.out.splitlines(), ["complete -F _pickline pickline",
                                              "complete -F _qctl qctl", "complete -F _qload qload"])

    def test_destdir_stages_for_a_package(self):
        """DESTDIR stages the files; the unit names PREFIX's paths."""
        stage = os.path.join(self.dir, "stage")
        r = scons_install("/usr", destdir=stage)
        self.assertEqual(r.code, 0, r)
        with open(os.path.join(stage, "usr/lib/systemd/system/pickline@.service")) as f:
            self.assertIn("ExecStart=/usr/bin/pickline run ", f.read())
        self.assertTrue(os.path.isfile(os.path.join(stage, "usr/bin/qctl")))
        self.assertTrue(os.path.isfile(os.path.join(stage, "usr/share/man/man5/pickline.yml.5")))


if __name__ == "__main__":
    unittest.main()
