"""A breakpoint on each line of a function that uses every control-flow construct, in turn:
the results stay identical and the breakpoint fires exactly on the lines that ran (as many
times as they ran, per a settrace baseline)."""
import sys

from ldbg_testlib import FAST, SETTINGS_FAST, SINK, arm, counters, h, result

COUNTER = 0


def structural(n, *args, **kwargs):  # FIRST
    global COUNTER
    out = []
    total = 0

    def make_acc():
        acc = 0

        def add(x):
            nonlocal acc
            acc += x
            return acc

        return add

    add = make_acc()
    sq = lambda v: v * v
    gen = (sq(i) for i in range(3))
    for g in gen:
        out.append(g)
    i = 0
    while True:
        i += 1
        if i % 2 == 0:
            continue
        elif i > 7:
            break
        else:
            total += add(i)
    for j in range(3):
        if j == 99:
            break
    else:
        out.append("for-else")
    for a in range(2):
        for b in range(2):
            out.append((a, b))
    try:
        1 / 0
    except ZeroDivisionError:
        out.append("zde")
    else:
        out.append("no")
    finally:
        out.append("fin")
    try:
        try:
            raise KeyError("k")
        finally:
            out.append("inner-fin")
    except KeyError as e:
        out.append(str(e))
    else:
        out.append("unreached")

    class Ctx:
        def __enter__(self):
            out.append("enter")
            return self

        def __exit__(self, *exc):
            out.append("exit")
            return False

    with Ctx():
        out.append("body")

    def rec(k):
        return 1 if k <= 1 else k * rec(k - 1)

    out.append(rec(5))
    out.append(sum(args))
    out.append(sorted(kwargs.items()))
    out.append([x * 2 for x in range(3)])
    COUNTER += 1
    out.append(n + total)
    return out  # LAST


def lines_range():
    from ldbg_testlib import line_of

    return line_of(__file__, "# FIRST"), line_of(__file__, "# LAST")


def traced_run():
    """Runs structural() under settrace; returns (result, {line: count})."""
    counts = {}
    code_file = structural.__code__.co_filename

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != code_file:
            return None
        if event == "line":
            counts[frame.f_lineno] = counts.get(frame.f_lineno, 0) + 1
        return tracer

    sys.settrace(tracer)
    try:
        r = structural(3, 1, 2, k=1)
    finally:
        sys.settrace(None)
    return r, counts


def main():
    global COUNTER
    first, last = lines_range()
    baseline, counts = traced_run()
    expected_counter = COUNTER + 1
    mismatches = []
    count_mismatches = []
    tested = 0
    for line in range(first, last + 1):
        COUNTER = expected_counter - 1
        st = arm([{"id": f"L{line}", "file": "structural.py", "line": line, "limits": FAST}],
                 SETTINGS_FAST)
        status = st[0]["status"]
        if status == "error" and "no code on line" not in st[0]["reason"]:
            mismatches.append({"line": line, "unexpected_status": st[0]})
            continue
        SINK.clear()
        r = structural(3, 1, 2, k=1)
        hits = len(SINK.hits(f"L{line}"))
        c = counters(f"L{line}")
        tested += 1
        if r != baseline:
            mismatches.append({"line": line, "result_differs": True})
        ran = counts.get(line, 0)
        if (hits > 0) != (ran > 0):
            mismatches.append({"line": line, "hits": hits, "ran": ran, "status": status})
        elif c["hits"] != ran:
            count_mismatches.append({"line": line, "hits": c["hits"], "ran": ran})
        if COUNTER != expected_counter:
            mismatches.append({"line": line, "counter": COUNTER})
    h.set_breakpoints([])
    result({
        "tested": tested,
        "lines": last - first + 1,
        "executed_lines": len(counts),
        "mismatches": mismatches,
        "count_mismatches": count_mismatches,
    })


main()
