"""A breakpoint on each line of a function that uses every control-flow construct, in turn:
the results stay identical and the breakpoint fires exactly on the lines that ran (as many
times as they ran, per a settrace baseline)."""
import sys

from ldbg_testlib import FAST, SETTINGS_FAST, SINK, arm, counters, h, line_of, result

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
    gen = (sq(i) for i in range(3))  # ONE-LINE-LOOP
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

    def rec(k):  # REC
        return 1 if k <= 1 else k * rec(k - 1)

    out.append(rec(5))
    out.append(sum(args))
    out.append(sorted(kwargs.items()))
    out.append([x * 2 for x in range(3)])  # ONE-LINE-LOOP
    COUNTER += 1
    out.append(n + total)
    return out  # LAST


def lines_range():
    return line_of(__file__, "# FIRST"), line_of(__file__, "# LAST")


def traced_run():
    """Runs structural() under settrace; returns (result, {line: count}).

    A line counts each time settrace reports it, and a function's `def` line (its entry line)
    also once per call: a breakpoint there fires at entry. (Where the body shares the entry
    line — lambdas, comprehensions, class bodies — settrace's own "line" event is that entry.)"""
    counts = {}
    code_file = structural.__code__.co_filename
    started = []  # frames already entered (a generator's later resumes are "call" events too)
    entering = {}  # id(frame) -> entry line, until the frame's first "line" event

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != code_file:
            return None
        if event == "call" and not any(f is frame for f in started):
            started.append(frame)
            entering[id(frame)] = frame.f_code.co_firstlineno
        elif event == "line":
            entry = entering.pop(id(frame), None)
            if entry is not None and entry != frame.f_lineno:
                counts[entry] = counts.get(entry, 0) + 1
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
    rec_line = line_of(__file__, "# REC")
    with open(__file__) as f:
        one_line_loops = {i for i, text in enumerate(f, 1) if text.endswith("# ONE-LINE-LOOP\n")}
    entry_hits = {}
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
        if line in (first, rec_line):
            entry_hits[line] = hits
        tested += 1
        if r != baseline:
            mismatches.append({"line": line, "result_differs": True})
        ran = counts.get(line, 0)
        if (hits > 0) != (ran > 0):
            mismatches.append({"line": line, "hits": hits, "ran": ran, "status": status})
        elif line in one_line_loops and sys.version_info >= (3, 12):
            # sys.monitoring reports a line once when it is entered, not again when a loop
            # jumps back within the same line (settrace and the 3.11 patcher do, per iteration).
            if not 1 <= c["hits"] <= ran:
                count_mismatches.append({"line": line, "hits": c["hits"], "ran": ran})
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
        # The def line of structural() (once per call) and of the nested recursive rec()
        # (once where structural() executes the def statement, plus once per call: 5 calls).
        "def_line_hits": entry_hits.get(first),
        "nested_def_line_hits": entry_hits.get(rec_line),
    })


main()
