"""plhelp: the test kit of pickline's python end-to-end tests and of the
examples' run.py scripts, so that each idea has one home:

    ROOT, BUILD, binary(name)   the repository and the built programs
    SLOW                        how much slower this build runs (ASan: 4x);
                                every bounded wait here is scaled by it
    run(argv) -> Result         a program run to completion, with a timeout
    TempDirTest                 a test case with a temporary directory that
                                is kept (and named) when the test fails
    test_failed(test)           whether a test has failed so far
    wait_for(pred, ...)         a bounded poll
    free_port()                 a loopback TCP port nobody listens on
    http_request(...)           one HTTP request -> Response
    Fixture                     the base of the loopback HTTP services
                                (a ThreadingHTTPServer on its own thread)
    self_signed_cert(dir)       a certificate and key for TLS tests
    pipeline(name, **parts)     a pipeline file of tests/pipelines/
    listen_block(**kv)          the lines of a listen: section
    Procs, tail, RunError       programs a long run started, with their logs
    say, qctl_out, RunBase      a run's report line, qctl's answer, the frame
                                of an example's run.py

Binaries are found in $PICKLINE_BUILD (default build/release), relative to the
repository root unless absolute. PICKLINE_KEEP_TEST_DIRS=1 keeps every
test's temporary directory. Standard library only.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("PICKLINE_BUILD") or "build/release"
if not os.path.isabs(BUILD):
    BUILD = os.path.join(ROOT, BUILD)

# Sanitizer builds are several times slower: scale every timeout.
SLOW = 4.0 if "asan" in os.path.basename(os.path.normpath(BUILD)) else 1.0
DEFAULT_TIMEOUT = 30.0

PIPELINES = os.path.join(ROOT, "tests", "pipelines")


def binary(name):
    """Path of a built program; raises FileNotFoundError (a test fails, it
    does not skip) when it is missing."""
    p = os.path.join(BUILD, name)
    if not os.access(p, os.X_OK):
        raise FileNotFoundError("%s is not built; build it with `scons -Q variant=release` (or set "
                                "PICKLINE_BUILD to the build directory that has it)" % p)
    return p


# ---------------------------------------------------------------- running

class Result:
    """What a finished process did: argv, exit code, stdout and stderr (bytes
    in .out_b/.err_b, decoded text in .out/.err), and its wall time."""

    def __init__(self, argv, code, out_b, err_b, seconds):
        self.argv = argv
        self.code = code
        self.out_b = out_b
        self.err_b = err_b
        self.out = out_b.decode("utf-8", "replace")
        self.err = err_b.decode("utf-8", "replace")
        self.seconds = seconds

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return "<%s: exit %s, %.2fs\n--- stdout\n%s--- stderr\n%s>" % (
            " ".join(self.argv), self.code, self.seconds, self.out[:4000], self.err[:4000])


def run(argv, input=None, timeout=DEFAULT_TIMEOUT, env=None, cwd=None, preexec_fn=None):
    """Runs argv (list) to completion with a timeout (scaled for slow builds)
    and returns a Result. input is bytes or str for stdin (else /dev/null)."""
    if isinstance(input, str):
        input = input.encode("utf-8")
    t0 = time.monotonic()
    p = subprocess.run(argv, input=input if input is not None else b"",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout * SLOW, env=env, cwd=cwd, preexec_fn=preexec_fn)
    return Result([str(a) for a in argv], p.returncode, p.stdout, p.stderr,
                  time.monotonic() - t0)


# ---------------------------------------------------------------- directories

def make_tempdir(prefix="pickline-test-"):
    return tempfile.mkdtemp(prefix=prefix)


def remove_tree(path):
    if not path or not os.path.exists(path):
        return
    # Tests may make a tree read-only: make it writable again first.
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            try:
                os.chmod(os.path.join(dirpath, n), 0o700)
            except OSError:
                pass
    os.chmod(path, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def keep_dirs():
    """Whether PICKLINE_KEEP_TEST_DIRS asks to keep every test's directory."""
    return bool(os.environ.get("PICKLINE_KEEP_TEST_DIRS"))


def test_failed(test):
    """Whether test (a running unittest.TestCase) has failed so far. unittest
    has no public way for a test to know in its tearDown or cleanups: this
    reads its private _outcome, in this one place."""
    outcome = getattr(test, "_outcome", None)
    if outcome is None:
        return False
    if not getattr(outcome, "success", True):
        return True
    res = getattr(outcome, "result", None)
    errs = list(getattr(res, "errors", [])) + list(getattr(res, "failures", []))
    return any(t is test for t, _ in errs)


