#!/usr/bin/env python3
"""checkbench: how long `pickline check` takes on big pipeline files.

Generates pipeline files with N keys in one map and times `pickline check`
on each (wall time of the whole process: read, YAML, duplicate-key check,
schema checks, graph). Shapes:
    queues   N queues under queues: (one noop stage)
    props    one model with N properties (a validate stage)
    dup      N queues with a duplicate key 10 lines before the end (refused)
A run over --timeout seconds is killed and reported as "> T".

    python3 bench/checkbench.py [--build build/release] [--sizes 10000,50000,200000]
                                [--shapes queues,props,dup] [--timeout 60] [--json]

Prints a human table, or with --json one JSON object per measured row. Never
asserts a time (tests/test_check.py bounds the work instead)."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gen(shape, n):
    out = []
    if shape in ("queues", "dup"):
        out.append("queues:\n")
        for i in range(n):
            out.append("  q%d:\n" % i)
        if shape == "dup":
            out.insert(len(out) - 10, "  q%d:\n" % (n // 2))
        out.append("stages:\n  - {name: s, kind: noop, input: q0, output: q1}\n")
    elif shape == "props":
        out.append("models:\n  big:\n    properties:\n      id: {type: serial, key: true}\n")
        for i in range(n):
            out.append("      p%d: {type: integer}\n" % i)
        out.append("queues:\n  a:\n  b:\nstages:\n"
                   "  - {name: v, kind: validate, model: big, input: a, output: b}\n")
    else:
        raise SystemExit("checkbench: unknown shape %s (queues, props, dup)" % shape)
    return "".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("PICKLINE_BUILD") or "build/release")
    ap.add_argument("--sizes", default="10000,50000,200000")
    ap.add_argument("--shapes", default="queues,props,dup")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    build = a.build if os.path.isabs(a.build) else os.path.join(ROOT, a.build)
    exe = os.path.join(build, "pickline")
    if not os.access(exe, os.X_OK):
        raise SystemExit("checkbench: %s is not built; run scons" % exe)
    tmp = tempfile.mkdtemp(prefix="pickline-checkbench-")
    try:
        if not a.json:
            print("%-8s %9s %10s %6s  %s" % ("shape", "keys", "seconds", "exit", "first line of stderr"))
        for shape in a.shapes.split(","):
            for n in (int(s) for s in a.sizes.split(",")):
                path = os.path.join(tmp, "%s-%d.yml" % (shape, n))
                with open(path, "w") as f:
                    f.write(gen(shape, n))
                t0 = time.monotonic()
                try:
                    p = subprocess.run([exe, "check", path], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, timeout=a.timeout)
                    secs, code = time.monotonic() - t0, p.returncode
                    err = p.stderr.decode("utf-8", "replace").strip().split("\n")[0]
                    err = err.replace(path, "FILE")
                except subprocess.TimeoutExpired:
                    secs, code, err = None, None, "killed after %g s" % a.timeout
                if a.json:
                    print(json.dumps({"name": "check_" + shape, "parameters": {"keys": n},
                                      "value": secs, "unit": "s", "exit": code,
                                      "timeout": a.timeout if secs is None else None}))
                else:
                    print("%-8s %9d %10s %6s  %s" % (shape, n, "%.3f" % secs if secs is not None
                                                     else "> %g" % a.timeout,
                                                     code if code is not None else "-", err[:70]))
                sys.stdout.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
