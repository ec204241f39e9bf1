"""A breakpoint set while a worker thread is already inside a loop fires in that running frame
(3.12+: sys.monitoring local events reach frames already executing)."""
import threading
import time

from ldbg_testlib import FAST, SINK, arm, counters, h, line_of, result

stop = threading.Event()
progress = [0]


def worker():
    i = 0
    while not stop.is_set():
        i += 1  # BP:loop
        progress[0] = i
        time.sleep(0.001)


def main():
    t = threading.Thread(target=worker, name="worker-1")
    t.start()
    deadline = time.monotonic() + 10
    while progress[0] < 5 and time.monotonic() < deadline:
        time.sleep(0.001)
    iterations_before = progress[0]
    st = arm([{"id": "loop", "file": "running_loop.py", "line": line_of(__file__, "# BP:loop"),
               "limits": FAST}])
    deadline = time.monotonic() + 10
    hits = []
    while time.monotonic() < deadline and not hits:
        hits = SINK.hits("loop")
    stop.set()
    t.join()
    c = counters("loop")
    h.set_breakpoints([])
    result({
        "status": st[0]["status"],
        "hits": len(hits),
        "thread_name": hits[0]["$thread_name"] if hits else None,
        "thread_id_matches": bool(hits) and hits[0]["$thread_id"] == t.ident,
        "locals": hits[0]["$locals_variables"] if hits else None,
        "counters": c,
        "iterations_before": iterations_before,
    })


main()
