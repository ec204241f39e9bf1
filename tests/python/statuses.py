"""Every status a breakpoint can get, each with an actionable reason: armed, pending, file not
found, no code on the line (with the nearest lines), module-level line, ambiguous path (with
the candidates), condition syntax error (with the column), invalid line, no free
sys.monitoring tool id (3.12+); and path matching through a symlink."""
import importlib.util
import os
import sys

from ldbg_testlib import SINK, h, result, skip_if_unmerged

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "statuses_data")


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    amb_a = load("amb_a", os.path.join(DATA, "a", "amb_mod.py"))
    amb_b = load("amb_b", os.path.join(DATA, "b", "amb_mod.py"))
    link = os.path.join(DATA, "link_mod.py")
    if not os.path.islink(link):
        if os.path.exists(link):
            os.remove(link)
        os.symlink("real_mod.py", link)
    real = load("real_mod", os.path.join(DATA, "real_mod.py"))
    bps = [
        {"id": "armed", "file": "statuses_data/real_mod.py", "line": 7},
        {"id": "pending", "file": "not_imported_yet.py", "line": 3},
        {"id": "not_found", "file": "/nonexistent/dir/app.py", "line": 3},
        {"id": "no_code", "file": "statuses_data/real_mod.py", "line": 6},
        {"id": "module_level", "file": "statuses_data/real_mod.py", "line": 2},
        {"id": "ambiguous", "file": "amb_mod.py", "line": 2},
        {"id": "disambiguated", "file": "b/amb_mod.py", "line": 2},
        {"id": "syntax", "file": "statuses_data/real_mod.py", "line": 7, "condition": "x >"},
        {"id": "bad_line", "file": "statuses_data/real_mod.py", "line": "seven"},
        {"id": "symlink", "file": link, "line": 7},
    ]
    st = {s["id"]: s for s in h.set_breakpoints(bps)}
    skip_if_unmerged(st.values())
    r1 = real.g(1)
    r2 = amb_b.f()
    hits = {k: len(SINK.hits(k)) for k in ("armed", "symlink", "disambiguated")}
    out = {"statuses": st, "hits": hits, "results": [r1, r2, amb_a.f()]}
    h.set_breakpoints([])
    if sys.version_info >= (3, 12):
        taken = []
        for i in range(6):
            try:
                sys.monitoring.use_tool_id(i, "other-tool")
                taken.append(i)
            except ValueError:
                pass
        full = h.set_breakpoints([{"id": "full", "file": "statuses_data/real_mod.py", "line": 7}])
        out["no_tool"] = full[0]
        for i in taken:
            sys.monitoring.free_tool_id(i)
        again = h.set_breakpoints([{"id": "again", "file": "statuses_data/real_mod.py", "line": 7}])
        out["after_tools_freed"] = again[0]["status"]
        h.set_breakpoints([])
    result(out)


main()
