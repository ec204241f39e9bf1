"""The captured stack equals the interpreter's own view (sys._getframe chain) — through
generators, coroutines, C calls (sorted(key=...)) and threads — innermost first."""
import asyncio
import sys
import threading

from ldbg_testlib import FAST, SETTINGS_FAST, SINK, arm, h, line_of, result

EXPECTED = []


def walk(f):
    out = []
    while f is not None:
        out.append([f.f_code.co_filename, f.f_code.co_qualname, f.f_lineno])
        f = f.f_back
    return out


def leaf(x):
    y = x  # BP:leaf
    EXPECTED.append(walk(sys._getframe()))
    return y


def via_sorted():
    return sorted([2, 1], key=leaf)


def gen():
    yield leaf(3)


async def coro():
    await asyncio.sleep(0)
    return leaf(4)


def deep(n):
    if n == 0:
        return leaf(5)
    return deep(n - 1)


def main():
    line = line_of(__file__, "# BP:leaf")
    arm([{"id": "st", "file": "stack.py", "line": line, "limits": FAST}], SETTINGS_FAST)
    leaf(0)
    via_sorted()
    list(gen())
    asyncio.run(coro())
    deep(30)
    deep(100)
    t = threading.Thread(target=leaf, args=(6,), name="stack-thread")
    t.start()
    t.join()
    hits = SINK.hits("st")
    h.set_breakpoints([])
    cases = []
    for hit, exp in zip(hits, EXPECTED):
        got = hit["$stack_trace"]
        exp = exp[:64]
        # The walk ran one line below the breakpoint in the innermost frame.
        exp[0][2] = line
        cases.append({"same": got == exp, "got": got if got != exp else None,
                      "expected": exp if got != exp else None, "depth": len(got)})
    result({"hits": len(hits), "expected": len(EXPECTED), "cases": cases})


main()
