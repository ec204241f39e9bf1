"""A forked child keeps its breakpoints, gets a fresh helper thread, queue and counters."""
import json
import os

from ldbg_testlib import FAST, SETTINGS_FAST, SINK, arm, counters, h, line_of, result


def f(x):
    y = x + 1  # BP:f
    return y


def main():
    arm([{"id": "fk", "file": "fork.py", "line": line_of(__file__, "# BP:f"), "limits": FAST}],
        SETTINGS_FAST)
    f(1)
    parent_hits = len(SINK.hits("fk"))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            SINK.clear()
            before = counters("fk")
            f(2)
            f(3)
            hits = SINK.hits("fk")
            out = {
                "counters_before": before,
                "hits": len(hits),
                "pids": sorted({x["$pid"] for x in hits}),
                "child_pid": os.getpid(),
                "locals": [x["$locals_variables"]["x"] for x in hits],
            }
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    child = json.loads(data.decode()) if data else None
    SINK.clear()
    f(4)
    parent_after = len(SINK.hits("fk"))
    h.set_breakpoints([])
    result({"parent_hits": parent_hits, "child": child, "parent_pid": os.getpid(),
            "parent_after": parent_after})


main()
