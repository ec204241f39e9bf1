"""Micro-benchmarks of the helper on the reference frame (issue 3, Performance):
 * snapshot: one captured hit of a frame with 10 locals (ints, strings, a 20-item list, a dict,
   a small object) at stack depth 20 — time inside the helper ($capture_us) and wall time of
   the hit (call with the breakpoint minus call without);
 * a rate-limited hit and a condition-false hit (wall time per hit, minus the bare call);
 * the slowdown of the rest of a function whose breakpoint line is rate-limited.
Prints `RESULT {json}`. Run: PYTHONPATH=target/helper:tests/python python3 tests/python/bench_helper.py
"""
import statistics
import sys
import time

from ldbg_testlib import SINK, arm, h, line_of, result


class Small:
    def __init__(self):
        self.a = 1
        self.b = "two"
        self.c = [3, 4]


def reference(n):
    i1, i2, i3 = 1, 22, 333
    s1, s2, s3 = "alpha", "beta" * 4, "gamma delta"
    lst = list(range(20))
    d = {"k1": 1, "k2": "v", "k3": [1, 2]}
    obj = Small()
    marker = n  # BP:ref
    return marker


def at_depth(depth, fn, *a):
    if depth <= 1:
        return fn(*a)
    return at_depth(depth - 1, fn, *a)


def loop_fn(n):
    total = 0
    for i in range(n):
        total += i * 2
        if total % 7 == 0:
            total -= 1
    done = total  # BP:loop
    return done


def per_call_ns(fn, reps, *a):
    t0 = time.perf_counter_ns()
    for _ in range(reps):
        fn(*a)
    return (time.perf_counter_ns() - t0) / reps


def median_of(samples_fn, rounds=15):
    return statistics.median(samples_fn() for _ in range(rounds))


def main():
    ref_line = line_of(__file__, "# BP:ref")
    loop_line = line_of(__file__, "# BP:loop")
    unlimited = {"rate": 1e12, "burst": 1e12}
    fast = {"process_rate": 1e12, "cpu_budget": 1.0, "queue_capacity": 1 << 20}
    out = {"python": sys.version.split()[0]}

    # Baseline: the reference call at depth 20 without breakpoints.
    base = median_of(lambda: per_call_ns(at_depth, 2000, 20, reference, 1))

    # 1. Snapshot.
    arm([{"id": "snap", "file": "bench_helper.py", "line": ref_line, "limits": unlimited}], fast)
    SINK.clear()
    with_snap = median_of(lambda: per_call_ns(at_depth, 200, 20, reference, 1))
    hits = SINK.hits("snap")
    cap = [x["$capture_us"] for x in hits]
    out["snapshot_capture_us_median"] = statistics.median(cap)
    out["snapshot_capture_us_p90"] = sorted(cap)[int(len(cap) * 0.9)]
    out["snapshot_hit_wall_us_median"] = (with_snap - base) / 1000
    out["snapshot_stack_depth"] = len(hits[0]["$stack_trace"])
    out["snapshot_locals"] = len(hits[0]["$locals_variables"])
    out["snapshot_bytes"] = len(next(t for k, t in SINK.msgs if k == "hit"))

    # 2. Rate-limited hit (bucket empty: rate ~0).
    arm([{"id": "rl", "file": "bench_helper.py", "line": ref_line,
          "limits": {"rate": 1e-9, "burst": 1}}], fast)
    rl = median_of(lambda: per_call_ns(at_depth, 2000, 20, reference, 1))
    out["rate_limited_hit_us"] = (rl - base) / 1000

    # 3. Condition false.
    arm([{"id": "cf", "file": "bench_helper.py", "line": ref_line, "condition": "n > 5",
          "limits": unlimited}], fast)
    cf = median_of(lambda: per_call_ns(at_depth, 2000, 20, reference, 1))
    out["condition_false_hit_us"] = (cf - base) / 1000
    out["baseline_call_us"] = base / 1000
    h.set_breakpoints([])

    # 4. Slowdown of the rest of a function (breakpoint rate-limited, 1000-iteration loop).
    loop_base = median_of(lambda: per_call_ns(loop_fn, 200, 1000))
    arm([{"id": "lp", "file": "bench_helper.py", "line": loop_line,
          "limits": {"rate": 1e-9, "burst": 1}}], fast)
    loop_fn(10)
    loop_armed = median_of(lambda: per_call_ns(loop_fn, 200, 1000))
    h.set_breakpoints([])
    loop_after = median_of(lambda: per_call_ns(loop_fn, 200, 1000))
    out["loop_fn_us"] = loop_base / 1000
    out["loop_fn_armed_us"] = loop_armed / 1000
    out["armed_slowdown_pct"] = (loop_armed - loop_base) / loop_base * 100
    out["loop_fn_after_removal_us"] = loop_after / 1000
    result(out)


main()
