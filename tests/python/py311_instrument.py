"""CPython 3.11 bytecode patching, checked on a real interpreter.

Usage: python3.11 py311_instrument.py <dir holding libdebugger_helper.abi3.so>

For every code object of a structural program (every control-flow construct) and every line in
it: instrument that line, swap the code in, run the program on several inputs, restore. The
results, exceptions and traceback positions must be identical to the original's, the hook must
fire exactly as often as sys.settrace reports that line for the original, from a frame whose
f_lineno is that line. Then: codec round trips and whole-code rewrites over stdlib code objects.
Prints "OK <counts>" on success; any failure raises.
"""
import collections
import dis
import glob
import io
import os
import sys
import sysconfig

sys.path.insert(0, sys.argv[1])
import libdebugger_helper as h  # noqa: E402

assert sys.version_info[:2] == (3, 11), sys.version

PROGRAM = '''
import functools
G = 0


class Ctx:
    def __init__(self, log):
        self.log = log

    def __enter__(self):
        self.log.append("enter")
        return 7

    def __exit__(self, et, ev, tb):
        self.log.append("exit")
        return False


def gen(m):
    yield 0
    for j in range(m):
        if j % 2:
            got = yield j
            if got:
                return got
    yield from range(2)


def structural(n, *args, **kwargs):
    global G
    total = 0
    log = []
    count = 0

    def bump(k):
        nonlocal count
        count += k
        return count

    square = lambda v: (
        v * v)
    i = 0
    while i < n:
        i += 1
        if i % 5 == 0:
            continue
        elif i > 8:
            break
        else:
            total += square(i)
    for a in args:
        for b in range(a):
            if b == 2:
                break
            total += b
        else:
            log.append(a)
    try:
        try:
            if n == 3:
                raise ValueError(n)
            total += 100 // (n - 4)
        except ZeroDivisionError:
            log.append("zero")
        else:
            log.append("else")
        finally:
            log.append("finally")
    except ValueError as e:
        log.append(str(e))
    with Ctx(log) as c:
        total += c
    gen_total = sum(gen(n))
    for k, v in sorted(kwargs.items()):
        bump(v)
    G += 1
    if n > 0 and n % 3 == 0:
        total += structural(n - 1)[0]
    if n == 7:
        raise KeyError(
            "seven")
    doubled = [x * 2
               for x in range(n)]
    return (total, gen_total, count,
            tuple(log), doubled)


class Yielder:
    def __await__(self):
        yield


class ACtx:
    async def __aenter__(self):
        await Yielder()
        return 1

    async def __aexit__(self, *exc):
        return False


async def agen(n):
    for q in range(n):
        await Yielder()
        yield q


async def acoro(n):
    out = []
    async for q in agen(n):
        out.append(q)
    async with ACtx() as z:
        out.append(z)
    try:
        await failing(n)
    except RuntimeError as e:
        out.append(str(e))
    return out


async def failing(n):
    if n % 2:
        raise RuntimeError("odd")
    return n


def drive(coro):
    try:
        while True:
            coro.send(None)
    except StopIteration as e:
        return e.value


def run(n, *args, **kwargs):
    return structural(n, *args, **kwargs), drive(acoro(n))
'''

INPUTS = [(0,), (3, 4, 1), (4,), (5, 2, 3), (7,), (9, 5)]
KWARGS = [{}, {"x": 1}, {}, {"y": 2, "x": 1}, {}, {"z": 3}]

ns = {"__name__": "structural_program"}
exec(compile(PROGRAM, "<structural>", "exec"), ns)


def all_codes():
    """Every code object of the program (module code excluded: it already ran)."""
    out, stack = [], [v.__code__ for v in ns.values() if hasattr(v, "__code__")]
    for cls in (ns["Ctx"], ns["Yielder"], ns["ACtx"]):
        stack += [v.__code__ for v in vars(cls).values() if hasattr(v, "__code__")]
    seen = set()
    while stack:
        c = stack.pop()
        if id(c) in seen or c.co_filename != "<structural>":
            continue
        seen.add(id(c))
        out.append(c)
        stack += [k for k in c.co_consts if isinstance(k, type(c))]
    return out


