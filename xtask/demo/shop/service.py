"""The demo service: a thread pool handling checkout requests forever."""
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from shop.cart import Cart, Customer, Item, cart_total

CATALOG = [
    Item("sku-1", "coffee beans", 12.5),
    Item("sku-2", "grinder", 89.0),
    Item("sku-3", "filter papers", 3.2),
    Item("sku-4", "kettle", 45.0),
]


def handle_checkout(request: dict) -> dict:
    customer = Customer(request["customer_id"], request["email"], request.get("tier", "standard"))
    cart = Cart(customer, coupon=request.get("coupon"))
    for sku, qty in request["lines"]:
        base = next(i for i in CATALOG if i.sku == sku)
        cart.add(Item(base.sku, base.name, base.unit_price, qty))
    total = cart_total(cart)
    return {"order": f"o-{random.randrange(10**6)}", "total": total, "items": len(cart.items)}


def fake_request(n: int) -> dict:
    lines = [(random.choice(CATALOG).sku, random.randint(1, 3)) for _ in range(random.randint(1, 4))]
    return {
        "customer_id": 1000 + n,
        "email": f"user{n}@example.com",
        "tier": random.choice(["standard", "silver", "gold"]),
        "coupon": random.choice([None, None, "WELCOME10", "BLACKFRIDAY"]),
        "lines": lines,
    }


def main() -> None:
    stop = threading.Event()
    served = 0
    print(f"shop service running (pid {__import__('os').getpid()})", flush=True)
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="checkout") as pool:
        n = 0
        while not stop.is_set():
            futures = [pool.submit(handle_checkout, fake_request(n + k)) for k in range(4)]
            for f in futures:
                json.dumps(f.result())
                served += 1
            n += 4
            time.sleep(0.25)


if __name__ == "__main__":
    sys.exit(main())
