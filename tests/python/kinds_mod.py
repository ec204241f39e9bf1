"""Every kind of function the resolver must find. Lines marked `# BP:<name>` get breakpoints."""
import asyncio
import functools


def deco(fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        return fn(*a, **k)

    return wrapper


class Thing:
    def __init__(self, v):
        self._v = v

    def method(self, x):
        y = x + self._v  # BP:method
        return y

    @staticmethod
    def static(x):
        y = x * 2  # BP:static
        return y

    @classmethod
    def klass(cls, x):
        y = cls.__name__ + str(x)  # BP:classmethod
        return y

    @property
    def prop(self):
        y = self._v * 10  # BP:property
        return y


def outer(x):
    def inner(z):
        y = z + x  # BP:closure
        return y

    return inner


lam = lambda x: x + 100  # BP:lambda


def comprehension(n):
    return [i * i for i in range(n) if i % 2 == 0]  # BP:comprehension


async def coro(x):
    y = x + 1  # BP:async
    await asyncio.sleep(0)
    return y


def generator(n):
    for i in range(n):
        y = i * 3  # BP:generator
        yield y


async def agen(n):
    for i in range(n):
        y = i + 7  # BP:asyncgen
        yield y


@deco
def decorated(x):
    y = x - 1  # BP:decorated
    return y


async def _collect(n):
    return [v async for v in agen(n)]


def run_all():
    out = {}
    t = Thing(5)
    out["method"] = t.method(1)
    out["static"] = Thing.static(4)
    out["classmethod"] = Thing.klass(3)
    out["property"] = t.prop
    out["closure"] = outer(10)(1)
    out["lambda"] = lam(1)
    out["comprehension"] = comprehension(5)
    out["async"] = asyncio.run(coro(1))
    out["generator"] = list(generator(3))
    out["asyncgen"] = asyncio.run(_collect(2))
    out["decorated"] = decorated(9)
    return out
