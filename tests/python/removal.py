"""Removing every breakpoint leaves no residue: tool id free, no callback, no events, no finder,
no further hits; the function behaves as before."""
import sys

from ldbg_testlib import FAST, SINK, arm, h, line_of, result


def f(x):
    y = x + 1  # BP:f
    return y


def main():
    st = arm([{"id": "r", "file": "removal.py", "line": line_of(__file__, "# BP:f"), "limits": FAST}])
    f(1)
    hits_armed = len(SINK.hits("r"))
    code_msgs = SINK.messages("code_objects")
    status_msgs = SINK.messages("status")
    tool = h.status()["process"]["tool_id"]
    # Idempotent: the same set again changes nothing and keeps counters.
    st_again = h.set_breakpoints([{"id": "r", "file": "removal.py", "line": line_of(__file__, "# BP:f"), "limits": FAST}])
    h.set_breakpoints([])
    SINK.clear()
    r = f(41)
    out = {
        "armed": st[0]["status"],
        "idempotent_hits_kept": st_again[0]["counters"]["hits"],
        "hits_armed": hits_armed,
        "hits_after": len(SINK.hits("r")),
        "result_after": r,
        "code_objects_msg": [b for m in code_msgs for b in m["breakpoints"]],
        "status_msg_ids": [b["id"] for m in status_msgs for b in m.get("breakpoints", [])],
        "f_code_addr": id(f.__code__),
        "finders": sum(1 for x in sys.meta_path if type(x).__name__ == "LibdebuggerFinder"),
        "status_after": h.status(),
    }
    if sys.version_info >= (3, 12):
        out["tool_before"] = tool
        out["tool_after"] = sys.monitoring.get_tool(tool) if tool is not None else "no tool"
        out["local_events_after"] = sys.monitoring.get_local_events(tool, f.__code__) if tool is not None else None
    h.shutdown()
    result(out)


main()
