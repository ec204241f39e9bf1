"""Carts, prices and discounts."""
from dataclasses import dataclass, field


@dataclass
class Item:
    sku: str
    name: str
    unit_price: float
    quantity: int = 1


@dataclass
class Customer:
    customer_id: int
    email: str
    tier: str = "standard"
    api_token: str = "tok_live_do_not_log"


@dataclass
class Cart:
    customer: Customer
    items: list = field(default_factory=list)
    coupon: str | None = None

    def add(self, item: Item) -> None:
        self.items.append(item)


TIER_DISCOUNT = {"standard": 0.0, "silver": 0.05, "gold": 0.10}
COUPONS = {"WELCOME10": 0.10, "BLACKFRIDAY": 0.25}


def cart_total(cart: Cart) -> float:
    subtotal = sum(i.unit_price * i.quantity for i in cart.items)
    discount = TIER_DISCOUNT.get(cart.customer.tier, 0.0)
    if cart.coupon:
        discount = max(discount, COUPONS.get(cart.coupon, 0.0))
    total = round(subtotal * (1 - discount), 2)
    return total
