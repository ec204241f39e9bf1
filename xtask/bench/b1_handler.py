"""B1: a request-handler-like workload; prints its own throughput.

    python3 b1_handler.py --variant sync|async --requests N [--warmup N] [--wait-go]
                          [--helper-breakpoints] [--libdebugger-bench]

What one request does, like a small JSON API endpoint: parse a JSON body, validate it, look up
users and products in dicts, build small objects, compute totals through `map` and
`sorted(key=...)` (callbacks entered from C), format a response and encode it with `json.dumps`.
The asyncio variant runs the same handler as coroutines, 50 at a time under `asyncio.gather`,
with an awaited fake database call per request.

Five lines marked `bench: unreached` sit in functions every request runs, on branches no
request takes: B1 arms its breakpoints there (through the agent, or with --helper-breakpoints
through the helper imported in-process), so the figure is the cost of having armed breakpoints
in hot code, not of hits.

Output (last line): {"variant", "requests", "elapsed_s", "cpu_s", "requests_per_s",
"requests_per_cpu_s", "python", "checksum"}. `cpu_s` is the process's CPU time (user + system,
every thread, so a helper thread's work counts too) over the measured work: on a shared, loaded
machine wall time swings by ±30 % between identical runs while CPU time stays within ±2 %, so
the harness compares CPU time.
"""

import argparse
import asyncio
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _benchlib  # noqa: E402

# Built by concatenation so that this line itself does not carry the marker.
UNREACHED_MARK = "# bench: " + "unreached"
CATEGORIES = ("books", "games", "garden", "kitchen", "music", "tools")


class Product:
    def __init__(self, sku, name, price, category):
        self.sku = sku
        self.name = name
        self.price = price
        self.category = category

    def to_dict(self):
        return {"sku": self.sku, "name": self.name, "price": self.price, "category": self.category}


class User:
    def __init__(self, uid, name, tier):
        self.uid = uid
        self.name = name
        self.tier = tier

    def discount(self):
        if self.tier == "gold":
            return 0.1
        if self.tier == "silver":
            return 0.05
        return 0.0


class LineItem:
    __slots__ = ("product", "quantity")

    def __init__(self, product, quantity):
        self.product = product
        self.quantity = quantity

    def total(self):
        return self.product.price * self.quantity


class Request:
    def __init__(self, method, path, headers, body):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body


PRODUCTS = {
    f"sku-{i}": Product(f"sku-{i}", f"Product {i}", round(1.5 + (i * 7919) % 300 / 3.0, 2),
                        CATEGORIES[i % len(CATEGORIES)])
    for i in range(500)
}
USERS = {uid: User(uid, f"user{uid}", ("gold", "silver", "basic")[uid % 3]) for uid in range(200)}


def make_requests(count):
    """Deterministic request bodies (the same for every run, so runs are comparable)."""
    out = []
    for i in range(count):
        items = [
            {"sku": f"sku-{(i * 31 + k * 17) % 500}", "quantity": 1 + (i + k) % 4}
            for k in range(3 + i % 5)
        ]
        body = json.dumps({"user_id": (i * 13) % 200, "items": items, "coupon": None,
                           "note": "leave at the door" if i % 7 == 0 else ""})
        out.append(Request("POST", "/api/cart/checkout",
                           {"content-type": "application/json", "x-request-id": str(i)}, body))
    return out


def parse(request):
    if request.headers.get("content-type") != "application/json":
        raise ValueError("bad content type")  # bench: unreached 1
    payload = json.loads(request.body)
    if not isinstance(payload, dict):
        raise ValueError("body must be an object")  # bench: unreached 2
    return payload


def validate(payload):
    items = payload.get("items") or []
    if len(items) > 100:
        return "too many items"  # bench: unreached 3
    for item in items:
        if item["quantity"] <= 0:
            return "bad quantity"  # bench: unreached 4
    return None


