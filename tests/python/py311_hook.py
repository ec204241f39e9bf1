"""3.11 hit path without the bytecode patcher: breakpoints are recorded in test mode and the
function calls the hook exactly as patched bytecode will (`hook(code, line)`), so capture,
conditions (locals-dict path: no PyFrame_GetVar), stack (PyFrame_GetBack path), thread name,
redaction and limits are exercised on 3.11 interpreters."""
import sys
import threading

from ldbg_testlib import FAST, SETTINGS_FAST, SINK, counters, h, line_of, result

if sys.version_info[:2] != (3, 11):
    print("SKIP only meaningful on 3.11 (3.12+ arm with sys.monitoring)")
    sys.exit(0)

HOOK = h._test_manual_hook(True)
LINE = None


class Obj:
    __slots__ = ("a", "token")

    def __init__(self):
        self.a = [1, 2, {"k": "v"}]
        self.token = "secret"


def target(n, **kw):
    obj = Obj()
    password = "hunter2"
    cell = n * 2

    def inner():
        return cell

    HOOK(target.__code__, LINE)  # stands for the patched bytecode at the breakpoint line
    y = n + inner()  # BP:t
    return y


def main():
    global LINE
    LINE = line_of(__file__, "# BP:t")
    st = h.set_breakpoints([
        {"id": "plain", "file": "py311_hook.py", "line": LINE, "limits": FAST},
        {"id": "cond_true", "file": "py311_hook.py", "line": LINE, "condition": "n > 1 and cell == 2 * n and len(kw) == 1", "limits": FAST},
        {"id": "cond_false", "file": "py311_hook.py", "line": LINE, "condition": "n < 0", "limits": FAST},
        {"id": "cond_err", "file": "py311_hook.py", "line": LINE, "condition": "missing > 0", "limits": FAST},
        {"id": "glob", "file": "py311_hook.py", "line": LINE, "condition": "LINE > 0 and len('abc') == 3", "limits": FAST},
    ], SETTINGS_FAST)
    r = [target(3, extra=1)]
    t = threading.Thread(target=lambda: r.append(target(5, extra=2)), name="worker-311")
    t.start()
    t.join()
    hits = SINK.hits()
    by_id = {}
    for x in hits:
        by_id.setdefault(x["$breakpoint_id"], []).append(x)
    out = {
        "statuses": [s["status"] for s in st],
        "results": r,
        "fired": {k: len(v) for k, v in by_id.items()},
        "counters": {k: counters(k) for k in ("plain", "cond_true", "cond_false", "cond_err", "glob")},
        "locals": by_id["plain"][0]["$locals_variables"] if "plain" in by_id else None,
        "stack": by_id["plain"][0]["$stack_trace"] if "plain" in by_id else None,
        "threads": sorted({x["$thread_name"] for x in hits}),
    }
    h.set_breakpoints([])
    h._test_manual_hook(False)
    result(out)


main()
