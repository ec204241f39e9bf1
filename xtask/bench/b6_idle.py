"""B6: an idle Python process the agent attaches to (the footprint figure).

    python3 b6_idle.py [--libdebugger-bench]

Ten functions, each with a marked line for one of B6's ten breakpoints; none is ever called.
Prints {"ready": pid, "file": ..., "lines": [...]} and sleeps until killed.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _benchlib  # noqa: E402

BP_MARK = "# bench: " + "idle line"


def f0(x):
    return x + 0  # bench: idle line


def f1(x):
    return x + 1  # bench: idle line


def f2(x):
    return x + 2  # bench: idle line


def f3(x):
    return x + 3  # bench: idle line


def f4(x):
    return x + 4  # bench: idle line


def f5(x):
    return x + 5  # bench: idle line


def f6(x):
    return x + 6  # bench: idle line


def f7(x):
    return x + 7  # bench: idle line


def f8(x):
    return x + 8  # bench: idle line


def f9(x):
    return x + 9  # bench: idle line


def main():
    here = os.path.abspath(__file__)
    _benchlib.emit({"ready": os.getpid(), "python": _benchlib.python_version(), "file": here,
                    "lines": _benchlib.find_marker_lines(here, BP_MARK)})
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
