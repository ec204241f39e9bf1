"""Many threads hitting the same breakpoint concurrently: every hit counted, every snapshot
well-formed and attributed to the right thread."""
import threading

from ldbg_testlib import FAST, SETTINGS_FAST, SINK, arm, counters, h, line_of, result

N_THREADS = 8
N_CALLS = 200


def work(tag, i):
    y = (tag, i)  # BP:w
    return y


def runner(tag, barrier, out):
    barrier.wait()
    for i in range(N_CALLS):
        out.append(work(tag, i))


def main():
    arm([{"id": "c", "file": "concurrency.py", "line": line_of(__file__, "# BP:w"), "limits": FAST}],
        SETTINGS_FAST)
    barrier = threading.Barrier(N_THREADS)
    outs = [[] for _ in range(N_THREADS)]
    threads = [threading.Thread(target=runner, args=(f"t{n}", barrier, outs[n]), name=f"t{n}")
               for n in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    hits = SINK.hits("c")
    c = counters("c")
    wrong = [x for x in hits if x["$locals_variables"]["tag"] != x["$thread_name"]]
    h.set_breakpoints([])
    result({
        "expected": N_THREADS * N_CALLS,
        "results_ok": all(len(o) == N_CALLS for o in outs),
        "hits_counter": c["hits"], "captured": c["captured"], "dropped": c["dropped"],
        "delivered": len(hits), "misattributed": len(wrong),
        "threads_seen": sorted({x["$thread_name"] for x in hits}),
    })


main()