class TempDirTest(unittest.TestCase):
    """A test case with a fresh temporary directory, self.dir (also
    self.tmp), and a data directory path inside it, self.data (not created).
    When the test ends the directory is removed, unless the test failed (or
    PICKLINE_KEEP_TEST_DIRS is set): then it is kept, its path and
    failure_report() are written on stderr. Subclasses that start programs
    stop them in a cleanup registered after this setUp (cleanups run last
    first, so they are stopped before the directory goes)."""

    maxDiff = 4000
    tmp_prefix = "pickline-test-"

    def setUp(self):
        self.dir = self.tmp = make_tempdir(self.tmp_prefix)
        self.data = os.path.join(self.dir, "data")
        # a cleanup, not tearDown: it runs even when a later setUp step fails
        self.addCleanup(self._end_dir)

    def failure_report(self):
        """What to print when the test failed: the logs worth a look."""
        return ""

    def write(self, name, text):
        """Writes text to self.dir/name; returns the path."""
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def check_pipeline(self, text, name="pipeline.yml", env=None, timeout=30):
        """Writes text to self.dir/name and runs `pickline check` on it;
        returns (Result, path)."""
        path = self.write(name, text)
        return run([binary("pickline"), "check", path], env=env, timeout=timeout), path

    def _end_dir(self):
        if test_failed(self):
            report = self.failure_report()
            if report:
                sys.stderr.write("\n%s:\n%s\n" % (self.id(), report))
            sys.stderr.write("%s: kept %s\n" % (self.id(), self.dir))
        elif keep_dirs():
            sys.stderr.write("%s: kept %s\n" % (self.id(), self.dir))
        else:
            remove_tree(self.dir)


# ---------------------------------------------------------------- waiting

def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    """Polls pred() until it returns a true value (returned) or timeout
    (scaled by SLOW) passes: then raises AssertionError naming what and the
    last value pred returned."""
    deadline = time.monotonic() + timeout * SLOW
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)"
                                 % (timeout * SLOW, what, last))
        time.sleep(interval)


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------- HTTP client

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # dict, lower-case names
        self.body = body        # bytes

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<HTTP %s %s>" % (self.status, self.text[:300])


