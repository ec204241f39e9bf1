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

    def raw_hits(self, bp_id=None):
        """Hits exactly as the helper sent them (PostHog's shape)."""
        return [m for m in self.messages("hit") if bp_id is None or m["$breakpoint_id"] == bp_id]

    def hits(self, bp_id=None):
        """Hits decoded for reading: locals as values, frames as [file, function, line]."""
        return [decode_hit(m) for m in self.raw_hits(bp_id)]

    def clear(self):
        h.flush(10.0)
        with self.lock:
            self.msgs.clear()


def decode_hit(hit):
    """Undoes PostHog's shape of a hit (helper/src/posthog.rs), checking it on the way: every
    `$locals_variables` value is a JSON string (jsonpickle's encoding) and every frame an object
    whose `file`/`function`/`line` equal its `"0"`/`"1"`/`"2"`."""
    out = dict(hit)
    locals_ = {}
    for name, text in hit["$locals_variables"].items():
        assert isinstance(text, str), f"local {name} is not a JSON string: {text!r}"
        locals_[name] = json.loads(text)
    out["$locals_variables"] = locals_
    frames = []
    for f in hit["$stack_trace"]:
        assert isinstance(f, dict), f"frame is not an object: {f!r}"
        assert (f["file"], f["function"], f["line"]) == (f["0"], f["1"], f["2"]), f
        frames.append([f["file"], f["function"], f["line"]])
    out["$stack_trace"] = frames
    return out


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
