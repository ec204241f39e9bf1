"""B4: a target process for attach latency, in one of the three cases of issue 4, item 2.

    python3 b4_target.py --case busy|blocked|idle [--libdebugger-bench]

busy     8 threads churn the allocator in C (json.dumps/loads, bytes building) and call
         `work()`, whose marked line carries the breakpoint;
blocked  the main thread waits forever on threading.Event().wait(); one worker calls `work()`;
idle     every thread sleeps (the breakpoint's function is never called; it is armed all the
         same, which is what the figure measures).
Prints {"ready": pid, "line": <breakpoint line>} once every thread is running, then runs until
killed.
"""

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _benchlib  # noqa: E402

BP_MARK = "# bench: " + "attach line"


def work(i):
    payload = {"i": i, "items": list(range(20)), "name": "x" * 32}
    return len(json.loads(json.dumps(payload)))  # bench: attach line


def churn(stop):
    i = 0
    while not stop.is_set():
        work(i)
        blob = b"".join(bytes([j % 256]) * 64 for j in range(32))
        json.loads(json.dumps({"blob": blob.hex()}))
        i += 1


def worker(stop):
    i = 0
    while not stop.is_set():
        work(i)
        time.sleep(0.001)
        i += 1


def sleeper():
    while True:
        time.sleep(3600)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", choices=("busy", "blocked", "idle"), default="idle")
    ap.add_argument(_benchlib.TAG, action="store_true")
    args = ap.parse_args()
    stop = threading.Event()
    here = os.path.abspath(__file__)
    (line,) = _benchlib.find_marker_lines(here, BP_MARK)
    if args.case == "busy":
        for _ in range(8):
            threading.Thread(target=churn, args=(stop,), daemon=True).start()
    elif args.case == "blocked":
        threading.Thread(target=worker, args=(stop,), daemon=True).start()
    else:
        threading.Thread(target=sleeper, daemon=True).start()
    _benchlib.emit({"ready": os.getpid(), "python": _benchlib.python_version(),
                    "file": here, "line": line, "case": args.case})
    if args.case == "blocked":
        threading.Event().wait()
    elif args.case == "busy":
        while True:
            time.sleep(3600)
    else:
        sleeper()


if __name__ == "__main__":
    main()
