"""A small shop checkout with a bug in it: the sample workflow of docs/debugging.md.

::

    fetch_order -> fork(stock: reserve_stock -> book_courier | email: send_confirmation)
                -> pack_order (join) -> charge -> ship

``reserve_stock`` fails on its first attempt (the warehouse is busy) and succeeds on its
retry. ``charge`` has a bug: it cannot read a coupon written with a percent sign
("SAVE10%"), so order ``o-17`` fails there, three attempts in a row. The one-line fix is in
docs/debugging.md.

Run it from this directory (``durable check`` and ``durable fork --definition`` import it
as ``shop:checkout``)::

    python shop.py start o-17            # start run 'o-17'; the journal is $DURABLE_DB
    python shop.py resume o-17-fixed     # resume an unfinished run (a fork, say)
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from pydantic import BaseModel

import durable
from durable import RetryPolicy, Workflow, step

ORDERS = {
    "o-16": {"items": ["teapot"], "total": 40, "coupon": "SAVE10"},
    "o-17": {"items": ["teapot", "cups"], "total": 55, "coupon": "SAVE10%"},
}


class Order(BaseModel):
    id: str
    items: list[str]
    total: int
    coupon: str | None = None


class Parcel(BaseModel):
    order: Order
    reservation: str
    courier: str = ""


class Receipt(BaseModel):
    order_id: str
    charged: float


def _work(seconds: float) -> None:
    time.sleep(seconds)  # stands for a call to another service


@step
def fetch_order(order_id: str) -> Order:
    _work(0.05)
    return Order(id=order_id, **ORDERS[order_id])


@step(retries=RetryPolicy(max_attempts=3, initial="0.1s"))
def reserve_stock(order: Order) -> Parcel:
    _work(0.1)
    if durable.context().attempt == 1:
        raise ConnectionError("warehouse busy, try again")
    return Parcel(order=order, reservation=f"R-{order.id}")


@step
def book_courier(parcel: Parcel) -> Parcel:
    _work(0.08)
    return parcel.model_copy(update={"courier": "bike"})


@step
def send_confirmation(order: Order) -> str:
    _work(0.15)
    return f"confirmation sent for {order.id}"


@step
def pack_order(branches: dict[str, Any]) -> Parcel:
    _work(0.03)
    parcel: Parcel = branches["stock"]
    return parcel


@step(retries=RetryPolicy(max_attempts=3, initial="0.2s"))
def charge(parcel: Parcel) -> Receipt:
    _work(0.05)
    order = parcel.order
    percent = int(order.coupon.removeprefix("SAVE")) if order.coupon else 0
    return Receipt(order_id=order.id, charged=order.total * (100 - percent) / 100)


@step
def ship(receipt: Receipt) -> str:
    _work(0.05)
    return f"shipped {receipt.order_id} ({receipt.charged:.2f} charged)"


checkout = (
    Workflow("shop", version=1)
    .then(fetch_order)
    .fork()
    .branch(reserve_stock, book_courier, name="stock")
    .branch(send_confirmation, name="email")
    .join(pack_order)
    .then(charge)
    .then(ship)
)


def main(argv: list[str]) -> int:
    db = os.environ.get("DURABLE_DB", "durable.db")
    if len(argv) != 2 or argv[0] not in ("start", "resume"):
        print("usage: python shop.py start ORDER_ID | resume RUN_ID", file=sys.stderr)
        return 2
    command, ident = argv
    try:
        if command == "start":
            result = durable.run(checkout, ident, run_id=ident, db=db)
        else:
            result = durable.run(checkout, run_id=ident, db=db)
    except durable.RunFailed as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
