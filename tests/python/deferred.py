"""A breakpoint on a module not imported yet is pending, arms on import, and re-arms after
importlib.reload; the import finder never breaks imports and disappears on removal."""
import importlib
import os
import sys

from ldbg_testlib import FAST, SINK, arm, h, line_of, result, skip_if_unmerged

HERE = os.path.dirname(os.path.abspath(__file__))


def finder_count():
    return sum(1 for f in sys.meta_path if type(f).__name__ == "LibdebuggerFinder")


def main():
    assert "deferred_mod" not in sys.modules
    line = line_of(os.path.join(HERE, "deferred_mod.py"), "# BP:compute")
    st1 = arm([{"id": "d", "file": "deferred_mod.py", "line": line, "limits": FAST}])
    finders_armed = finder_count()
    # Unrelated imports still work, including failing ones.
    import json  # noqa: F401
    import_error = None
    try:
        import does_not_exist_ldbg  # noqa: F401
    except ImportError as e:
        import_error = type(e).__name__
    import deferred_mod

    skip_if_unmerged(h.status()["breakpoints"])
    st2 = h.status()["breakpoints"][0]
    deferred_mod.compute(2)
    hits_after_import = len(SINK.hits("d"))
    old_compute = deferred_mod.compute  # an old reference keeps the old code alive and armed
    importlib.reload(deferred_mod)
    st3 = h.status()["breakpoints"][0]
    SINK.clear()
    deferred_mod.compute(3)
    hits_after_reload = SINK.hits("d")
    SINK.clear()
    old_compute(5)
    old_hits = SINK.hits("d")
    del old_compute
    importlib.reload(deferred_mod)  # now nothing references the first version any more
    st4 = h.status()["breakpoints"][0]
    h.set_breakpoints([])
    result({
        "pending": st1[0]["status"],
        "pending_reason": st1[0].get("reason"),
        "finders_armed": finders_armed,
        "import_error": import_error,
        "after_import": st2["status"],
        "hits_after_import": hits_after_import,
        "after_reload": st3["status"],
        "code_objects_after_reload": st3.get("code_objects"),
        "hits_after_reload": len(hits_after_reload),
        "reload_local_x": hits_after_reload[0]["$locals_variables"].get("x") if hits_after_reload else None,
        "old_function_hits": [x["$locals_variables"].get("x") for x in old_hits],
        "code_objects_after_second_reload": st4.get("code_objects"),
        "finders_after_removal": finder_count(),
        "hook_errors": h.status()["process"]["import_hook_errors"],
    })


main()
