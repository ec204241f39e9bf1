"""Changing breakpoints on armed code: a parent function and its nested function armed at the
same time, adding/removing one of several breakpoints in the same function, and removal of
everything putting back the identical original code objects (on 3.11 the bytecode patcher swaps
instrumented copies in; on 3.12+ the code objects never change)."""
import sys
import types

import rearm_mod as m
from ldbg_testlib import FAST, SETTINGS_FAST, SINK, arm, h, line_of, result

P = m.parent.__code__
C = next(k for k in P.co_consts if isinstance(k, types.CodeType))
M = m.multi.__code__
MARKS = ["P1", "P2", "C1", "C2", "M1", "M2", "M3"]
LINES = {k: line_of(m.__file__, f"# {k}") for k in MARKS}


def set_bps(ids):
    st = arm([{"id": k, "file": "rearm_mod.py", "line": LINES[k], "limits": FAST} for k in ids],
             SETTINGS_FAST)
    return {s["id"]: s["status"] for s in st}


def run():
    """Calls both functions once; returns {bp id: hits}, checking the results are unchanged."""
    SINK.clear()
    assert m.parent(1) == 5
    assert m.multi(1) == 1
    got = {}
    for x in SINK.hits():
        got[x["$breakpoint_id"]] = got.get(x["$breakpoint_id"], 0) + 1
    return got


ORIGINAL_IDS = {"P": id(P), "C": id(C), "M": id(M)}


def armed_on():
    """{bp id: [which original code object ("P", "C", "M") or "other"]} from the last
    code_objects message: breakpoints are armed on (and reported as) the originals only."""
    msgs = SINK.messages("code_objects")
    if not msgs:
        return {}
    names = {v: k for k, v in ORIGINAL_IDS.items()}
    return {b["id"]: sorted(names.get(a, "other") for a in b["code_objects"])
            for b in msgs[-1]["breakpoints"]}


def step(name, ids, out):
    statuses = set_bps(ids)
    out["steps"].append({"step": name, "statuses": statuses, "armed_on": armed_on(), "hits": run(),
                         "parent_is_original": m.parent.__code__ is P,
                         "child_is_original": m.LAST_CHILD[-1].__code__ is C,
                         "multi_is_original": m.multi.__code__ is M})


def main():
    out = {"steps": [], "version": list(sys.version_info[:2])}
    assert run() == {}
    step("parent+child", ["P1", "C1"], out)
    early_child = m.LAST_CHILD[-1]
    step("add C2", ["P1", "C1", "C2"], out)
    step("remove C1", ["P1", "C2"], out)
    step("remove P1", ["C2"], out)
    step("parent only", ["P1", "P2"], out)
    step("multi all", ["M1", "M2", "M3"], out)
    step("remove M2", ["M1", "M3"], out)
    step("add M2 back", ["M1", "M2", "M3"], out)
    step("only M2", ["M2"], out)
    step("everything", MARKS, out)
    step("nothing", [], out)
    out["early_child_is_original"] = early_child.__code__ is C
    out["armed_after"] = h.status()["process"]["armed_code_objects"]
    m.LAST_CHILD.clear()
    result(out)


main()
