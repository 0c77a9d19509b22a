"""test_realtime: the reference pipeline end to end (examples/realtime/run.py)
with a small number of records: a real PostgreSQL, the loopback services,
`pickline run` and `qload --follow`. run.py itself checks every landed value
against what was fed; this test checks that it says so, and that the
counts it prints are the dataset's (fixtures.make_dataset), so a run.py
that printed OK without looking would fail here."""
import importlib.util
import os
import re
import subprocess
import sys
import unittest

import plhelp

EXAMPLE = os.path.join(plhelp.ROOT, "examples", "realtime")

# examples/realtime/fixtures.py under its own name (no sys.path change that
# could shadow the other test files' modules).
_spec = importlib.util.spec_from_file_location("realtime_fixtures", os.path.join(EXAMPLE, "fixtures.py"))
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)

# Sanitizer builds run several times slower: fewer records there.
RECORDS = 200 if plhelp.SLOW == 1.0 else 120


class RealtimeTest(unittest.TestCase):
    def run_example(self, records, timeout):
        return self.run_example_args(["--records", str(records)], timeout)

    def run_example_args(self, args, timeout):
        env = dict(os.environ, PICKLINE_BUILD=plhelp.BUILD)
        p = subprocess.run([sys.executable, os.path.join(EXAMPLE, "run.py"), "--timeout", str(timeout),
                            "--progress", "5"] + args,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=env, timeout=timeout + 120)
        return p.returncode, p.stdout.decode("utf-8", "replace")

    def test_end_to_end(self):
        for b in ("pickline", "qctl", "qload"):
            plhelp.binary(b)  # fails (not skips) when one is not built
        d = fixtures.make_dataset(RECORDS)
        code, out = self.run_example(RECORDS, 60 * plhelp.SLOW)
        self.assertEqual(code, 0, "run.py failed:\n" + out)
        self.assertIn("OK: every valid record landed", out)

        def row(table):
            m = re.search(r"^\s+%s\s+(\d+)\s+(\d+)\s*$" % table, out, re.M)
            self.assertIsNotNone(m, "no %s line in:\n%s" % (table, out))
            return int(m.group(1)), int(m.group(2))

        self.assertEqual(row("users"), (len(d.valid_users), len(d.valid_users)), out)
        self.assertEqual(row("tenants"), (len(d.tenants), len(d.tenants)), out)
        self.assertIn("users geocoded (C.1): %d with lat/lon" % len(d.geocoded), out)
        self.assertIn("users matched (C.2): %d with the person_id" % len(d.valid_users), out)
        self.assertIn("== rejects: %d, by reason" % len(d.invalid), out)
        # one group per kind of breakage, with its count and the model's message
        want = {}
        for field, rule, _ in d.invalid.values():
            want[(field, rule)] = want.get((field, rule), 0) + 1
        for (field, rule), n in want.items():
            self.assertRegex(out, r"(?m)^\s+%d\s+users\.%s\s+%s\s+\S" % (n, field, rule))
        self.assertIn("email is not a valid address (name@example.org)", out)
        m = re.search(r"^\s+users\s+loaded\s+(\d+) batches, (\d+) rows$", out, re.M)
        self.assertIsNotNone(m, out)
        self.assertGreaterEqual(int(m.group(1)), 1)
        self.assertEqual(int(m.group(2)), len(d.valid_users))
        m = re.search(r"^== time: ([\d.]+) s .*: (\d+) records/s \((\d+) users\)$", out, re.M)
        self.assertIsNotNone(m, out)
        self.assertEqual(int(m.group(3)), RECORDS)
        self.assertGreater(float(m.group(1)), 0)

    def test_timeout_names_the_stuck_queue(self):
        """An identity service that never calls back: the rows wait in
        _w.identity, the run ends at --timeout, exit 1, naming that queue
        and its stage, and stops everything it started."""
        code, out = self.run_example_args(["--records", "30", "--silent-identity"], 10 * plhelp.SLOW)
        self.assertEqual(code, 1, out)
        self.assertIn("FAILED: timed out after", out)
        self.assertIn("the warehouse holds 0/", out)
        self.assertRegex(out, r"(?m)^stuck: queue '_w\.identity' \(stage identity, waiting for "
                              r"callbacks\) holds \d+ delayed; nothing acked")
        self.assertIn("qctl stats:", out)
        self.assertNotIn("Traceback", out)
        m = re.search(r"logs and data kept in (\S+)", out)
        self.assertIsNotNone(m, out)
        self.addCleanup(plhelp.remove_tree, m.group(1))
        # nothing it started is left running on its data directory
        ps = subprocess.run(["ps", "-eo", "args"], stdout=subprocess.PIPE, text=True).stdout
        self.assertNotIn(m.group(1), ps)

if __name__ == "__main__":
    unittest.main()
