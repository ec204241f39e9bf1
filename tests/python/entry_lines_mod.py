"""Functions for entry_lines.py: def lines and decorator lines (line markers are looked up)."""
import functools


def deco(f):
    @functools.wraps(f)
    def wrapper(*a, **k):
        return f(*a, **k)

    return wrapper


def plain(x, y=2):  # PLAIN_DEF
    z = x + y
    return z


@deco  # MOD_DECO
def top(x, y=2):  # MOD_DEF
    z = x + y
    return z


@deco
@functools.lru_cache(  # MOD_DECO2
    maxsize=None,
)
def two(x): return x * 2  # MOD_ONELINE


def gen(n):  # GEN_DEF
    for i in range(n):
        yield i


async def coro(x):  # CORO_DEF
    return x


def outer(v):
    @deco  # NESTED_DECO
    def inner(w):  # NESTED_DEF
        return v + w

    return inner(1)


class K:
    @staticmethod  # METHOD_DECO
    def sm(a):  # METHOD_DEF
        return a
