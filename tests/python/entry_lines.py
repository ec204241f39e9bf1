"""Breakpoints on `def` lines and decorator lines behave identically on every version: a `def`
line (decorated or not) fires once per call at entry, with only the arguments bound (plus where
an enclosing function executes the `def` statement, as settrace reports the line); a decorator
line fires only where the decorator expression is evaluated (never per call), so on a
module-level or class-level function it is reported as code that already ran."""
import entry_lines_mod as m
from ldbg_testlib import FAST, SETTINGS_FAST, SINK, arm, counters, h, line_of, result

MARKERS = ["PLAIN_DEF", "MOD_DECO", "MOD_DEF", "MOD_DECO2", "MOD_ONELINE", "GEN_DEF", "CORO_DEF",
           "NESTED_DECO", "NESTED_DEF", "METHOD_DECO", "METHOD_DEF"]


def run_all():
    m.plain(1)
    m.plain(1)
    m.top(1)
    m.top(1)
    m.two.__wrapped__.cache_clear()
    m.two(3)
    m.two(4)
    assert list(m.gen(3)) == [0, 1, 2]
    c = m.coro(7)
    try:
        c.send(None)
    except StopIteration as e:
        assert e.value == 7
    assert m.outer(5) == 6
    assert m.outer(5) == 6
    assert m.K.sm(1) == 1


def main():
    path = m.__file__
    bps = [{"id": k, "file": "entry_lines_mod.py", "line": line_of(path, f"# {k}"), "limits": FAST}
           for k in MARKERS]
    statuses = {s["id"]: s for s in arm(bps, SETTINGS_FAST)}
    SINK.clear()
    run_all()
    hits = SINK.hits()
    out = {}
    for k in MARKERS:
        mine = [x for x in hits if x["$breakpoint_id"] == k]
        out[k] = {
            "status": statuses[k]["status"],
            "reason": statuses[k].get("reason", ""),
            "hits": counters(k)["hits"],
            # (function, sorted local names) of each hit
            "at": sorted({(x["$stack_trace"][0][1], ",".join(sorted(x["$locals_variables"])))
                          for x in mine}),
        }
    h.set_breakpoints([])
    SINK.clear()
    run_all()
    out["hits_after_removal"] = len(SINK.hits())
    out["code_restored"] = all(
        f.__code__ is code for f, code in [(m.plain, ORIG["plain"]), (m.top.__wrapped__, ORIG["top"]),
                                           (m.outer, ORIG["outer"]), (m.gen, ORIG["gen"])])
    result(out)


ORIG = {"plain": m.plain.__code__, "top": m.top.__wrapped__.__code__, "outer": m.outer.__code__,
        "gen": m.gen.__code__}
main()
