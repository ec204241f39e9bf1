"""Budgets: per-breakpoint token bucket (default 5/s, burst 10), per-process cap, capture
deadline, CPU budget → throttled; every outcome counted separately."""
import time

from ldbg_testlib import FAST, SINK, arm, counters, h, line_of, result


def f(x):
    y = x  # BP:f
    return y


def g(x):
    y = x  # BP:g
    return y


def main():
    lf = line_of(__file__, "# BP:f")
    lg = line_of(__file__, "# BP:g")
    # 1. Default per-breakpoint bucket.
    arm([{"id": "default", "file": "rate_limits.py", "line": lf}])
    t0 = time.monotonic()
    for i in range(1000):
        f(i)
    elapsed = time.monotonic() - t0
    default = counters("default")
    default_hits = len(SINK.hits("default"))
    # 2. Per-process cap (breakpoint unlimited, process 20/s burst 20).
    SINK.clear()
    arm([{"id": "proc", "file": "rate_limits.py", "line": lf, "limits": FAST}],
        {"process_rate": 20, "cpu_budget": 1.0})
    for i in range(500):
        f(i)
    proc = counters("proc")
    # 3. Deadline: a 0 ms budget cuts the snapshot and marks it.
    SINK.clear()
    arm([{"id": "deadline", "file": "rate_limits.py", "line": lg,
          "limits": dict(FAST, deadline_ms=0)}], {"process_rate": 1e9, "cpu_budget": 1.0})
    g(list(range(5000)))
    dl = SINK.hits("deadline")
    deadline_counters = counters("deadline")
    # 4. CPU budget: a tiny budget throttles after the first captures.
    SINK.clear()
    arm([{"id": "cpu", "file": "rate_limits.py", "line": lf, "limits": FAST}],
        {"process_rate": 1e9, "cpu_budget": 1e-9})
    for i in range(200):
        f(list(range(100)))
    cpu = counters("cpu")
    cpu_status = [b for b in h.status()["breakpoints"] if b["id"] == "cpu"][0]["status"]
    h.set_breakpoints([])
    result({
        "elapsed_s": elapsed,
        "default": default, "default_hits": default_hits,
        "proc": proc,
        "deadline_truncated": dl[0].get("$truncated") if dl else None,
        "deadline_counters": deadline_counters,
        "cpu": cpu, "cpu_status": cpu_status,
    })


main()
