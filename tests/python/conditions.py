"""Conditions: true / false / evaluation error, the readable subset (attributes, subscripts,
len, isinstance), and a corpus of side-effect attempts that must all be rejected at parse
time — with none of the hostile code ever running."""
from ldbg_testlib import FAST, SINK, arm, counters, h, line_of, result

SIDE_EFFECTS = []


class Account:
    __slots__ = ("owner", "balance")

    def __init__(self, owner, balance):
        self.owner = owner
        self.balance = balance


class Req:
    def __init__(self):
        self.user = {"id": 7, "roles": ["admin", "dev"]}
        self.path = "/api/items"

    @property
    def expensive(self):
        SIDE_EFFECTS.append("property")
        return 1

    def __getattr__(self, name):
        SIDE_EFFECTS.append("getattr:" + name)
        return 1

    def __eq__(self, other):
        SIDE_EFFECTS.append("eq")
        return True

    def __bool__(self):
        SIDE_EFFECTS.append("bool")
        return True


LIMIT = 3


def handler(req, n, acct):
    total = n * 2  # BP:h
    return total


CASES = {
    "true_simple": "n > LIMIT",
    "false_simple": "n < 0",
    "dict_sub": "req.user['id'] == 7 and 'admin' in req.user['roles']",
    "slots": "acct.owner == 'ann' and acct.balance >= 10.5",
    "len_isinstance": "len(req.path) == 10 and isinstance(n, int) and not isinstance(n, (str, list))",
    "arith_chain": "0 < n * 2 - 1 <= 100 and n % 2 == 0 and n // 3 == 1",
    "str_ops": "req.path + '/x' == '/api/items/x' and req.path[1] == 'a'",
    "is_none": "req is not None and acct is not None",
    "error_missing_name": "nope > 1",
    "error_property": "req.expensive == 1",
    "error_getattr": "req.missing_attr == 1",
    "error_type": "n + 'x' == 1",
    "error_object_eq": "req == 1",
    "error_object_bool": "req and n",
}

EXPECT_FIRE = {"true_simple", "dict_sub", "slots", "len_isinstance", "arith_chain", "str_ops", "is_none"}

REJECTED = [
    "__import__('os').system('echo pwned')",
    "open('/tmp/x', 'w')",
    "req.__class__",
    "req.__dict__",
    "exec('x=1')",
    "eval('1')",
    "getattr(req, 'expensive')",
    "(lambda: 1)()",
    "(x := 5)",
    "[i for i in range(10)]",
    "{k: 1 for k in req}",
    "req.user.update({})",
    "print(1)",
    "setattr(req, 'a', 1)",
    "globals()",
    "f'{req}'",
    "1 if req else 2",
    "x = 1",
    "del req",
    "req.user['roles'].append(1)",
    "type(req)",
    "vars(req)",
    "__builtins__",
    "n ** 10 ** 10",
    "req[1:2]",
    "len(*req)",
    "isinstance(req, Req)",
    "await req",
    "yield 1",
    "import os",
    "n; n",
]


def main():
    line = line_of(__file__, "# BP:h")
    bps = [{"id": k, "file": "conditions.py", "line": line, "condition": c, "limits": FAST}
           for k, c in CASES.items()]
    bps += [{"id": f"rej{i}", "file": "conditions.py", "line": line, "condition": c}
            for i, c in enumerate(REJECTED)]
    statuses = {s["id"]: s for s in arm(bps, {"process_rate": 1e9})}
    handler(Req(), 4, Account("ann", 12.0))
    out = {"fired": {}, "counters": {}, "rejected": {}, "side_effects": SIDE_EFFECTS}
    for k in CASES:
        out["fired"][k] = len(SINK.hits(k))
        c = counters(k)
        out["counters"][k] = {"hits": c["hits"], "false": c["condition_false"],
                              "errors": c["condition_errors"],
                              "last_error": [s for s in h.status()["breakpoints"] if s["id"] == k][0].get("last_condition_error")}
    for i, c in enumerate(REJECTED):
        s = statuses[f"rej{i}"]
        out["rejected"][c] = {"status": s["status"], "reason": s.get("reason", "")}
    out["expect_fire"] = sorted(EXPECT_FIRE)
    h.set_breakpoints([])
    result(out)


main()
