"""B5: a process that hits a breakpoint at a given rate, for pipeline throughput.

    python3 b5_emitter.py --rate R|0 --duration S [--wait-go] [--linger] [--libdebugger-bench]

Calls `hit(i)` (its marked line carries the breakpoint the agent arms) R times per second
(0 = as fast as it can) for S seconds, pacing in 1 ms slices. Prints {"ready": pid, "line": L}
first (with --wait-go it then waits for a line on stdin), and at the end
{"calls", "elapsed_s", "rate", "python"}: the harness compares `calls` with the events that
arrived to report loss.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _benchlib  # noqa: E402

BP_MARK = "# bench: " + "emit line"


def hit(i):
    order = {"id": i, "total": i * 1.5, "items": [i, i + 1, i + 2], "user": "bench"}
    return order  # bench: emit line


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--wait-go", action="store_true")
    ap.add_argument("--linger", action="store_true",
                    help="after the result, wait for a line on stdin before exiting (the agent "
                         "reports this process's counters only while it lives)")
    ap.add_argument(_benchlib.TAG, action="store_true")
    args = ap.parse_args()
    here = os.path.abspath(__file__)
    (line,) = _benchlib.find_marker_lines(here, BP_MARK)
    extra = {"file": here, "line": line}
    if args.wait_go:
        _benchlib.wait_go(extra)
    else:
        _benchlib.emit({"ready": os.getpid(), **extra})
    calls = 0
    t0 = time.perf_counter()
    end = t0 + args.duration
    if args.rate <= 0:
        while True:
            for _ in range(100):
                hit(calls)
                calls += 1
            if time.perf_counter() >= end:
                break
    else:
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            due = int((now - t0) * args.rate)
            while calls < due:
                hit(calls)
                calls += 1
            time.sleep(0.001)
    elapsed = time.perf_counter() - t0
    _benchlib.emit({"calls": calls, "elapsed_s": elapsed, "rate": calls / elapsed,
                    "python": _benchlib.python_version()})
    if args.linger:
        sys.stdin.readline()


if __name__ == "__main__":
    main()
