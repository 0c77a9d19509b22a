"""Bash completion of qctl, pickline and qload (tools/completion/): a bash
sources the script, `complete -p` shows it registered, and the completion
function is called as readline would (COMP_WORDS, COMP_CWORD) against a real
data directory with queues: commands, subcommands, flags, --state values and
queue names (of --data, else $PICKLINE_DATA), and nothing created where no
data directory is."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_fixtures import qctl
from plhelp import ROOT, SLOW, TempDirTest, binary

COMPLETION = os.path.join(ROOT, "tools", "completion")

# Runs in bash: sources the script, then calls FUNC with the words given as
# arguments (the last is the one being completed), and prints COMPREPLY one
# a line.
DRIVER = r'''
source "$1"; func=$2; shift 2
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
"$func"
printf '%s\n' "${COMPREPLY[@]}"
'''


def complete(script, func, words, env=None, cwd=None):
    """The completions bash offers for words (the last one being typed)."""
    p = subprocess.run(["bash", "--norc", "-c", DRIVER, "bash", os.path.join(COMPLETION, script),
                        func] + list(words),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=env, cwd=cwd, timeout=60 * SLOW)
    if p.returncode != 0 or p.stderr:
        raise AssertionError("completion of %r failed (%d): %s" % (words, p.returncode, p.stderr))
    return [l for l in p.stdout.split("\n") if l]


class QctlCompletionTest(TempDirTest):
    def setUp(self):
        super().setUp()
        self.qctl = binary("qctl")
        for q in ("orders", "order_lines", "customers", "_w.identity"):
            p = qctl(self.data, "create", q)
            self.assertEqual(p.returncode, 0, p.stderr)

    def words(self, *w, env=None):
        return complete("qctl.bash", "_qctl", [self.qctl] + list(w), env=env, cwd=self.dir)

    def test_registered(self):
        p = subprocess.run(["bash", "--norc", "-c", 'source "$1"; complete -p qctl', "bash",
                            os.path.join(COMPLETION, "qctl.bash")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "complete -F _qctl qctl")

    def test_commands(self):
        got = self.words("")
        help_cmds = [l.split()[0] for l in subprocess.run(
            [self.qctl, "--help"], stdout=subprocess.PIPE, text=True).stdout
            .split("commands:\n")[1].split("\n\n")[0].splitlines()]
        self.assertEqual(got, help_cmds)
        self.assertIn("kick-job", got)
        self.assertEqual(self.words("--data", self.data, "pe"), ["peek"])
        self.assertEqual(sorted(self.words("re")), ["rejects", "release", "reserve", "resume"])

    def test_queue_names(self):
        self.assertEqual(sorted(self.words("--data", self.data, "peek", "")),
                         ["customers", "order_lines", "orders"])
        self.assertEqual(sorted(self.words("--data", self.data, "put", "ord")),
                         ["order_lines", "orders"])
        # a wait queue (_w.STAGE) only when asked for
        self.assertEqual(self.words("--data", self.data, "peek", "_"), ["_w.identity"])
        # --data after the command, and a flag with its value before the queue
        self.assertEqual(self.words("put", "--pri", "3", "--data", self.data, "cu"), ["customers"])
        # $PICKLINE_DATA when there is no --data
        env = dict(os.environ, PICKLINE_DATA=self.data)
        self.assertEqual(self.words("kick", "c", env=env), ["customers"])
        # only the first argument is a queue
        self.assertEqual(self.words("--data", self.data, "kick", "orders", ""), [])

    def test_no_data_directory_is_created(self):
        nowhere = os.path.join(self.dir, "nowhere")
        self.assertEqual(self.words("--data", nowhere, "peek", ""), [])
        self.assertFalse(os.path.exists(nowhere))
        env = {k: v for k, v in os.environ.items() if k != "PICKLINE_DATA"}
        self.assertEqual(self.words("stats", "", env=env), [])  # ./pickline-data: none in self.dir
        self.assertFalse(os.path.exists(os.path.join(self.dir, "pickline-data")))

    def test_flags_and_values(self):
        self.assertEqual(self.words("--data", self.data, "put", "orders", "--"),
                         ["--data", "--delay", "--help", "--json", "--key", "--pri", "--ttr"])
        self.assertEqual(self.words("--"), ["--data", "--help", "--json", "--version"])
        self.assertEqual(self.words("peek", "orders", "--state", ""),
                         ["ready", "delayed", "reserved", "buried", "all"])
        self.assertEqual(self.words("batches", "--state", "l"), ["loading", "loaded"])
        self.assertIn("--max-attempts", self.words("create", "x", "--m"))

    def test_subcommands(self):
        self.assertEqual(self.words("batches", ""),
                         ["show", "seal", "release", "retry", "fail", "prune"])
        self.assertEqual(self.words("rejects", "re"), ["replay"])
        self.assertEqual(self.words("batches", "show", "--"), ["--data", "--help", "--json", "--rows"])
        self.assertEqual(self.words("batches", "show", "7", ""), [])

    def test_data_directories(self):
        os.mkdir(os.path.join(self.dir, "data2"))
        self.assertEqual(sorted(self.words("--data", "da")), ["data", "data2"])


class OtherCompletionTest(TempDirTest):
    def test_pickline(self):
        self.write("a.yml", "x")
        self.write("b.yaml", "x")
        self.write("c.txt", "x")
        words = lambda *w: complete("pickline.bash", "_pickline", ["pickline"] + list(w), cwd=self.dir)
        self.assertEqual(words(""), ["run", "check", "--help", "--version"])
        self.assertEqual(sorted(words("check", "")), ["a.yml", "b.yaml"])
        self.assertEqual(words("run", "a.yml", "--d"), ["--data"])

    def test_qload(self):
        words = lambda *w: complete("qload.bash", "_qload", [binary("qload")] + list(w), cwd=self.dir)
        self.assertEqual(words("--mode", ""), ["append", "merge"])
        got = words("--")
        for fl in ("--data", "--target", "--follow", "--create-tables", "--mode", "--version"):
            self.assertIn(fl, got)


if __name__ == "__main__":
    unittest.main()
