"""A target for the agent's end-to-end tests. Knows nothing about libdebugger.

Prints `ready <pid>`, then obeys one command per stdin line on a reader thread while the main
thread blocks forever in `threading.Event().wait()` (so with no command running, every thread
sleeps). Each command prints one line when done:

  call N        call agent_mod.checkout N times on the reader thread   -> `called N`
  workers K     K threads call checkout every 5 ms                      -> `workers K`
  churn K       K threads churn the allocator in C (json, bytes) and call checkout
                                                                        -> `churn K`
  ping S        agent_mod.ping(S) once (a sentinel breakpoint)       -> `pinged S`
  map N         list(map(checkout, ...)): calls entered from C          -> `mapped N`
  import        import agent_deferred; a thread calls late() every 5 ms -> `imported`
  fork          os.fork(); the child calls checkout every 5 ms for 60 s -> `forked <child pid>`
  mp            multiprocessing (fork start method) child, same loop     -> `mp <child pid>`
  tools         sys.monitoring tool ids in use                          -> `tools <json>`
  maps          count of helper mappings in /proc/self/maps             -> `maps <n>`
  alive         liveness check                                          -> `alive <calls>`
  exit          os._exit(0)
"""
import json
import os
import sys
import threading
import time

import agent_mod

calls = 0
calls_lock = threading.Lock()


def call_checkout(i):
    global calls
    result = agent_mod.checkout(i, 21)
    with calls_lock:
        calls += 1
    return result


def loop_forever(period):
    i = 0
    while True:
        i += 1
        call_checkout(i)
        time.sleep(period)


def churn():
    i = 0
    while True:
        i += 1
        doc = {"k%d" % j: [j, str(j) * 8, {"x": j}] for j in range(64)}
        json.loads(json.dumps(doc))
        b = bytearray()
        for j in range(256):
            b += bytes([j]) * 16
        bytes(b)
        if i % 20 == 0:
            call_checkout(i)


def child_loop():
    deadline = time.monotonic() + 60
    i = 0
    while time.monotonic() < deadline:
        i += 1
        agent_mod.checkout(i, 7)
        time.sleep(0.005)
    os._exit(0)


def start(fn, *args):
    threading.Thread(target=fn, args=args, daemon=True).start()


def say(line):
    print(line, flush=True)


def helper_mappings():
    """Distinct helper files mapped into this process (one per injected helper)."""
    inodes = set()
    with open("/proc/self/maps") as f:
        for line in f:
            if "libdebugger-helper" in line or "libdebugger_helper" in line:
                inodes.add(line.split()[4])
    return len(inodes)


def commands():
    for raw in sys.stdin:
        cmd, _, arg = raw.strip().partition(" ")
        if cmd == "call":
            for i in range(int(arg)):
                call_checkout(i)
            say("called %s" % arg)
        elif cmd == "workers":
            for _ in range(int(arg)):
                start(loop_forever, 0.005)
            say("workers %s" % arg)
        elif cmd == "churn":
            for _ in range(int(arg)):
                start(churn)
            say("churn %s" % arg)
        elif cmd == "ping":
            agent_mod.ping(int(arg))
            say("pinged %s" % arg)
        elif cmd == "map":
            list(map(agent_mod.checkout, range(int(arg)), [3] * int(arg)))
            say("mapped %s" % arg)
        elif cmd == "import":
            import agent_deferred

            def late_loop():
                n = 0
                while True:
                    n += 1
                    agent_deferred.late(n)
                    time.sleep(0.005)

            start(late_loop)
            say("imported")
        elif cmd == "fork":
            pid = os.fork()
            if pid == 0:
                child_loop()
            say("forked %d" % pid)
        elif cmd == "mp":
            import multiprocessing

            p = multiprocessing.get_context("fork").Process(target=child_loop, daemon=True)
            p.start()
            say("mp %d" % p.pid)
        elif cmd == "tools":
            mon = getattr(sys, "monitoring", None)
            tools = {}
            if mon is not None:
                for tool_id in range(6):
                    name = mon.get_tool(tool_id)
                    if name is not None:
                        tools[str(tool_id)] = name
            say("tools %s" % json.dumps(tools))
        elif cmd == "maps":
            say("maps %d" % helper_mappings())
        elif cmd == "alive":
            with calls_lock:
                say("alive %d" % calls)
        elif cmd == "exit":
            os._exit(0)
        else:
            say("unknown %s" % cmd)
    os._exit(0)


if __name__ == "__main__":
    start(commands)
    say("ready %d" % os.getpid())
    threading.Event().wait()
