"""`pickline check` on big pipeline files (issue 10, item 9): a file with
200,000 keys in one map is checked, and a duplicate key deep inside it is
reported with both lines, without hanging.

These are hang tests, not speed tests: `pickline check` runs under a
generous timeout (20 s, scaled for sanitizer builds) that the quadratic
duplicate-key check could not meet (about 70 s for 200k keys in release).
The measurement (keys vs seconds) is bench/checkbench.py."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plhelp

N = 200000
BOUND = 20.0  # seconds (times plhelp.SLOW): a hang bound, far above the linear time


def big_queues(n, dup_of=None):
    """A pipeline with n queues q0..q{n-1} (q_i on line i + 2) and one noop
    stage; with dup_of, q{dup_of} again right after the last queue."""
    out = ["queues:\n"]
    out.extend("  q%d:\n" % i for i in range(n))
    if dup_of is not None:
        out.append("  q%d:\n" % dup_of)
    out.append("stages:\n  - {name: s, kind: noop, input: q0, output: q1}\n")
    return "".join(out)


class BigFileTest(plhelp.TempDirTest):
    def check(self, text):
        try:
            r, path = self.check_pipeline(text, name="big.yml", timeout=BOUND)
        except subprocess.TimeoutExpired:
            self.fail("pickline check of %d keys did not finish within %.0f s (a hang)"
                      % (N, BOUND * plhelp.SLOW))
        return r, path

    def test_200k_keys_are_checked(self):
        r, path = self.check(big_queues(N))
        self.assertEqual(r.code, 0, r)
        self.assertIn("%s: ok, %d queues, 1 stage" % (path, N), r.out)
        self.assertIn("q199999: not used by any stage", r.out)

    def test_duplicate_deep_in_200k_keys_names_both_lines(self):
        r, path = self.check(big_queues(N, dup_of=123456))
        self.assertEqual(r.code, 1, r)
        self.assertEqual(r.err, "%s:%d: duplicate key 'q123456' (also at line %d); remove one\n"
                         % (path, N + 2, 123456 + 2))


if __name__ == "__main__":
    unittest.main()
