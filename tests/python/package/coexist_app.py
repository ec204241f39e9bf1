"""A target for the coexistence test: runs in a venv with the libdebugger package; the agent
may debug it, and on command it debugs itself in process.

Commands on stdin (one per line), each answered with one line:
  call <n>                -> called <result>
  start_inprocess <id> <line> -> started      (a LiveDebuggerManager with that breakpoint, a sink)
  events                  -> events <json>    (the in-process events so far)
  stop                    -> stopped
  agent_helper            -> agent_helper <json> (the host agent's helper's status(), or null)
"""

import json
import os
import sys

from libdebugger import Breakpoint, LiveDebuggerManager


def checkout(n):
    basket = {"n": n, "tags": ["a", "b"]}
    password = "hunter2"
    total = n * 3
    return total  # BP:coexist


print(f"ready {os.getpid()}", flush=True)
manager = None
events = []
for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "call":
        print(f"called {checkout(int(cmd[1]))}", flush=True)
    elif cmd[0] == "start_inprocess":
        manager = LiveDebuggerManager(
            breakpoints=[Breakpoint(cmd[1], "package/coexist_app.py", int(cmd[2]))],
            sink=events.append,
        )
        manager.start()
        print("started", flush=True)
    elif cmd[0] == "events":
        if manager is not None:
            manager.flush()
        print("events " + json.dumps(events), flush=True)
    elif cmd[0] == "agent_helper":
        h = sys.modules.get("libdebugger_helper")
        print("agent_helper " + json.dumps(h.status() if h else None), flush=True)
    elif cmd[0] == "stop":
        manager.stop()
        print("stopped", flush=True)
