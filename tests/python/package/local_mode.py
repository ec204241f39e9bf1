"""Local mode of the libdebugger package: breakpoints from a list and from a TOML file, hits
to a callback sink, bad input, status(). Prints `RESULT <json>`."""

import json
import os
import sys
import tempfile
import threading
import time

from libdebugger import Breakpoint, LiveDebuggerManager
import libdebugger


def price(qty, unit):
    subtotal = qty * unit
    api_key = "phc_should_not_leak"
    return subtotal  # BP:price


def line_of(marker):
    with open(__file__) as f:
        for i, l in enumerate(f, 1):
            if l.rstrip().endswith("# " + marker):
                return i
    raise SystemExit(f"no marker {marker}")


LINE = line_of("BP:price")
out = {"version": libdebugger.__version__}

# Bad input: specific errors, nothing armed.
errors = {}
for name, make in {
    "no_client_no_sink": lambda: LiveDebuggerManager(),
    "sink_without_breakpoints": lambda: LiveDebuggerManager(sink=print),
    "bad_interval": lambda: LiveDebuggerManager(client=object(), poll_interval=0),
    "not_a_breakpoint": lambda: LiveDebuggerManager(sink=print, breakpoints=[("a.py", 1)]),
    "missing_file": lambda: LiveDebuggerManager.from_file("/nonexistent/breakpoints.toml", sink=print),
}.items():
    try:
        make()
        errors[name] = None
    except (ValueError, TypeError) as e:
        errors[name] = f"{type(e).__name__}: {e}"
out["errors"] = errors

# A list of Breakpoints, a sink, a condition.
events = []
got = threading.Event()


def sink(event):
    events.append(event)
    if len(events) >= 2:
        got.set()


m = LiveDebuggerManager(
    breakpoints=[Breakpoint("local-1", "package/local_mode.py", LINE, "qty > 1")],
    sink=sink,
)
m.start()
out["list_status"] = m.status()
for q in range(4):
    price(q, 2.5)
got.wait(10)
m.flush()
out["list_events"] = events[:]
out["list_counters"] = m.status()["breakpoints"]
m.stop()
out["after_stop"] = {"enabled": m.enabled, "breakpoints": m.status()["breakpoints"]}

# A TOML file, re-read when it changes.
d = tempfile.mkdtemp()
path = os.path.join(d, "breakpoints.toml")
with open(path, "w") as f:
    f.write(f'[[breakpoint]]\nid = "file-1"\nfile = "local_mode.py"\nline = {LINE}\n')
file_events = []
m = LiveDebuggerManager.from_file(path, sink=file_events.append)
m.start()
price(3, 1.0)
m.flush()
out["file_events"] = file_events[:]
# An edit: another id; a malformed edit keeps it.
changed = threading.Event()
with open(path + ".new", "w") as f:
    f.write(f'[[breakpoint]]\nid = "file-2"\nfile = "local_mode.py"\nline = {LINE}\n')
os.replace(path + ".new", path)
deadline = time.monotonic() + 10
while time.monotonic() < deadline and [b.uuid for b in m.breakpoints] != ["file-2"]:
    time.sleep(0.01)
out["after_edit"] = [b.uuid for b in m.breakpoints]

# os.fork(): the child keeps its breakpoints and watches the file again (its own thread).
r, w = os.pipe()
child_pid = os.fork()
if child_pid == 0:
    try:
        os.close(r)
        child = {}
        before = len(file_events)
        price(5, 1.0)
        m.flush()
        child["hit"] = [e["properties"]["$breakpoint_id"] for e in file_events[before:]]
        with open(path + ".child", "w") as f:
            f.write(f'[[breakpoint]]\nid = "file-3"\nfile = "local_mode.py"\nline = {LINE}\n')
        os.replace(path + ".child", path)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and [b.uuid for b in m.breakpoints] != ["file-3"]:
            time.sleep(0.01)
        child["after_edit"] = [b.uuid for b in m.breakpoints]
        os.write(w, json.dumps(child).encode())
    finally:
        os._exit(0)
os.close(w)
data = b""
while True:
    chunk = os.read(r, 65536)
    if not chunk:
        break
    data += chunk
os.waitpid(child_pid, 0)
out["fork_child"] = json.loads(data or b"null")
with open(path, "w") as f:
    f.write("[[breakpoint]]\nfile = \n")
deadline = time.monotonic() + 10
while time.monotonic() < deadline and not (m.status()["source"] or {}).get("last_error"):
    time.sleep(0.01)
out["after_bad_edit"] = [b.uuid for b in m.breakpoints]
out["file_source"] = m.status()["source"]
m.stop()
print("RESULT " + json.dumps(out))
