"""pyrun: run the python end-to-end tests (tests/test_*.py) and print one
PASS/FAIL line per test, like the C test programs, for tests/run.

The modules run in PICKLINE_TEST_JOBS worker processes at once (default 2,
the machine's cores; 1 runs them one after another), the longest first, each
module in a process of its own. Every test starts its own servers on ports
the kernel picks and works in a directory of its own, so modules do not
share anything but the CPU, except the modules in ALONE, which run after
the others, one at a time (test_service runs `scons install` on the build
under test). A module's lines are printed when it ends, in one piece; its
unittest report goes to stderr.

  python3 tests/pyrun.py              all modules
  python3 tests/pyrun.py --one MOD    one module in this process (a worker)"""
import glob
import os
import subprocess
import sys
import threading
import unittest

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)

# The modules that take longest (seconds under ASan, measured), started
# first so that the workers end together; the rest follow by name.
LONGEST = ["test_torture", "test_realtime", "test_qctl", "test_engine", "test_staged_rows",
           "test_signals", "test_bulk", "test_pgsource", "test_http_poll", "test_deletes",
           "test_qload_faults", "test_validate", "test_qload", "test_listener", "test_observe"]


# Modules that touch what the others use (the build directory).
ALONE = ["test_service"]


class LineResult(unittest.TextTestResult):
    def addSuccess(self, test):
        super().addSuccess(test)
        print("PASS py." + test.id().split(".", 1)[-1], flush=True)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        print("FAIL py." + test.id().split(".", 1)[-1], flush=True)

    def addError(self, test, err):
        super().addError(test, err)
        print("FAIL py." + test.id().split(".", 1)[-1], flush=True)


def run_one(module):
    suite = unittest.defaultTestLoader.loadTestsFromName(module)
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=1, resultclass=LineResult)
    res = runner.run(suite)
    return 0 if res.wasSuccessful() and res.testsRun > 0 else 1


def modules():
    found = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(here, "test_*.py")))
    first = [m for m in LONGEST if m in found]
    return first + [m for m in found if m not in first]


def run_all(jobs):
    every = modules()
    todo = [m for m in every if m not in ALONE]
    lock = threading.Lock()
    failed = []

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                m = todo.pop(0)
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", m],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            with lock:
                sys.stdout.write(p.stdout)
                sys.stdout.flush()
                sys.stderr.write("== %s (exit %d)\n%s" % (m, p.returncode, p.stderr))
                sys.stderr.flush()
                if p.returncode != 0:
                    failed.append(m)
                    if "FAIL " not in p.stdout and "PASS " not in p.stdout:
                        print("FAIL py.%s (exit %d, no test ran)" % (m, p.returncode), flush=True)

    threads = [threading.Thread(target=worker) for _ in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    todo = [m for m in every if m in ALONE]
    worker()
    return 1 if failed else 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        return run_one(sys.argv[2])
    try:
        jobs = max(1, int(os.environ.get("PICKLINE_TEST_JOBS", "2")))
    except ValueError:
        sys.stderr.write("pyrun: PICKLINE_TEST_JOBS must be a number\n")
        return 2
    return run_all(jobs)


if __name__ == "__main__":
    sys.exit(main())
