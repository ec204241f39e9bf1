"""Logpoints: messages rendered from the condition language with no user code, redaction,
error markers, conditions, the per-logpoint rate limit, statuses, deferred modules, removal."""
import os
import sys
import tempfile
import threading
import time

from ldbg_testlib import SETTINGS_FAST, SINK, arm, h, line_of, result

CALLS = []


class Hostile:
    """Every hook raises or records: none may run while a message is rendered."""

    def __init__(self):
        self.a = 1
        self.name = "h"

    def __repr__(self):
        CALLS.append("repr")
        raise RuntimeError("repr")

    def __str__(self):
        CALLS.append("str")
        raise RuntimeError("str")

    def __format__(self, spec):
        CALLS.append("format")
        raise RuntimeError("format")

    def __getattr__(self, name):
        CALLS.append("getattr:" + name)
        raise RuntimeError("getattr")

    @property
    def prop(self):
        CALLS.append("property")
        return 1


class Creds:
    def __init__(self):
        self.username = "ann"
        self.apiKey = "k-123"


class Cart:
    def __init__(self, items, coupon):
        self.items = items
        self.coupon = coupon
        self.owner = Creds()


def checkout(cart, subtotal, password, headers, hostile):
    note = "it's"
    ratio = subtotal / 4
    marker = 1  # LP:checkout
    return marker


def spin(i):
    marker = i  # LP:spin
    return marker


def messages(bp_id=None):
    return [m for m in SINK.messages("log") if bp_id is None or m["$breakpoint_id"] == bp_id]


def status_of(bp_id):
    for b in h.status()["breakpoints"]:
        if b["id"] == bp_id:
            return b
    raise LookupError(bp_id)


def main():
    here = os.path.basename(__file__)
    line = line_of(__file__, "# LP:checkout")
    spin_line = line_of(__file__, "# LP:spin")
    msg = ("subtotal={subtotal} coupon={cart.coupon!r} plain={cart.coupon} "
           "items={len(cart.items)} first={cart.items[0]} sum={subtotal + 1} ratio={ratio} "
           "note={note!r} cart={cart} hostile={hostile} hname={hostile.name} "
           "missing={nope} bad={hostile.nothing} pw={password} key={cart.owner.apiKey} "
           "hdr={headers['Cookie']} ok={headers['Accept']} braces={{x}}")
    bps = [
        {"id": "lp", "file": here, "line": line, "log": {"message": msg}},
        {"id": "snap", "file": here, "line": line,
         "limits": {"rate": 1e9, "burst": 1e9}},
        {"id": "cond", "file": here, "line": line, "condition": "subtotal > 100",
         "log": {"message": "big {subtotal}"}},
        {"id": "broken", "file": here, "line": line, "log": {"message": "x={foo()}"}},
        {"id": "spec", "file": here, "line": line, "log": {"message": "x={subtotal:.2f}"}},
        {"id": "rate", "file": here, "line": spin_line, "log": {"message": "i={i}", "rate": 5}},
        {"id": "default-rate", "file": here, "line": spin_line, "log": {"message": "i={i}"}},
    ]
    st = {s["id"]: s for s in arm(bps, SETTINGS_FAST)}
    cart = Cart(["apple", "pear"], "BLACKFRIDAY")
    headers = {"Cookie": "c=1", "Accept": "json"}
    checkout(cart, 50, "hunter2", headers, Hostile())
    checkout(cart, 150, "hunter2", headers, Hostile())
    t = threading.Thread(target=checkout, args=(cart, 7, "x", headers, Hostile()), name="lp-worker")
    t.start()
    t.join()
    logs = messages("lp")
    snaps = SINK.raw_hits("snap")
    big = messages("cond")

    # The rate limit: 1,000 hits at once.
    start = time.monotonic()
    for i in range(1000):
        spin(i)
    burst_elapsed = time.monotonic() - start
    rate_logs = messages("rate")
    default_logs = messages("default-rate")
    statuses = {b: status_of(b) for b in ["lp", "cond", "broken", "spec", "rate", "default-rate"]}

    # A deferred module: pending, then armed when imported.
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "lp_later_mod.py"), "w") as f:
        f.write("def later(v):\n    w = v * 2\n    return w\n")
    arm([{"id": "later", "file": "lp_later_mod.py", "line": 3,
          "log": {"message": "w={w} v={v}"}}], SETTINGS_FAST)
    pending = status_of("later")["status"]
    sys.path.insert(0, d)
    import lp_later_mod  # noqa: E402

    after_import = status_of("later")["status"]
    lp_later_mod.later(21)
    later_logs = messages("later")

    # Removal: nothing fires, nothing is listed.
    h.set_breakpoints([])
    SINK.clear()
    checkout(cart, 50, "hunter2", headers, Hostile())
    spin(1)
    lp_later_mod.later(1)
    after_removal = SINK.messages("log") + SINK.messages("hit")

    result({
        "calls": CALLS,
        "initial": {k: v["status"] for k, v in st.items()},
        "logs": logs,
        "snap_count": len(snaps),
        "big": [m["$message"] for m in big],
        "rate_count": len(rate_logs),
        "default_rate_count": len(default_logs),
        "burst_elapsed": burst_elapsed,
        "statuses": statuses,
        "pending": pending,
        "after_import": after_import,
        "later": [m["$message"] for m in later_logs],
        "after_removal": after_removal,
        "listed_after_removal": h.status()["breakpoints"],
        "line": line,
        "main_thread_ident": threading.main_thread().ident,
    })


main()
