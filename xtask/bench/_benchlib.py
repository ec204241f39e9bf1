"""Shared pieces of the benchmark scripts (stdlib only; CPython 3.11, 3.12, 3.13).

Every script in this folder is run by `cargo xtask bench` (xtask/src/bench/): it takes its
parameters on the command line and prints exactly one JSON object on the last line of stdout.
On failure it prints `{"error": "..."}` and exits with status 3, so the harness can report the
figure as N/A with that reason instead of a number.

Scripts started with `--wait-go` print `{"ready": <pid>, ...}` first and then wait for one line
on stdin before doing the measured work: the harness uses the pause to attach the agent or a
tracer, and starts the clock only when the process is really being observed.
"""

import json
import os
import sys

# Every benchmark process carries this word in its command line, so the agent's selectors can be
# limited to them (`[selectors] include = [{cmdline = "libdebugger-bench"}]`) and other Python
# processes on the host are never touched by a benchmark run.
TAG = "--libdebugger-bench"


def emit(obj):
    """Prints one JSON line and flushes it (the harness reads stdout line by line)."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def fail(message):
    """Reports an error the harness turns into an N/A with this reason, and exits."""
    emit({"error": message})
    sys.exit(3)


def python_version():
    v = sys.version_info
    return f"{v.major}.{v.minor}.{v.micro}"


def wait_go(extra=None):
    """Announces readiness and blocks until the harness writes a line to stdin."""
    msg = {"ready": os.getpid(), "python": python_version()}
    if extra:
        msg.update(extra)
    emit(msg)
    line = sys.stdin.readline()
    if not line:
        fail("stdin closed before the harness said go")


def percentile(sorted_values, p):
    """Nearest-rank percentile (p in 0..100) of an already sorted, non-empty list."""
    if not sorted_values:
        raise ValueError("percentile of an empty list")
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil(n * p / 100), at least 1
    return sorted_values[int(rank) - 1]


def summarize(samples):
    """Median, p99, mean, min and max of a list of numbers."""
    s = sorted(samples)
    return {
        "n": len(s),
        "median": percentile(s, 50),
        "p99": percentile(s, 99),
        "mean": sum(s) / len(s),
        "min": s[0],
        "max": s[-1],
    }


def import_helper():
    """Imports the helper (target/helper on PYTHONPATH) or fails with a reason."""
    try:
        import libdebugger_helper  # noqa: PLC0415 (optional dependency)
    except ImportError as exc:
        fail(f"cannot import libdebugger_helper: {exc} (run `cargo xtask build-helper`)")
    for name in ("set_breakpoints", "status", "set_sink"):
        if not hasattr(libdebugger_helper, name):
            fail(f"libdebugger_helper has no `{name}` yet (issue 3 not landed)")
    return libdebugger_helper


def find_marker_lines(path, marker):
    """Line numbers (1-based) of the lines of `path` that contain `marker`."""
    with open(path, encoding="utf-8") as f:
        return [i for i, line in enumerate(f, start=1) if marker in line]


def statuses(result):
    """Normalises set_breakpoints()' return value to a list of dicts (it may be a list or a dict
    keyed by id)."""
    if isinstance(result, dict):
        out = []
        for key, value in result.items():
            item = dict(value) if isinstance(value, dict) else {"status": value}
            item.setdefault("id", key)
            out.append(item)
        return out
    if isinstance(result, (list, tuple)):
        return [dict(x) if isinstance(x, dict) else {"status": x} for x in result]
    return []


def arm(helper, breakpoints, settings=None):
    """Sets `breakpoints` (with process `settings` if given) and fails unless every one reports
    `armed`."""
    if settings:
        result = helper.set_breakpoints(breakpoints, settings)
    else:
        result = helper.set_breakpoints(breakpoints)
    st = statuses(result)
    bad = [s for s in st if str(s.get("status", "")).lower() != "armed"]
    if bad or len(st) != len(breakpoints):
        fail(f"breakpoints not armed: {json.dumps(st, default=repr)[:500]}")
    return st


def bench_settings():
    """Process settings for `set_breakpoints(..., settings)` from LIBDEBUGGER_BENCH_SETTINGS
    (JSON), e.g. a lifted per-process rate cap for B2; None when unset."""
    raw = os.environ.get("LIBDEBUGGER_BENCH_SETTINGS", "")
    if not raw:
        return None
    try:
        settings = json.loads(raw)
    except ValueError as exc:
        fail(f"LIBDEBUGGER_BENCH_SETTINGS is not JSON: {exc}")
    return settings


def counter(status, bp_id, names):
    """The first of the counters `names` of breakpoint `bp_id` in a status() report (0 when
    absent): the report is read tolerantly, as a dict with a `breakpoints` list or a list."""
    items = status.get("breakpoints", []) if isinstance(status, dict) else status
    for bp in items or []:
        if isinstance(bp, dict) and bp.get("id") == bp_id:
            counters = bp.get("counters") or {}
            for name in names:
                if isinstance(counters.get(name), (int, float)):
                    return counters[name]
    return 0


class Sink:
    """An in-process sink: `sink(kind, json_text)` (or `sink(json_text)`); keeps hit sizes."""

    def __init__(self):
        self.hits = 0
        self.sizes = []

    def __call__(self, *args):
        kind = args[0] if len(args) > 1 else "hit"
        if kind == "hit":
            self.hits += 1
            if len(self.sizes) < 1000:
                self.sizes.append(len(args[-1]))


def bench_limits():
    """Extra keys merged into every breakpoint the benches set, from LIBDEBUGGER_BENCH_BP_EXTRA
    (JSON). The harness uses it to lift the per-breakpoint rate limit where a figure measures
    the capture itself (B2, B5); see HELPER_UNLIMITED in xtask/src/bench/pieces.rs."""
    raw = os.environ.get("LIBDEBUGGER_BENCH_BP_EXTRA", "")
    if not raw:
        return {}
    try:
        extra = json.loads(raw)
    except ValueError as exc:
        fail(f"LIBDEBUGGER_BENCH_BP_EXTRA is not JSON: {exc}")
    if not isinstance(extra, dict):
        fail("LIBDEBUGGER_BENCH_BP_EXTRA must be a JSON object")
    return extra
