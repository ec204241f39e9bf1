"""Shared helpers for the helper's in-process tests (run by tests/tests/helper_*.rs)."""
import json
import sys
import threading

import libdebugger_helper as h

FAST = {"rate": 1e9, "burst": 1e9}
SETTINGS_FAST = {"process_rate": 1e9, "cpu_budget": 1.0}


class Sink:
    """Collects every message the helper thread delivers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.msgs = []

    def __call__(self, kind, text):
        with self.lock:
            self.msgs.append((kind, text))

    def messages(self, kind):
        assert h.flush(10.0), "flush timed out"
        with self.lock:
            return [json.loads(t) for k, t in self.msgs if k == kind]

    def hits(self, bp_id=None):
        return [m for m in self.messages("hit") if bp_id is None or m["$breakpoint_id"] == bp_id]

    def clear(self):
        h.flush(10.0)
        with self.lock:
            self.msgs.clear()


SINK = Sink()
h.set_sink(SINK)


def line_of(path, marker):
    """1-based line number of the line containing `marker`."""
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if marker in line:
                return i
    raise LookupError(marker)


def skip_if_unmerged(statuses):
    """Skips the whole script on 3.11 while the bytecode patcher is not merged."""
    for s in statuses:
        if "3.11 support not merged yet" in s.get("reason", ""):
            print("SKIP Python 3.11 arming (bytecode patcher) is not merged into this branch yet")
            sys.exit(0)


def arm(bps, settings=None):
    """set_breakpoints (see skip_if_unmerged)."""
    st = h.set_breakpoints(bps, settings)
    skip_if_unmerged(st)
    return st


def counters(bp_id):
    for b in h.status()["breakpoints"]:
        if b["id"] == bp_id:
            return b["counters"]
    raise LookupError(bp_id)


def result(obj):
    print("RESULT " + json.dumps(obj), flush=True)
