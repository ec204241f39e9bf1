"""B7: frame entries from C, for the cost of the frame-entry probe and its governor.

    python3 b7_entries.py [--entries N] [--reps R] [--rate E --seconds S] [--wait-go] [--linger]
                          [--libdebugger-bench]

Default mode: times `list(map(f, range(N)))` R times in process CPU time (user + system: the
uprobe's work happens in the kernel on the traced thread, so it is system time of this process).
`map` calls the Python function `f` from C, so every call enters `_PyEval_EvalFrameDefault`
(the probe's attach point) once.

Paced mode (--rate E --seconds S): about E entries of `f` per second for S seconds, in batches
every 10 ms, to show the governor does not trip below its budget.

With --wait-go the process announces itself and waits for a line on stdin first, so the harness
can attach `libdebugger-agent trace <pid>` before the clock starts.

Output: {"entries", "reps", "python", "ns_per_entry": {median, min, max, n}, "reps_ns": [...],
"wall_s"} or, paced, {"entries", "seconds", "rate"}.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _benchlib  # noqa: E402


def f(x):
    return x


def paced(rate, seconds):
    batch = max(1, int(rate / 100))
    total = 0
    t0 = time.perf_counter()
    tick = 0
    while True:
        now = time.perf_counter() - t0
        if now >= seconds:
            break
        due = int(now * 100) + 1
        while tick < due:
            list(map(f, range(batch)))
            total += batch
            tick += 1
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    return total, elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--wait-go", action="store_true")
    ap.add_argument("--linger", action="store_true",
                    help="after the result, wait for another line on stdin before exiting "
                         "(a tracer reads the code objects' names from the live process)")
    ap.add_argument(_benchlib.TAG, action="store_true")
    args = ap.parse_args()
    list(map(f, range(args.entries // 10)))  # warm up
    if args.wait_go:
        _benchlib.wait_go()
    if args.rate > 0:
        total, elapsed = paced(args.rate, args.seconds)
        _benchlib.emit({"entries": total, "seconds": elapsed, "rate": total / elapsed,
                        "python": _benchlib.python_version()})
        return
    reps = []
    w0 = time.perf_counter()
    for _ in range(args.reps):
        t0 = time.process_time_ns()
        list(map(f, range(args.entries)))
        reps.append(time.process_time_ns() - t0)
    wall = time.perf_counter() - w0
    per = [r / args.entries for r in reps]
    s = _benchlib.summarize(per)
    _benchlib.emit({"entries": args.entries, "reps": args.reps,
                    "python": _benchlib.python_version(),
                    "ns_per_entry": {"median": s["median"], "min": s["min"], "max": s["max"],
                                     "n": s["n"]},
                    "reps_ns": reps, "wall_s": wall})
    if args.linger:
        sys.stdin.readline()


if __name__ == "__main__":
    main()
