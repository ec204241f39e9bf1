"""swap_in / restore on CPython 3.11: every way a function's code is reachable.

Usage: python3.11 py311_swap.py <dir holding libdebugger_helper.abi3.so>
Prints "OK <n> checks" on success; any failure raises.
"""
import asyncio
import functools
import gc
import sys
import weakref

sys.path.insert(0, sys.argv[1])
import libdebugger_helper as h  # noqa: E402

assert sys.version_info[:2] == (3, 11), sys.version

HITS = []
CHECKS = 0


def hook(code, line):
    HITS.append((code, line))


def check(cond, what):
    global CHECKS
    CHECKS += 1
    if not cond:
        raise AssertionError(what)


def line_of(code, text):
    """Line number of the first line of `code` containing `text` (avoids hard-coded numbers)."""
    import linecache

    for ln in range(code.co_firstlineno, code.co_firstlineno + 200):
        if text in linecache.getline(code.co_filename, ln):
            return ln
    raise LookupError(text)


def arm(code, text):
    """Instruments the line containing `text`, swaps it in; returns (swap, weakref to new code)."""
    line = line_of(code, text)
    new, inserted = h._py311_instrument(code, [line], hook)
    check(inserted, f"a call was inserted for {text!r}")
    swap = h._py311_swap(code, new)
    check(swap.effective, f"the swap for {text!r} reached a function")
    return swap, weakref.ref(new), line


def hits_for(code, line):
    return sum(1 for c, ln in HITS if c is code and ln == line)


def expect_hits(code, line, fn, n, what):
    HITS.clear()
    fn()
    check(hits_for(code, line) == n, f"{what}: {hits_for(code, line)} hits, expected {n}")


def disarm(swap, new_ref, originals):
    swap.restore()
    del swap
    gc.collect()
    check(new_ref() is None, "no reference to the patched code is left after restore")
    for fn, code in originals:
        check(fn.__code__ is code, f"{fn.__qualname__} has its original code back")


# --- plain function, method, staticmethod, classmethod, property, decorated, lambda --------------
def plain(x):
    y = x + 1  # plain-body
    return y