def price_cart(user, items):
    lines = [LineItem(PRODUCTS[it["sku"]], it["quantity"]) for it in items]
    totals = list(map(LineItem.total, lines))
    by_category = {}
    for line in lines:
        by_category.setdefault(line.product.category, []).append(line.product.sku)
    ranked = sorted(lines, key=lambda ln: (-ln.total(), ln.product.sku))
    subtotal = sum(totals)
    discount = round(subtotal * user.discount(), 2)
    if discount > subtotal:
        discount = subtotal  # bench: unreached 5
    return {
        "user": user.name,
        "lines": [{"product": ln.product.to_dict(), "quantity": ln.quantity} for ln in ranked],
        "by_category": {k: sorted(v) for k, v in by_category.items()},
        "subtotal": round(subtotal, 2),
        "discount": discount,
        "total": round(subtotal - discount, 2),
    }


def handle(request):
    payload = parse(request)
    error = validate(payload)
    if error:
        return 400, json.dumps({"error": error})
    user = USERS[payload["user_id"]]
    cart = price_cart(user, payload["items"])
    return 200, json.dumps(cart, sort_keys=True)


async def fetch_user(uid):
    await asyncio.sleep(0)  # a database round trip, as cheap as the event loop allows
    return USERS[uid]


async def handle_async(request):
    payload = parse(request)
    error = validate(payload)
    if error:
        return 400, json.dumps({"error": error})
    user = await fetch_user(payload["user_id"])
    cart = price_cart(user, payload["items"])
    return 200, json.dumps(cart, sort_keys=True)


def run_sync(requests):
    checksum = 0
    for req in requests:
        status, body = handle(req)
        checksum += status + len(body)
    return checksum


async def run_async_batches(requests, batch):
    checksum = 0
    for start in range(0, len(requests), batch):
        results = await asyncio.gather(*(handle_async(r) for r in requests[start:start + batch]))
        for status, body in results:
            checksum += status + len(body)
    return checksum


def run_async(requests):
    return asyncio.run(run_async_batches(requests, 50))


def arm_unreached(helper):
    here = os.path.abspath(__file__)
    lines = _benchlib.find_marker_lines(here, UNREACHED_MARK)
    bps = [{"id": f"b1-unreached-{n}", "file": here, "line": line, "condition": None}
           for n, line in enumerate(lines, start=1)]
    return _benchlib.arm(helper, bps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=("sync", "async"), default="sync")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--wait-go", action="store_true")
    ap.add_argument("--helper-breakpoints", action="store_true",
                    help="import the helper and arm 5 breakpoints on unreached lines")
    ap.add_argument("--arm-after-warmup", action="store_true",
                    help="with --helper-breakpoints: arm after the warm-up, as the agent does")
    ap.add_argument(_benchlib.TAG, action="store_true", help="marks the process as a bench run")
    args = ap.parse_args()

    runner = run_sync if args.variant == "sync" else run_async
    armed = None
    if args.helper_breakpoints and not args.arm_after_warmup:
        armed = arm_unreached(_benchlib.import_helper())
    runner(make_requests(args.warmup))
    if args.helper_breakpoints and args.arm_after_warmup:
        armed = arm_unreached(_benchlib.import_helper())
    requests = make_requests(args.requests)
    if args.wait_go:
        _benchlib.wait_go({"unreached_lines": _benchlib.find_marker_lines(
            os.path.abspath(__file__), UNREACHED_MARK)})
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = time.process_time_ns()
    t0 = time.perf_counter_ns()
    checksum = runner(requests)
    elapsed = (time.perf_counter_ns() - t0) / 1e9
    cpu = (time.process_time_ns() - c0) / 1e9
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    _benchlib.emit({
        "variant": args.variant,
        "requests": args.requests,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "user_s": ru1.ru_utime - ru0.ru_utime,
        "system_s": ru1.ru_stime - ru0.ru_stime,
        "requests_per_s": args.requests / elapsed,
        "requests_per_cpu_s": args.requests / cpu,
        "python": _benchlib.python_version(),
        "checksum": checksum,
        "armed": armed,
    })


if __name__ == "__main__":
    main()
