"""Stress: worker threads run instrumented functions while a controller thread keeps changing
the breakpoint set (arming, disarming, conditions, limits), another imports and reloads a
watched module, and the main thread forces garbage collections. The application's results
stay correct, nothing is raised into it, and the helper reports no callback errors."""
import gc
import importlib
import sys
import threading
import time

from ldbg_testlib import SINK, h, line_of, result, skip_if_unmerged

DURATION = float(__import__("os").environ.get("LDBG_STRESS_SECONDS", "3"))
stop = threading.Event()
errors = []


class Payload:
    def __init__(self, i):
        self.i = i
        self.items = list(range(i % 50))
        self.nested = {"a": [self], "b": {"c": i}}


def work(i):
    p = Payload(i)  # BP:a
    total = sum(p.items)  # BP:b
    if i % 3 == 0:
        total += len(p.nested)  # BP:c
    return total


def expected(i):
    return sum(range(i % 50)) + (2 if i % 3 == 0 else 0)


def worker(n):
    i = 0
    while not stop.is_set():
        try:
            if work(i) != expected(i):
                errors.append(("wrong result", n, i))
        except BaseException as e:  # noqa: BLE001
            errors.append(("raised", n, repr(e)))
        i += 1


def controller(lines):
    k = 0
    sets = [
        [],
        [{"id": "a", "file": "stress.py", "line": lines["a"]}],
        [{"id": "a", "file": "stress.py", "line": lines["a"], "condition": "i % 7 == 0"},
         {"id": "b", "file": "stress.py", "line": lines["b"], "limits": {"rate": 1000, "burst": 100}}],
        [{"id": "c", "file": "stress.py", "line": lines["c"], "condition": "p.missing > 1"},
         {"id": "b2", "file": "stress.py", "line": lines["b"], "condition": "total >= 0 and len(p.items) < 10"}],
        [{"id": "d", "file": "deferred_mod.py", "line": lines["d"]},
         {"id": "b", "file": "stress.py", "line": lines["b"], "limits": {"rate": 1000, "burst": 100}}],
    ]
    while not stop.is_set():
        try:
            skip_if_unmerged(h.set_breakpoints(sets[k % len(sets)]))
        except SystemExit:
            raise
        except BaseException as e:  # noqa: BLE001
            errors.append(("set_breakpoints raised", repr(e)))
        k += 1
        time.sleep(0.005)


def importer():
    import deferred_mod

    while not stop.is_set():
        try:
            importlib.reload(deferred_mod)
            deferred_mod.compute(2)
        except BaseException as e:  # noqa: BLE001
            errors.append(("import raised", repr(e)))
        time.sleep(0.01)


def main():
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    lines = {k: line_of(__file__, f"# BP:{k}") for k in "abc"}
    lines["d"] = line_of(os.path.join(here, "deferred_mod.py"), "# BP:compute")
    skip_if_unmerged(h.set_breakpoints([{"id": "a", "file": "stress.py", "line": lines["a"]}]))
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=controller, args=(lines,)))
    threads.append(threading.Thread(target=importer))
    for t in threads:
        t.start()
    t_end = time.monotonic() + DURATION
    collections = 0
    while time.monotonic() < t_end:
        gc.collect()
        collections += 1
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    st = h.status()
    hits = SINK.hits()
    h.set_breakpoints([])
    tool_after = None
    if sys.version_info >= (3, 12):
        tool = st["process"]["tool_id"]
        tool_after = sys.monitoring.get_tool(tool) if tool is not None else None
    result({
        "errors": errors[:20],
        "collections": collections,
        "callbacks": st["process"]["callbacks"],
        "callback_errors": st["process"]["callback_errors"],
        "import_hook_errors": st["process"]["import_hook_errors"],
        "hits_delivered": len(hits),
        "tool_after": tool_after,
        "finders_after": sum(1 for f in sys.meta_path if type(f).__name__ == "LibdebuggerFinder"),
    })


main()