def deco(fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        return fn(*a, **k)

    return wrapper


@deco
def decorated(x):
    return x * 2  # decorated-body


class K:
    def method(self, x):
        return x - 1  # method-body

    @staticmethod
    def static(x):
        return x + 10  # static-body

    @classmethod
    def klass(cls, x):
        return (cls.__name__, x)  # classmethod-body

    @property
    def prop(self):
        return 42  # property-body


HANDLERS = {"lam": lambda v: v * 3}  # lambda-body


def test_simple_kinds():
    k = K()
    bound = k.method  # bound before the swap
    cases = [
        (plain, "plain-body", lambda: check(plain(1) == 2, "plain result"), [plain]),
        (decorated.__wrapped__, "decorated-body",
         lambda: check(decorated(2) == 4, "decorated result"), [decorated.__wrapped__]),
        (K.method, "method-body", lambda: (check(k.method(3) == 2, "m"), check(bound(3) == 2, "b")),
         [K.method]),
        (K.__dict__["static"].__func__, "static-body",
         lambda: (check(K.static(1) == 11, "s"), check(k.static(1) == 11, "s2")),
         [K.__dict__["static"].__func__]),
        (K.__dict__["klass"].__func__, "classmethod-body",
         lambda: check(K.klass(5) == ("K", 5), "c"), [K.__dict__["klass"].__func__]),
        (K.prop.fget, "property-body", lambda: check(k.prop == 42, "p"), [K.prop.fget]),
        (HANDLERS["lam"], "lambda-body", lambda: check(HANDLERS["lam"](2) == 6, "l"),
         [HANDLERS["lam"]]),
    ]
    for fn, text, call, fns in cases:
        code = fn.__code__
        originals = [(f, f.__code__) for f in fns]
        swap, new_ref, line = arm(code, text)
        check(fn.__code__ is new_ref(), f"{text}: swapped")
        calls = 2 if text in ("method-body", "static-body") else 1
        expect_hits(code, line, call, calls, text)
        disarm(swap, new_ref, originals)
        expect_hits(code, line, call, 0, text + " after restore")


# --- closures: created before and after, nested, nonlocal --------------------------------------
def make_counter(start):
    count = start

    def incr(step):
        nonlocal count
        count += step  # incr-body
        return count

    return incr


def outer(a):
    def middle(b):
        def inner(c):
            return a + b + c  # inner-body

        return inner

    return middle


def test_closures():
    before = make_counter(10)
    incr_code = before.__code__
    make_code = make_counter.__code__
    swap, new_ref, line = arm(incr_code, "incr-body")
    check(make_counter.__code__ is not make_code, "parent code replaced so new closures use new code")
    check(incr_code in make_code.co_consts, "original parent untouched")
    expect_hits(incr_code, line, lambda: check(before(1) == 11, "closure before"), 1, "closure before")
    during = make_counter(0)
    expect_hits(incr_code, line, lambda: check(during(5) == 5, "closure after"), 1, "closure after")
    disarm(swap, new_ref, [(before, incr_code), (during, incr_code), (make_counter, make_code)])
    after = make_counter(1)
    check(after.__code__ is incr_code, "closures made after restore use the original code")
    expect_hits(incr_code, line, lambda: after(1), 0, "after restore")

    # Two levels of nesting: inner's code lives in middle's consts, which lives in outer's.
    inner_code = outer(1)(2).__code__
    middle_code = outer(1).__code__
    outer_code = outer.__code__
    existing_middle = outer(100)
    swap, new_ref, line = arm(inner_code, "inner-body")
    expect_hits(inner_code, line, lambda: check(outer(1)(2)(3) == 6, "nested"), 1, "nested new")
    expect_hits(inner_code, line, lambda: check(existing_middle(2)(3) == 105, "n"), 1, "nested old")
    disarm(swap, new_ref, [(outer, outer_code), (existing_middle, middle_code)])
    check(outer(1).__code__ is middle_code and outer(1)(2).__code__ is inner_code, "nested restored")


# --- a method of a class defined inside a function; a comprehension -----------------------------
def make_class():
    class Local:
        def m(self):
            return 5  # local-method-body

    return Local


def squares(n):
    return [i * i for i in range(n)]  # comprehension-body


def test_local_class_and_comprehension():
    made_before = make_class()
    m_code = made_before.m.__code__
    factory_code = make_class.__code__
    swap, new_ref, line = arm(m_code, "local-method-body")
    expect_hits(m_code, line, lambda: check(made_before().m() == 5, "old class"), 1, "class before")
    expect_hits(m_code, line, lambda: check(make_class()().m() == 5, "new class"), 1, "class after")
    disarm(swap, new_ref, [(made_before.m, m_code), (make_class, factory_code)])
    check(make_class().m.__code__ is m_code, "classes made after restore use the original")

    squares_code = squares.__code__
    listcomp = next(c for c in squares_code.co_consts if hasattr(c, "co_code"))
    swap, new_ref, line = arm(listcomp, "comprehension-body")
    HITS.clear()
    check(squares(4) == [0, 1, 4, 9], "comprehension result")
    check(hits_for(listcomp, line) == 5, f"comprehension hits {hits_for(listcomp, line)}: start + 4 loops")
    disarm(swap, new_ref, [(squares, squares_code)])
    expect_hits(listcomp, line, lambda: squares(3), 0, "comprehension restored")


# --- parent and child both armed, restored in reverse order -------------------------------------
def test_parent_and_child():
    make_code = make_counter.__code__
    incr_code = make_counter(0).__code__
    p_swap, p_ref, p_line = arm(make_code, "count = start")
    c_swap, c_ref, c_line = arm(incr_code, "incr-body")

    def both():
        f = make_counter(3)
        check(f(1) == 4, "result with both armed")

    HITS.clear()
    both()
    check(hits_for(make_code, p_line) == 1, "parent hook fires with the original parent code")
    check(hits_for(incr_code, c_line) == 1, "child hook fires with the original child code")
    c_swap.restore()
    del c_swap
    gc.collect()
    check(c_ref() is None, "child patch gone")
    expect_hits(incr_code, c_line, both, 0, "child restored, parent still armed")
    expect_hits(make_code, p_line, both, 1, "parent still armed")
    disarm(p_swap, p_ref, [(make_counter, make_code)])
    check(make_counter(0).__code__ is incr_code, "all original")


# --- restores in any order ------------------------------------------------------------------------
def two_closures(a):
    def first():
        return a + 1  # first-body

    def second():
        return a + 2  # second-body

    return first, second


def test_any_restore_order():
    parent = two_closures.__code__
    first_code, second_code = (f.__code__ for f in two_closures(0))
    s1, r1, l1 = arm(first_code, "first-body")
    s2, r2, l2 = arm(second_code, "second-body")
    check(h._py311_original_code(two_closures.__code__) is parent, "original of the derived parent")
    check(h._py311_original_code(two_closures(0)[0].__code__) is first_code, "original of a copy")

    def call_both():
        f, g = two_closures(1)
        check((f(), g()) == (2, 3), "results")

    HITS.clear()
    call_both()
    check(hits_for(first_code, l1) == 1 and hits_for(second_code, l2) == 1, "both closures armed")
    s1.restore()  # not the last one swapped
    del s1
    HITS.clear()
    call_both()
    check(hits_for(first_code, l1) == 0, "first disarmed")
    check(hits_for(second_code, l2) == 1, "second still armed after restoring the first")
    gc.collect()
    check(r1() is None, "first's instrumented copy is gone")
    s2.restore()
    del s2
    gc.collect()
    check(r2() is None, "second's instrumented copy is gone")
    check(two_closures.__code__ is parent, "identical parent back")
    f, g = two_closures(1)
    check(f.__code__ is first_code and g.__code__ is second_code, "identical closures back")

    # A function armed together with its closure; the function is disarmed first.
    make_code = make_counter.__code__
    incr_code = make_counter(0).__code__
    p_swap, p_ref, p_line = arm(make_code, "count = start")
    c_swap, c_ref, c_line = arm(incr_code, "incr-body")

    def both():
        check(make_counter(3)(1) == 4, "result")

    HITS.clear()
    both()
    check(hits_for(make_code, p_line) == 1 and hits_for(incr_code, c_line) == 1, "both armed")
    check(h._py311_original_code(make_counter.__code__) is make_code, "original of armed+derived")
    p_swap.restore()
    del p_swap
    HITS.clear()
    both()
    check(hits_for(make_code, p_line) == 0, "parent disarmed")
    check(hits_for(incr_code, c_line) == 1, "closure still armed after restoring its parent first")
    gc.collect()
    check(p_ref() is None, "parent's instrumented copy is gone")
    disarm(c_swap, c_ref, [(make_counter, make_code)])
    check(make_counter(0).__code__ is incr_code, "identical closure code back")


# --- generators, coroutines; frames already running keep the old code ---------------------------
def numbers(n):
    for i in range(n):
        yield i * 2  # gen-body


async def acompute(x):
    await asyncio.sleep(0)
    return x + 1  # async-body


def test_generators_and_coroutines():
    code = numbers.__code__
    running = numbers(3)
    check(next(running) == 0, "started")
    swap, new_ref, line = arm(code, "gen-body")
    HITS.clear()
    check(list(running) == [2, 4], "a generator already running keeps working")
    check(hits_for(code, line) == 0, "frames already executing the old code are not affected")
    expect_hits(code, line, lambda: check(list(numbers(3)) == [0, 2, 4], "gen"), 3, "generator")
    del running
    disarm(swap, new_ref, [(numbers, code)])

    code = acompute.__code__
    swap, new_ref, line = arm(code, "async-body")
    expect_hits(code, line, lambda: check(asyncio.run(acompute(1)) == 2, "coro"), 1, "coroutine")
    disarm(swap, new_ref, [(acompute, code)])


# --- functions in gc.freeze()'s permanent generation (pre-fork servers) --------------------------
def frozen_target(x):
    return x + 100  # frozen-body


def test_frozen_generation():
    gc.freeze()
    try:
        check(gc.get_freeze_count() > 0, "something is frozen")
        check(not any(o is frozen_target for o in gc.get_objects()), "gc.get_objects misses it")
        code = frozen_target.__code__
        swap, new_ref, line = arm(code, "frozen-body")
        expect_hits(code, line, lambda: check(frozen_target(1) == 101, "f"), 1, "frozen function")
        disarm(swap, new_ref, [(frozen_target, code)])
    finally:
        gc.unfreeze()


# --- arming and disarming while other threads call the function ---------------------------------
def busy(x):
    total = 0
    for i in range(x):
        total += i  # busy-body
    return total


def test_threads():
    import threading

    stop = threading.Event()
    errors = []
    calls = [0] * 4

    def worker(slot):
        try:
            while not stop.is_set():
                if busy(20) != 190:
                    errors.append("wrong result")
                calls[slot] += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    code = busy.__code__
    import time

    try:
        for _ in range(30):
            before = len(HITS)
            swap, new_ref, line = arm(code, "busy-body")
            # Let the workers run into the armed code before disarming (deadline, not a fixed
            # sleep: sleeping releases the GIL to them).
            deadline = time.monotonic() + 30
            while len(HITS) == before and time.monotonic() < deadline and not errors:
                time.sleep(0.001)
            check(len(HITS) > before, "a worker thread hit the armed line")
            swap.restore()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    check(not any(t.is_alive() for t in threads), "workers finished")
    check(errors == [], f"no errors in threads: {errors[:3]}")
    check(all(c > 0 for c in calls), "every worker ran")
    check(busy.__code__ is code, "original code back")
    check(hits_for(code, line) >= 30, "worker threads hit the armed line in every window")


# --- the inserted call is covered by the handler of the line it precedes --------------------------
def guarded(x):
    try:
        y = x + 1  # guarded-body
    except LookupError:
        return "caught"
    z = y * 2  # unguarded-body
    return z


def test_exception_table_coverage():
    def raising_hook(code, line):
        raise KeyError(line)

    code = guarded.__code__
    inside = line_of(code, "guarded-body")
    outside = line_of(code, "unguarded-body")
    new, _ = h._py311_instrument(code, [inside], raising_hook)
    swap = h._py311_swap(code, new)
    try:
        check(guarded(1) == "caught", "a raise from the call inside try reaches that try's handler")
    finally:
        swap.restore()
    new, _ = h._py311_instrument(code, [outside], raising_hook)
    swap = h._py311_swap(code, new)
    try:
        guarded(1)
    except KeyError as e:
        tb = e.__traceback__
        while tb.tb_next is not None and tb.tb_frame.f_code.co_name != "guarded":
            tb = tb.tb_next
        check(tb.tb_frame.f_code.co_name == "guarded" and tb.tb_lineno == outside,
              f"traceback points at the armed line ({tb.tb_lineno} vs {outside})")
    else:
        raise AssertionError("the hook's exception outside try was swallowed")
    finally:
        swap.restore()
    check(guarded(1) == 4, "original behaviour back")


def test_errors():
    try:
        h._py311_swap(plain, plain.__code__)
    except TypeError as e:
        check("code object" in str(e), "clear message for a non-code argument")
    else:
        raise AssertionError("swap_in accepted a function")
    try:
        h._py311_instrument("not code", [1], hook)
    except TypeError:
        check(True, "instrument rejects non-code")
    else:
        raise AssertionError("instrument accepted a string")
    # A code object no function uses: the swap reaches nothing and says so.
    orphan = compile("x = 1", "<orphan>", "exec")
    new, _ = h._py311_instrument(orphan, [1], hook)
    s = h._py311_swap(orphan, new)
    check(not s.effective, "a swap that reaches no function says so")
    s.restore()
    # Nested code of an instrumented copy: the real nested functions, not the hook's argument.
    code = make_counter.__code__
    new, _ = h._py311_instrument(code, [line_of(code, "count = start")], hook)
    check(code in new.co_consts, "the original is a constant of the copy")
    nested = h._py311_nested_code_objects(new)
    check([c.co_name for c in nested] == ["incr"], f"nested code objects: {nested}")
    check(h._py311_nested_code_objects(code) == nested, "same nesting as the original")
    # Lines with no code are ignored: the copy runs like the original.
    new, inserted = h._py311_instrument(plain.__code__, [1], hook)
    check(inserted == [], "no call for a line without code")


test_simple_kinds()
test_closures()
test_local_class_and_comprehension()
test_parent_and_child()
test_any_restore_order()
test_generators_and_coroutines()
test_frozen_generation()
test_threads()
test_exception_table_coverage()
test_errors()
print(f"OK {CHECKS} checks")
