"""With the helper loaded (and its thread running, breakpoints armed), os.fork() in an otherwise
single-threaded process emits no "multi-threaded" DeprecationWarning on 3.12+, the helper thread
comes back in the parent, and both sides keep working."""
import json
import os
import threading
import time
import warnings

from ldbg_testlib import FAST, SETTINGS_FAST, SINK, arm, h, line_of, result


def f(x):
    y = x + 1  # BP:f
    return y


def thread_count():
    with open("/proc/self/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[17])


def settled_thread_count(want, deadline_s=5.0):
    """The kernel's thread count once it reaches `want` (joined threads leave the kernel's list
    slightly after join() returns), or the last count seen at the deadline."""
    end = time.monotonic() + deadline_s
    n = thread_count()
    while n != want and time.monotonic() < end:
        time.sleep(0.005)
        n = thread_count()
    return n


def wait_alive(deadline_s=5.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if h.status()["process"]["helper_thread_alive"]:
            return True
        time.sleep(0.005)
    return False


def main():
    arm([{"id": "fw", "file": "fork_warning.py", "line": line_of(__file__, "# BP:f"),
          "limits": FAST}], SETTINGS_FAST)
    threads_before = thread_count()
    alive_before = wait_alive()  # started at import; it may not have run yet
    caught = []
    forks = 5
    for _ in range(forks):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            r, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(r)
                    SINK.clear()
                    f(2)
                    os.write(wfd, json.dumps({"hits": len(SINK.hits("fw"))}).encode())
                finally:
                    os._exit(0)
            os.close(wfd)
            data = b""
            while chunk := os.read(r, 65536):
                data += chunk
            os.close(r)
            os.waitpid(pid, 0)
        caught.extend(str(x.message) for x in w if "multi-threaded" in str(x.message))
        child = json.loads(data.decode()) if data else None
    alive_after = wait_alive()
    # Forks while another thread keeps hitting the breakpoint (its hits queue up meanwhile),
    # one of them from a thread other than the main thread.
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            f(1)

    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
    worker = threading.Thread(target=hammer)
    worker.start()
    busy_children = []
    for i in range(4):
        def fork_once():
            pid = os.fork()
            if pid == 0:
                os._exit(0 if f(5) == 6 else 1)
            busy_children.append(os.waitpid(pid, 0)[1])
        if i % 2:
            t = threading.Thread(target=fork_once)
            t.start()
            t.join()
        else:
            fork_once()
    stop.set()
    worker.join()
    alive_after_busy = wait_alive()
    SINK.clear()
    f(4)
    parent_hits = len(SINK.hits("fw"))
    h.set_breakpoints([])
    result({"threads_before": threads_before, "alive_before": alive_before,
            "warnings": caught, "busy_children": busy_children,
            "alive_after_busy": alive_after_busy, "child": child, "alive_after": alive_after,
            "parent_hits_after": parent_hits, "threads_after": settled_thread_count(threads_before),
            "python_threads": threading.active_count()})


main()