def tb_positions(e):
    out, tb = [], e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == "<structural>":
            pos = list(code.co_positions())[tb.tb_lasti // 2]
            out.append((code.co_name, tb.tb_lineno, pos))
        tb = tb.tb_next
    return out


def run_all():
    results = []
    for args, kwargs in zip(INPUTS, KWARGS):
        try:
            results.append(("ok", ns["run"](*args, **kwargs)))
        except Exception as e:  # noqa: BLE001 - the exception is the result being compared
            results.append(("exc", type(e).__name__, e.args, tb_positions(e)))
    return results


def first_resume(code):
    for ins in dis.get_instructions(code):
        if ins.opname == "RESUME":
            return ins.offset
    return None


def reference(codes):
    """The original's results, and per code: line event counts and first starts."""
    wanted = {id(c) for c in codes}
    lines = collections.Counter()
    starts = collections.Counter()

    def tracer(frame, event, arg):
        code = frame.f_code
        if id(code) not in wanted:
            return tracer
        if event == "call" and frame.f_lasti == first_resume(code):
            starts[id(code)] += 1
        if event == "line":
            lines[(id(code), frame.f_lineno)] += 1
        return tracer

    sys.settrace(tracer)
    try:
        res = run_all()
    finally:
        sys.settrace(None)
    return res, lines, starts


def prologue_lines(code):
    out = set()
    for ins in dis.get_instructions(code):
        if ins.positions.lineno is not None:
            out.add(ins.positions.lineno)
        if ins.opname == "RESUME":
            break
    return out


def body_start_line(code):
    seen_resume = False
    for ins in dis.get_instructions(code):
        if seen_resume:
            return ins.positions.lineno
        seen_resume = ins.opname == "RESUME"
    return None


def check_rewrite(code, new, inserted):
    """dis works, and original instructions keep op, argval and positions."""
    dis.dis(new, file=io.StringIO())
    def logical(c):
        return [i for i in dis.get_instructions(c) if i.opname != "EXTENDED_ARG"]

    new_all = logical(new)
    index = {ins.offset: i for i, ins in enumerate(new_all)}
    synthetic = set()
    for _line, off, skip_jump in inserted:
        i = index[off]
        assert [x.opname for x in new_all[i:i + 7]] == [
            "PUSH_NULL", "LOAD_CONST", "LOAD_CONST", "LOAD_CONST", "PRECALL", "CALL", "POP_TOP"]
        synthetic.update(range(i - 1 if skip_jump else i, i + 7))
        if skip_jump:
            assert new_all[i - 1].opname == "JUMP_FORWARD"
    new_ins = [ins for i, ins in enumerate(new_all) if i not in synthetic]
    old_ins = logical(code)
    assert len(old_ins) == len(new_ins), (code, len(old_ins), len(new_ins))
    kept_index = {id(ins): k for k, ins in enumerate(new_ins)}

    def landing(instrs, offset, is_new):
        # The original instruction a jump to `offset` reaches: EXTENDED_ARG prefixes and an
        # inserted call (not its skip jump) lead to the instruction after them.
        for i, ins in enumerate(instrs):
            if ins.offset >= offset:
                if not is_new:
                    return i
                if i in synthetic and ins.opname == "JUMP_FORWARD":
                    raise AssertionError(f"a jump lands on a skip jump in {code}")
                while i in synthetic:
                    i += 1
                return kept_index[id(instrs[i])]
        return len(instrs)

    for a, b in zip(old_ins, new_ins):
        if a.opcode in dis.hasjrel:
            assert landing(old_ins, a.argval, False) == landing(new_all, b.argval, True), (code, a, b)
    for a, b in zip(old_ins, new_ins):
        assert a.opname == b.opname, (code, a, b)
        assert a.positions == b.positions, (code, a, b)
        if a.opcode not in dis.hasjrel:
            assert a.argval == b.argval, (code, a, b)
    assert new.co_stacksize == code.co_stacksize + 4 or not inserted
    assert new.co_consts[: len(code.co_consts)] == code.co_consts


def main():
    codes = all_codes()
    assert len(codes) >= 15, [c.co_name for c in codes]
    base, ref_lines, ref_starts = reference(codes)
    # The program must itself behave: both exception paths and normal returns happen.
    assert {r[0] for r in base} == {"ok", "exc"}, base
    # Functions by code, to swap in.
    n_cases = n_hits = 0
    mismatches = []
    for code in codes:
        lines = sorted({ln for _, _, ln in code.co_lines() if ln is not None})
        for line in lines:
            hits = []

            def hook(c, ln, _code=code):
                assert c is _code, (c, _code)
                hits.append(ln)
                assert sys._getframe(1).f_lineno == ln, (sys._getframe(1).f_lineno, ln)
                assert sys._getframe(1).f_code is not _code  # the instrumented copy runs

            new, inserted = h._py311_instrument(code, [line], hook)
            check_rewrite(code, new, inserted)
            swap = h._py311_swap(code, new)
            try:
                got = run_all()
            finally:
                swap.restore()
            assert got == base, (code.co_name, line, got, base)
            expected = ref_lines[(id(code), line)]
            if line in prologue_lines(code) and body_start_line(code) != line:
                expected += ref_starts[id(code)]
            if len(hits) != expected:
                mismatches.append((code.co_name, line, len(hits), expected, inserted))
            assert all(x == line for x in hits)
            n_cases += 1
            n_hits += len(hits)
    for m in mismatches:
        print("hook count differs from settrace:", m)
    assert not mismatches
    # After all the restores, nothing points at an instrumented copy: a plain run matches and
    # settrace still sees exactly the same.
    again, lines2, starts2 = reference(codes)
    assert again == base and lines2 == ref_lines and starts2 == ref_starts

    # Every line at once, on every code object.
    codes_by_name = {c.co_name: c for c in codes}
    hits = collections.Counter()
    swaps = []
    for code in codes:
        lines = sorted({ln for _, _, ln in code.co_lines() if ln is not None})
        new, inserted = h._py311_instrument(code, lines, lambda c, ln: hits.update([(id(c), ln)]))
        check_rewrite(code, new, inserted)
        swaps.append(h._py311_swap(code, new))
    try:
        # Long enough for 3.11's adaptive interpreter to quicken and specialise the new code
        # (the inserted PRECALL/CALL included).
        for _ in range(60):
            got = run_all()
            assert got == base
        live = ns["structural"].__code__
        assert live is not codes_by_name["structural"]
        specialised = {i.opname for i in dis.get_instructions(live, adaptive=True)} - set(dis.opname)
        assert specialised, "the instrumented code was never specialised"
    finally:
        for s in reversed(swaps):
            s.restore()
    per_run = sum(hits.values()) // 60
    assert per_run == sum(ref_lines.values()) + sum(
        ref_starts[id(c)] for c in codes if body_start_line(c) not in prologue_lines(c)
    ), (per_run, sum(ref_lines.values()))

    # Long jumps and many constants: EXTENDED_ARG on original jumps grows and the inserted
    # LOAD_CONSTs need it too; run every line against settrace again.
    big_src = "def big(x, y):\n    acc = []\n    for k in range(y):\n"
    for i in range(70):
        big_src += f"        if x == {i}:\n            acc.append({i}.5 + k)\n        else:\n            acc.append(-{i}.25)\n"
    big_src += "    while x > 0:\n        x -= 1\n        acc.append(x * 1.125)\n    return acc\n"
    big_ns = {}
    exec(compile(big_src, "<structural>", "exec"), big_ns)
    big = big_ns["big"]
    bcode = big.__code__
    assert len(bcode.co_consts) > 200 and "EXTENDED_ARG" in {i.opname for i in dis.get_instructions(bcode)}
    wanted = {id(bcode)}
    counts = collections.Counter()

    def btracer(frame, event, arg):
        if id(frame.f_code) in wanted and event == "line":
            counts[frame.f_lineno] += 1
        return btracer

    sys.settrace(btracer)
    expected_result = [big(5, 2), big(69, 1)]
    sys.settrace(None)
    blines = sorted({ln for _, _, ln in bcode.co_lines() if ln is not None})
    filler = tuple(float(i) + 0.0625 for i in range(300))
    for line in blines + [None]:
        hits = []
        request = blines if line is None else [line]
        # Push the hook's constants past index 255 so the inserted LOAD_CONSTs need EXTENDED_ARG.
        padded = bcode.replace(co_consts=bcode.co_consts + filler)
        new, inserted = h._py311_instrument(padded, request, lambda c, ln: hits.append(ln))
        check_rewrite(padded, new, inserted)
        big.__code__ = new
        try:
            got = [big(5, 2), big(69, 1)]
        finally:
            big.__code__ = bcode
        assert got == expected_result, line
        calls = 2  # the def line fires once per call
        if line is not None:
            expected = counts[line] + (calls if line == bcode.co_firstlineno else 0)
            assert len(hits) == expected, (line, len(hits), expected)
        else:
            assert len(hits) == sum(counts.values()) + calls
    assert len(padded.co_consts) > 256  # so the hook's LOAD_CONSTs needed EXTENDED_ARG

    # Real library code: every line of every function of a few pure-Python stdlib modules armed
    # at once, then a workload (normal and error paths) must give the same results.
    import difflib
    import fractions
    import ipaddress
    import json
    import shlex
    import statistics
    import textwrap

    def workload():
        out = []
        doc = {"a": [1, 2.5, None, True, "x\u00e9"], "b": {"c": [{"d": i} for i in range(5)]}}
        out.append(json.loads(json.dumps(doc, indent=2, sort_keys=True)))
        out.append(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))
        out.append(list(difflib.unified_diff(["a\n", "b\n", "c\n"], ["a\n", "c\n", "d\n"])))
        out.append(difflib.SequenceMatcher(None, "abcdefgh", "abxdefyh").get_opcodes())
        out.append(textwrap.fill("lorem ipsum dolor sit amet " * 8, width=30))
        out.append(textwrap.dedent("    a\n      b\n    c"))
        out.append(str(fractions.Fraction("3/7") + fractions.Fraction(2, 21)))
        out.append([str(n) for n in ipaddress.ip_network("10.1.0.0/29").hosts()])
        out.append(shlex.split("a 'b c' \"d e\" f\\ g"))
        out.append(statistics.median([5, 1, 4, 2, 3]))
        out.append(round(statistics.stdev([1.5, 2.5, 2.5, 2.75, 3.25, 4.75]), 12))
        for bad in (lambda: json.loads("{bad"), lambda: ipaddress.ip_address("300.1.1.1"),
                    lambda: fractions.Fraction("x/2"), lambda: shlex.split("'open")):
            try:
                bad()
            except ValueError as e:
                out.append((type(e).__name__, str(e)))
        return out

    expected_work = workload()
    modules = [json.decoder, json.encoder, json, difflib, textwrap, fractions, ipaddress, shlex,
               statistics]
    files = {m.__file__ for m in modules}
    targets = {}
    for m in modules:
        for v in list(vars(m).values()) + [x for c in vars(m).values() if isinstance(c, type)
                                          for x in vars(c).values()]:
            fn = getattr(v, "__func__", v)
            if isinstance(fn, property):
                fn = fn.fget
            code = getattr(fn, "__code__", None)
            if code is not None and code.co_filename in files:
                targets[id(code)] = code
    lib_hits = collections.Counter()
    swaps = []
    for code in targets.values():
        lines = sorted({ln for _, _, ln in code.co_lines() if ln is not None})
        new, inserted = h._py311_instrument(code, lines, lambda c, ln: lib_hits.update([c.co_name]))
        check_rewrite(code, new, inserted)
        swaps.append(h._py311_swap(code, new))
    try:
        got_work = [workload() for _ in range(3)]
    finally:
        for s in reversed(swaps):
            s.restore()
    assert all(g == expected_work for g in got_work)
    for fn in (json.dumps, difflib.SequenceMatcher.get_opcodes, textwrap.TextWrapper._wrap_chunks):
        assert targets.get(id(fn.__code__)) is fn.__code__, fn  # the original is back
    assert len(lib_hits) > 50, lib_hits
    assert workload() == expected_work
    n_lib = len(targets)

    # Stdlib: codecs round-trip exactly and instrumenting every line keeps positions.
    n_std = n_std_rewrites = 0
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(stdlib, "*.py")))[:400]
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                top = compile(f.read(), path, "exec")
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        stack = [top]
        while stack:
            c = stack.pop()
            stack += [k for k in c.co_consts if isinstance(k, type(c))]
            assert h._py311_round_trips(c), (path, c)
            n_std += 1
            if n_std % 7 == 0:
                lines = sorted({ln for _, _, ln in c.co_lines() if ln is not None})
                new, inserted = h._py311_instrument(c, lines, print)
                check_rewrite(c, new, inserted)
                n_std_rewrites += 1
    assert n_std > 5000, n_std
    print(f"OK cases={n_cases} hits={n_hits} library_functions_armed={n_lib} "
          f"stdlib_code_objects={n_std} stdlib_rewrites={n_std_rewrites}")


main()
