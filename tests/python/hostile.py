"""Hostile objects: none of their methods run during capture, and every limit holds."""
import json
import time

from ldbg_testlib import FAST, SETTINGS_FAST, SINK, arm, h, line_of, result

CALLS = []


class RaisingRepr:
    def __init__(self):
        self.a = 1

    def __repr__(self):
        CALLS.append("repr")
        raise RuntimeError("no")

    __str__ = __repr__


class SlowRepr:
    def __repr__(self):
        CALLS.append("slow-repr")
        time.sleep(2)
        return "slow"


class RecursiveGetattr:
    def __getattr__(self, name):
        CALLS.append("getattr")
        return getattr(self, name + "x")

    def __getattribute__(self, name):
        CALLS.append("getattribute:" + name)
        return object.__getattribute__(self, name)


class EvilDict(dict):
    def __getitem__(self, k):
        CALLS.append("dict-getitem")
        return 0

    def __iter__(self):
        CALLS.append("dict-iter")
        return iter([])

    def keys(self):
        CALLS.append("dict-keys")
        return []

    def items(self):
        CALLS.append("dict-items")
        return []

    def __len__(self):
        CALLS.append("dict-len")
        return 0


class EvilList(list):
    def __iter__(self):
        CALLS.append("list-iter")
        return iter([])

    def __getitem__(self, i):
        CALLS.append("list-getitem")
        return 0

    def __len__(self):
        CALLS.append("list-len")
        return 0


class EvilSet(set):
    def __iter__(self):
        CALLS.append("set-iter")
        return iter([])


class EvilKey:
    def __hash__(self):
        CALLS.append("hash")
        return 1

    def __eq__(self, o):
        CALLS.append("eq")
        return False

    def __repr__(self):
        CALLS.append("key-repr")
        return "k"


class EvilStr(str):
    def __str__(self):
        CALLS.append("str-str")
        return "x"


class EvilInt(int):
    def __repr__(self):
        CALLS.append("int-repr")
        return "x"

    def __index__(self):
        CALLS.append("int-index")
        return 1


class Meta(type):
    def __getattribute__(cls, name):
        CALLS.append("meta:" + name)
        return type.__getattribute__(cls, name)


class WithMeta(metaclass=Meta):
    pass


class Slotted:
    __slots__ = ("x", "secret_token", "unset")

    def __init__(self):
        self.x = 1
        self.secret_token = "t"


class Node:
    def __init__(self):
        self.me = self
        self.items = [self]


class PropObj:
    def __init__(self):
        self.plain = 1

    @property
    def prop(self):
        CALLS.append("property")
        return 2


def target(**objs):
    marker = 1  # BP:t
    return marker


def main():
    big = list(range(10_000_000))
    deep = []
    cur = deep
    for _ in range(10_000):
        nxt = []
        cur.append(nxt)
        cur = nxt
    cyc = [1]
    cyc.append(cyc)
    dcyc = {}
    dcyc["self"] = dcyc
    ed = EvilDict()
    dict.__setitem__(ed, "a", 1)
    dict.__setitem__(ed, "b", 2)
    el = EvilList([1, 2, 3])
    es = EvilSet([1, 2])
    objs = dict(
        raising=RaisingRepr(), slow=SlowRepr(), recursive=RecursiveGetattr(), evil_dict=ed,
        evil_list=el, evil_set=es, evil_keys={EvilKey(): 1}, evil_str=EvilStr("abc"),
        evil_int=EvilInt(5), huge_int=10 ** 5000, big_int=2 ** 100, neg_big=-(2 ** 70),
        nan=float("nan"), inf=float("inf"), ninf=float("-inf"), big=big, deep=deep, cyc=cyc,
        dcyc=dcyc, node=Node(), slotted=Slotted(), prop=PropObj(), with_meta=WithMeta(),
        meta_cls=WithMeta, long_str="x" * 100_000, surrogate="a\udcffb", bytes_=b"\x00\xffabc",
        fset=frozenset([1]),
    )
    line = line_of(__file__, "# BP:t")
    CALLS.clear()  # building the objects above legitimately called __hash__
    arm([{"id": "hostile", "file": "hostile.py", "line": line, "limits": FAST}], SETTINGS_FAST)
    t0 = time.perf_counter()
    target(**objs)
    elapsed = time.perf_counter() - t0
    hits = SINK.hits("hostile")
    raw = [t for k, t in SINK.msgs if k == "hit"]
    # A second breakpoint with a tiny byte budget: the size cut is marked.
    arm([{"id": "small", "file": "hostile.py", "line": line,
          "limits": dict(FAST, max_bytes=2000)}], SETTINGS_FAST)
    SINK.clear()
    target(**objs)
    small = SINK.hits("small")
    small_raw = [t for k, t in SINK.msgs if k == "hit"]
    h.set_breakpoints([])
    loc = hits[0]["$locals_variables"]["objs"] if hits else {}
    result({
        "calls": CALLS,
        "elapsed_s": elapsed,
        "hit_bytes": len(raw[0]) if raw else 0,
        "objs": loc,
        "truncated": hits[0].get("$truncated") if hits else None,
        "small_bytes": len(small_raw[0]) if small_raw else 0,
        "small_truncated": small[0].get("$truncated") if small else None,
        "capture_us": hits[0].get("$capture_us") if hits else None,
    })


main()
