"""B3: the cost of a hit that does not capture: rate-limited, or whose condition is false.

    python3 b3_hotline.py --kind ratelimited|false-condition|logpoint [--iterations N] [--pairs P]
                          [--libdebugger-bench]

A loop runs one hot line N times. Pairs alternate unarmed and armed runs of the same loop
(the function is called afresh each time, so the 3.11 bytecode patch applies); the cost per hit
of one pair is (t_armed - t_unarmed) / N, t being the process's CPU time. For `ratelimited` the breakpoint has no condition and
the helper's default rate limit (5 snapshots/s, burst 10) turns all but a handful of hits away;
the few snapshots it does take are in the figure (their share is reported as `captured`).
For `false-condition` the condition `acc < 0` is never true.
For `logpoint` the line is a logpoint with a message of three expressions, no rate limit and no
process cap: every hit renders its message and the helper thread encodes and emits it. The loop
runs in rounds of 200 hits followed by `flush()` (the helper's queue holds 256, so no message is
dropped), both timed in both runs; the cost per hit then includes the encoding and the emit, and
`ratio` is t_armed / t_unarmed of the same loop.

Output: {"kind", "iterations", "python", "per_hit_ns": {median, min, max, n} over pairs,
"pairs_ns": [...], "unarmed_ns_per_iteration", "captured"}.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _benchlib  # noqa: E402

HOT_MARK = "# bench: " + "hot line"


def hot_loop(n):
    acc = 0
    for i in range(n):
        acc += i  # bench: hot line
    return acc


def timed(n, rounds_of=None, flush=None):
    """CPU time of the process (all threads) for n iterations: unlike wall time, it does not
    count the time other processes on a loaded machine hold the CPU. With `rounds_of`, the
    iterations run in rounds of that many, each followed by `flush()`."""
    t0 = time.process_time_ns()
    if rounds_of is None:
        hot_loop(n)
    else:
        for _ in range(n // rounds_of):
            hot_loop(rounds_of)
            flush(10.0)
    return time.process_time_ns() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=("ratelimited", "false-condition", "logpoint"),
                    default="ratelimited")
    ap.add_argument("--iterations", type=int, default=1_000_000)
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument(_benchlib.TAG, action="store_true")
    args = ap.parse_args()

    helper = _benchlib.import_helper()
    here = os.path.abspath(__file__)
    (line,) = _benchlib.find_marker_lines(here, HOT_MARK)
    bp = {"id": f"b3-{args.kind}", "file": here, "line": line,
          "condition": "acc < 0" if args.kind == "false-condition" else None}
    settings = None
    rounds = {}
    if args.kind == "logpoint":
        bp["log"] = {"message": "i={i} acc={acc} next={acc + i}", "rate": 1e9}
        settings = {"process_rate": 1e9, "cpu_budget": 1.0}
        rounds = {"rounds_of": 200, "flush": helper.flush}

    n = args.iterations
    timed(n // 10, **rounds)  # warm up
    diffs, unarmed, ratios = [], [], []
    for _ in range(args.pairs):
        helper.set_breakpoints([])
        a = timed(n, **rounds)
        _benchlib.arm(helper, [bp], settings)
        b = timed(n, **rounds)
        diffs.append((b - a) / n)
        unarmed.append(a / n)
        ratios.append(b / a if a else 0.0)
    status = helper.status()
    helper.set_breakpoints([])
    s = _benchlib.summarize(diffs)
    _benchlib.emit({
        "kind": args.kind,
        "iterations": n,
        "python": _benchlib.python_version(),
        "per_hit_ns": {"median": s["median"], "min": s["min"], "max": s["max"], "n": s["n"]},
        "pairs_ns": diffs,
        "unarmed_ns_per_iteration": _benchlib.summarize(unarmed)["median"],
        "ratio": _benchlib.summarize(ratios)["median"],
        "captured": _benchlib.counter(status, bp["id"], ("captured", "snapshots", "emitted")),
        "status": status,
    })


if __name__ == "__main__":
    main()
