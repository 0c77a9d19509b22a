"""plhelp: shared helpers for pickline's python end-to-end tests.

Binaries are found in $PICKLINE_BUILD (default build/release), relative to the
repository root unless absolute. Standard library only.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("PICKLINE_BUILD") or "build/release"
if not os.path.isabs(BUILD):
    BUILD = os.path.join(ROOT, BUILD)

# Sanitizer builds are several times slower: scale every timeout.
SLOW = 4.0 if "asan" in os.path.basename(os.path.normpath(BUILD)) else 1.0
DEFAULT_TIMEOUT = 30.0


def binary(name):
    """Path of a built program; raises (the test fails) when it is missing."""
    p = os.path.join(BUILD, name)
    if not os.access(p, os.X_OK):
        raise FileNotFoundError("%s is not built (PICKLINE_BUILD=%s); run scons" % (p, BUILD))
    return p


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


class DataDirTest(unittest.TestCase):
    """A test case with a fresh temporary directory (self.tmp), removed when
    the test ends, and a data directory path inside it (self.data, not
    created)."""

    def setUp(self):
        self.tmp = make_tempdir()
        # a cleanup, not tearDown: it runs even when a later setUp step fails
        self.addCleanup(remove_tree, self.tmp)
        self.data = os.path.join(self.tmp, "data")
