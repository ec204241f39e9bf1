"""Micro-benchmarks of the helper on the reference frame (issue 3, Performance):
 * snapshot: one captured hit of a frame with 10 locals (ints, strings, a 20-item list, a dict,
   a small object) at stack depth 20 — time inside the helper ($capture_us) and wall time of
   the hit (call with the breakpoint minus call without);
 * a rate-limited hit and a condition-false hit (wall time per hit, minus the bare call);
 * the slowdown of the rest of a function whose breakpoint line is rate-limited.
Costs are measured as CPU time of the calling thread (time.thread_time_ns), alternating the
configurations, because the machine is shared; the snapshot's wall time is reported too.
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


def per_call_cpu_ns(fn, reps, *a):
    """CPU time of this thread only (the helper's encoder thread competes for the same cores
    on a loaded machine, which wall time would charge to the application thread)."""
    t0 = time.thread_time_ns()
    for _ in range(reps):
        fn(*a)
    return (time.thread_time_ns() - t0) / reps


def paired(setup_a, setup_b, measure, rounds=21):
    """Alternates configurations a and b (the machine is shared and noisy); median of each."""
    a, b = [], []
    for _ in range(rounds):
        setup_a()
        a.append(measure())
        setup_b()
        b.append(measure())
    return statistics.median(a), statistics.median(b)


def main():
    ref_line = line_of(__file__, "# BP:ref")
    loop_line = line_of(__file__, "# BP:loop")
    unlimited = {"rate": 1e12, "burst": 1e12}
    fast = {"process_rate": 1e12, "cpu_budget": 1.0, "queue_capacity": 1 << 20}
    out = {"python": sys.version.split()[0]}
    ref_call = lambda: per_call_ns(at_depth, 500, 20, reference, 1)  # noqa: E731
    none = lambda: h.set_breakpoints([])  # noqa: E731

    def bp(bp_id, line, limits, condition=None):
        spec = {"id": bp_id, "file": "bench_helper.py", "line": line, "limits": limits}
        if condition:
            spec["condition"] = condition
        return lambda: arm([spec], fast)

    # 1. Snapshot: time inside the helper, from the hits themselves.
    bp("snap", ref_line, unlimited)()
    SINK.clear()
    for _ in range(2000):
        at_depth(20, reference, 1)
    hits = SINK.hits("snap")
    cap = sorted(x["$capture_us"] for x in hits)
    out["snapshot_capture_us_median"] = statistics.median(cap)
    out["snapshot_capture_us_p10"] = cap[len(cap) // 10]
    out["snapshot_capture_us_p90"] = cap[len(cap) * 9 // 10]
    out["snapshot_stack_depth"] = len(hits[0]["$stack_trace"])
    out["snapshot_locals"] = len(hits[0]["$locals_variables"])
    out["snapshot_bytes"] = len(next(t for k, t in SINK.msgs if k == "hit"))
    # Wall time of a captured hit on the application thread (no sink: production path).
    h.set_sink(None)
    base, snap = paired(none, bp("snap", ref_line, unlimited), ref_call)
    out["snapshot_hit_wall_us"] = (snap - base) / 1000
    ref_cpu = lambda: per_call_cpu_ns(at_depth, 500, 20, reference, 1)  # noqa: E731
    base, snap = paired(none, bp("snap", ref_line, unlimited), ref_cpu)
    out["snapshot_hit_thread_cpu_us"] = (snap - base) / 1000
    # 2. Rate-limited hit (bucket empty).
    base, rl = paired(none, bp("rl", ref_line, {"rate": 1e-9, "burst": 1}), ref_cpu)
    out["rate_limited_hit_us"] = (rl - base) / 1000
    # 3. Condition false.
    base, cf = paired(none, bp("cf", ref_line, unlimited, "n > 5"), ref_cpu)
    out["condition_false_hit_us"] = (cf - base) / 1000
    out["baseline_call_us"] = base / 1000
    # 4. Slowdown of the rest of a function (its breakpoint line rate-limited).
    loop_call = lambda: per_call_cpu_ns(loop_fn, 100, 1000)  # noqa: E731
    base, armed = paired(none, bp("lp", loop_line, {"rate": 1e-9, "burst": 1}), loop_call)
    out["loop_fn_us"] = base / 1000
    out["loop_fn_armed_us"] = armed / 1000
    out["armed_slowdown_pct"] = (armed - base) / base * 100
    h.set_breakpoints([])
    result(out)


main()