def http_request(method, url, body=None, headers=None, timeout=10.0):
    """One request; returns a Response for any status (never raises for 4xx
    or 5xx). body: bytes, str, or a JSON-able object (sent as JSON)."""
    u = urllib.parse.urlsplit(url)
    h = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode("utf-8")
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout * SLOW)
    try:
        path = u.path + ("?" + u.query if u.query else "")
        conn.request(method, path or "/", body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


# ---------------------------------------------------------------- HTTP services

class _Handler(BaseHTTPRequestHandler):
    # Headers and body leave in two writes: with Nagle on, the second waits
    # for the client's delayed ACK (40 ms) on every kept-alive answer.
    disable_nagle_algorithm = True
    fx = None  # the Fixture, set per subclass

    def log_message(self, fmt, *args):
        pass

    def _dispatch(self):
        u = urllib.parse.urlsplit(self.path)
        self.url_path = u.path
        self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(u.query, keep_blank_values=True).items()}
        n = int(self.headers.get("Content-Length") or 0)
        self.req_body = self.rfile.read(n) if n else b""
        with self.fx.lock:
            self.fx.requests += 1
        try:
            self.fx.handle(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass

    # helpers for Fixture.handle
    def reply(self, status, body=b"", ctype="application/json", headers=None):
        """Answers status with body (bytes, str, or a JSON-able object sent
        as JSON) and headers; a 304 carries no body."""
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body, ensure_ascii=False)
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        if status != 304:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body and status != 304 and self.command != "HEAD":
            self.wfile.write(body)

    def reset(self):
        """Closes the connection with a RST and without answering."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        self.connection.close()


class Fixture:
    """Base of a loopback HTTP service: a ThreadingHTTPServer on 127.0.0.1
    (port 0: any free one) serving self.handle(req) on a daemon thread.
    .url is "http://127.0.0.1:PORT"; .requests counts requests; .stopping is
    set by close() (use it for sleeps, see sleep). http_version is
    "HTTP/1.0" (one request per connection, so that a reset is a failure
    the client sees, not a stale kept-alive connection curl quietly
    retries) or "HTTP/1.1" (keep-alive, as a real service)."""

    http_version = "HTTP/1.0"

    def __init__(self, port=0, ssl_context=None):
        self.lock = threading.RLock()
        self.requests = 0
        self.stopping = threading.Event()
        handler = type(type(self).__name__ + "Handler", (_Handler,),
                       {"fx": self, "protocol_version": self.http_version})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        if ssl_context is not None:  # HTTPS: .url is https://...
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "%s://127.0.0.1:%d" % ("https" if ssl_context else "http", self.port)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name=type(self).__name__, daemon=True)
        self.thread.start()

    def handle(self, req):
        req.reply(404, {"error": "no such path"})

    def sleep(self, seconds):
        """Sleeps, unless the fixture is closed meanwhile; True if it was."""
        return self.stopping.wait(seconds)

    def close(self):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def self_signed_cert(d):
    """Writes a self-signed certificate for 127.0.0.1 and localhost and its
    key (EC P-256, openssl) into directory d; returns (cert, key) paths."""
    os.makedirs(d, exist_ok=True)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("openssl could not make a certificate: %s" % p.stderr)
    return cert, key


# ---------------------------------------------------------------- pipelines

def pipeline(name, **parts):
    """The text of tests/pipelines/NAME.yml with the ${NAME} of parts put in
    (blocks of lines, or values); the other ${...} stay for Engine to fill
    (${port}, ${token}, the fixtures' URLs)."""
    with open(os.path.join(PIPELINES, name + ".yml")) as f:
        text = f.read()
    return string.Template(text).safe_substitute({k: str(v) for k, v in parts.items()})


def listen_block(**kv):
    """The lines of a listen: section (two-space indented) from kv, in order,
    for a pipeline's listen part."""
    return "\n".join("  %s: %s" % (k, v) for k, v in kv.items())


# ---------------------------------------------------------------- long runs

class RunError(Exception):
    """A long run failed; the message says what and where to look."""


def tail(path, n=20):
    """The last n lines of the file at path, indented, for a message."""
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "    (no %s)" % path
    return "\n".join("    " + line for line in lines[-n:])


class Procs:
    """The programs a run started in its work directory, each with its
    stdout and stderr in WORK/NAME.log."""

    def __init__(self, work):
        self.work = work
        self.procs = {}  # name -> (Popen, log path)

    def start(self, name, argv, env=None):
        log = os.path.join(self.work, name + ".log")
        with open(log, "ab") as f:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                 cwd=self.work, env=env)
        self.procs[name] = (p, log)
        return p

    def log(self, name):
        return self.procs[name][1]

    def check_alive(self):
        """Raises RunError when a program exited by itself."""
        for name, (p, log) in self.procs.items():
            if p.poll() is not None:
                raise RunError("%s exited with status %s while the run was going on; its log "
                               "(%s) ends:\n%s" % (name, p.returncode, log, tail(log)))

    def stop(self, names, timeout=30.0):
        """SIGTERM to each of names in turn (qload finishes its batch, the
        engine drains), which must exit 0 within timeout (scaled); returns
        the problems seen, each a sentence. They are forgotten."""
        problems = []
        for name in names:
            if name not in self.procs:
                continue
            p, log = self.procs.pop(name)
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout * SLOW)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    problems.append("%s did not exit within %d s of SIGTERM; killed it (log %s)"
                                    % (name, timeout * SLOW, log))
                    continue
            if p.returncode != 0:
                problems.append("%s exited with status %d (expected 0); its log (%s) ends:\n%s"
                                % (name, p.returncode, log, tail(log)))
        return problems


def say(*a):
    """Prints a line of a run's report at once (flushed)."""
    print(*a, flush=True)


def qctl_out(data, *args):
    """qctl --data DATA ARGS for a run: its stdout; RunError when it fails."""
    p = subprocess.run([binary("qctl"), "--data", data] + [str(a) for a in args],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60 * SLOW)
    if p.returncode != 0:
        raise RunError("qctl %s failed (exit %d): %s" % (" ".join(map(str, args)), p.returncode,
                                                        p.stderr.strip()))
    return p.stdout


class RunBase:
    """The frame of an example's run.py: the built programs (self.bins;
    RunError when one is missing), how slow the build is (self.slow), a work
    directory (self.work) holding the data directory (self.data) and the
    logs of the programs started there (self.procs)."""

    def __init__(self, prefix, data="data"):
        self.build = BUILD
        self.slow = SLOW  # sanitizer builds run several times slower: waits are scaled
        try:
            self.bins = {b: binary(b) for b in ("pickline", "qctl", "qload")}
        except FileNotFoundError as e:
            raise RunError(str(e)) from None
        self.work = tempfile.mkdtemp(prefix=prefix)
        self.data = os.path.join(self.work, data)
        self.procs = Procs(self.work)

    def qctl(self, *args):
        """qctl on the run's data directory: its stdout (RunError if it fails)."""
        return qctl_out(self.data, *args)
