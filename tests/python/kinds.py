"""Breakpoints in every function kind: each arms (>= 1 code object) and fires with the
expected qualname on top of the stack and the expected local."""
import kinds_mod
from ldbg_testlib import FAST, SETTINGS_FAST, SINK, arm, line_of, result

KINDS = ["method", "static", "classmethod", "property", "closure", "lambda", "comprehension",
         "async", "generator", "asyncgen", "decorated"]


def main():
    path = kinds_mod.__file__
    bps = [{"id": k, "file": "kinds_mod.py", "line": line_of(path, f"# BP:{k}"), "limits": FAST}
           for k in KINDS]
    statuses = {s["id"]: s for s in arm(bps, SETTINGS_FAST)}
    baseline = kinds_mod.run_all()
    out = {}
    for k in KINDS:
        hits = SINK.hits(k)
        out[k] = {
            "status": statuses[k]["status"],
            "code_objects": statuses[k].get("code_objects", 0),
            "hits": len(hits),
            "top": hits[0]["$stack_trace"][0] if hits else None,
            "locals": sorted(hits[0]["$locals_variables"]) if hits else None,
        }
    result({"kinds": out, "baseline": repr(baseline)})


main()
