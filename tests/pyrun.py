"""pyrun: run the python end-to-end tests (tests/test_*.py) and print one
PASS/FAIL line per test, like the C test programs, for tests/run."""
import os
import sys
import unittest

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)


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


def main():
    suite = unittest.defaultTestLoader.discover(here, pattern="test_*.py", top_level_dir=here)
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=1, resultclass=LineResult)
    res = runner.run(suite)
    return 0 if res.wasSuccessful() and res.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
