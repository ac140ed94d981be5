"""A small demo shop behind the shipped `ecommerce` workflow: orders in an embedded SQLite file,
and the tools its agents call (`tools:` in bot/workflows/ecommerce.yaml).

The file is `BOT_SHOP_DATABASE` (default `data/shop.db`), created and seeded on first use: a few
dozen orders whose dates count back from the day it is seeded (kept in the file), so a fresh demo
always has orders still inside the 30-day return window, and an old one ages like a real shop.
Rules are checked against today's real date. Seeding runs in one `BEGIN IMMEDIATE` transaction,
so two processes starting at once seed it once.

Each tool is a plain function (run in a worker thread): its docstring's first paragraph is what
the model reads; a request the rules refuse raises `ShopError`, whose message the model relays.
A call given an `idempotency_key` (filled by the bot, never by the model) acts once: run again
with the key, it returns the first result, stored in the same transaction as the effect.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bot.settings import load_settings

RETURN_DAYS = 30  # returns are accepted this many days after delivery
LARGE_REFUND = 100.0  # refunds above this amount wait for a moderator's approval
_VERSION = 1  # PRAGMA user_version once the file is seeded

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL, "
    "email TEXT NOT NULL, items TEXT NOT NULL, total_cents INTEGER NOT NULL, "
    "currency TEXT NOT NULL, status TEXT NOT NULL, placed TEXT NOT NULL, shipped TEXT, "
    "delivered TEXT, cancelled TEXT, address TEXT NOT NULL, carrier TEXT, tracking TEXT, "
    "refunded_cents INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS returns (rma TEXT PRIMARY KEY, order_id TEXT NOT NULL, "
    "reason TEXT NOT NULL, status TEXT NOT NULL, created TEXT NOT NULL, label TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS refunds (id TEXT PRIMARY KEY, order_id TEXT NOT NULL, "
    "amount_cents INTEGER NOT NULL, created TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS calls (tool TEXT NOT NULL, key TEXT NOT NULL, "
    "result TEXT NOT NULL, PRIMARY KEY (tool, key))",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)

# Seeded orders: number, status, days before the seed day it was placed, currency, customer |
# items with their prices ("; " between items).
_ORDERS = """\
1001 delivered  40 EUR Lena Fischer   | Electric kettle 49.00
1003 cancelled  20 EUR Tom Becker     | Cotton T-shirt 19.00; Cotton hoodie 45.00
1007 delivered  60 EUR Sofia Rossi    | Blender 69.00
1011 shipped     2 GBP James Carter   | Running shorts 29.00; Water bottle 15.00
1015 processing  1 EUR Amelie Martin  | Blue mug 14.00; Teapot 32.00
1019 delivered  20 USD Noah Williams  | Desk lamp 59.00
1023 delivered   3 EUR Chloe Dubois   | Wool scarf 39.00
1027 cancelled   9 EUR Lucas Moreau   | Board game 39.00
1031 delivered  45 EUR Emma Schmidt   | Wool jacket 159.00
1034 shipped     3 GBP Oliver Brown   | Hiking backpack 74.00
1038 delivered   5 EUR Mia Wagner     | Merino socks, 3 pairs 24.00
1042 delivered  14 EUR Maya Patel     | Trail running shoes 129.00; Merino socks, 3 pairs 24.00
1046 processing  0 EUR Leo Bernard    | Noise-cancelling headphones 199.00
1050 processing  1 EUR Hannah Keller  | Espresso machine 249.00
1200 processing  2 GBP Ethan Clarke   | Noise-cancelling headphones 199.00
2015 delivered  18 EUR Julia Novak    | Linen dress 79.00; Wool scarf 39.00
2290 delivered   6 EUR Marco Bianchi  | Ceramic vase 45.00
2544 shipped     1 USD Ava Thompson   | Yoga mat 35.00
3001 delivered  10 EUR Daniel Weber   | Laptop 14-inch 899.00
3127 delivered  90 EUR Clara Jensen   | Office chair 189.00
3310 processing  1 EUR Paul Lefevre   | Desk lamp 59.00
3589 cancelled  12 EUR Nora Hansen    | Smart watch 229.00
4002 delivered  28 EUR Elias Meyer    | Canvas sneakers 95.00
4420 shipped     8 GBP Grace Wilson   | Rain jacket 119.00
4471 delivered  25 EUR Ines Garcia    | Linen dress 79.00
4788 processing  0 EUR Felix Richter  | Electric kettle 49.00; Blue mug 14.00
5025 shipped     4 GBP Lily Evans     | Bluetooth speaker 69.00
5100 delivered   9 EUR Adam Kowalski  | Bluetooth speaker 69.00
5512 shipped     9 EUR Zoe Laurent    | Hiking backpack 74.00
5531 delivered   8 EUR Ben Hoffmann   | Wool jacket 159.00
6003 delivered   7 EUR Sara Lindqvist | Yoga mat 35.00; Yoga blocks 18.00
6275 delivered  16 EUR Max Vogel      | Trail running shoes 129.00
6610 shipped     2 EUR Eva Horvat     | Running shorts 29.00; Water bottle 15.00
6891 cancelled   5 GBP Liam Murphy    | Blender 69.00
7003 processing  0 EUR Anna Kral      | Board game 39.00
7712 delivered  12 EUR Victor Petit   | Smart watch 229.00
7781 shipped    10 USD Olivia Smith   | Office chair 189.00
8150 delivered  50 EUR Jonas Berg     | Cotton T-shirt 19.00
8467 shipped     2 USD Emily Davis    | Blue mug 14.00
8824 processing  1 EUR Luca Romano    | Canvas sneakers 95.00
9034 delivered  11 EUR Hugo Girard    | Electric kettle 49.00
9902 shipped     3 EUR Alice Martin   | Wool scarf 39.00
"""
_STREETS = (
    "12 Rue Oberkampf, 75011 Paris",
    "8 Baker Street, London NW1 6XE",
    "45 Torstrasse, 10119 Berlin",
    "220 W 42nd St, New York, NY 10036",
    "3 Via Tortona, 20144 Milano",
    "17 Calle Mayor, 28013 Madrid",
)
_SHOWN = ("placed", "shipped", "carrier", "tracking", "delivered", "cancelled", "address")
_CARRIERS = (("DHL", "JD01"), ("UPS", "1Z9X"), ("DPD", "0152"), ("GLS", "GL77"))


class ShopError(ValueError):
    """A request the shop's rules refuse; the message says why, for the model to relay."""


def database_path() -> Path:
    """The shop's SQLite file: `BOT_SHOP_DATABASE` (the environment or `.env`), or
    `data/shop.db`. Read at each call: the tools are plain functions, given no settings."""
    return Path(load_settings().bot_shop_database)


def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order by its number (4 digits, e.g. 1042): status, items, total, dates,
    carrier and tracking, refunds and returns. Look the order up before answering about it."""
    return _run("lookup_order", None, lambda db, _: _describe(db, _order(db, order_id)))


def start_return(order_id: str, reason: str, idempotency_key: str | None = None) -> dict[str, Any]:
    """Start the return of a delivered order (within 30 days of delivery), with the customer's
    reason; returns the RMA number and the prepaid return label to send to the customer."""

    def act(db: sqlite3.Connection, today: date) -> dict[str, Any]:
        order = _order(db, order_id)
        oid = order["id"]
        _require(order, "delivered", "be returned")
        since = (today - date.fromisoformat(order["delivered"])).days
        if since > RETURN_DAYS:
            raise ShopError(
                f"order {oid} was delivered on {order['delivered']}, {since} days ago: returns "
                f"are accepted within {RETURN_DAYS} days of delivery, so it cannot be returned"
            )
        existing = db.execute("SELECT rma FROM returns WHERE order_id = ?", (oid,)).fetchone()
        if existing is not None:
            raise ShopError(f"order {oid} already has a return, {existing[0]}; no new one made")
        if not reason.strip():
            raise ShopError("a return needs a reason: what is wrong with the item?")
        rma = f"RMA-{oid}-1"
        label = f"https://shop.example/returns/{rma}/label.pdf"
        db.execute(
            "INSERT INTO returns (rma, order_id, reason, status, created, label) "
            "VALUES (?, ?, ?, 'label sent', ?, ?)",
            (rma, oid, reason.strip(), today.isoformat(), label),
        )
        return {
            "order_id": oid,
            "rma": rma,
            "label": label,
            "send_by": (today + timedelta(days=14)).isoformat(),
            "refund": "to the original payment method within 5 business days of receiving it",
        }

    return _run("start_return", idempotency_key, act)


def issue_refund(
    order_id: str, amount: float, idempotency_key: str | None = None
) -> dict[str, Any]:
    """Refund part or all of a delivered order to the original payment method; `amount` is in
    the order's currency, at most its total minus what was already refunded."""

    def act(db: sqlite3.Connection, today: date) -> dict[str, Any]:
        order = _order(db, order_id)
        oid, currency = order["id"], order["currency"]
        cents = round(amount * 100)
        if cents <= 0:
            raise ShopError(f"a refund must be more than 0 {currency}; {amount:g} was asked")
        _require(order, "delivered", "be refunded")
        left = order["total_cents"] - order["refunded_cents"]
        if cents > left:
            raise ShopError(
                f"{_money(cents)} {currency} is more than is left to refund on order {oid}: "
                f"{_money(left)} of its {_money(order['total_cents'])} {currency} "
                f"({_money(order['refunded_cents'])} already refunded)"
            )
        count = db.execute("SELECT count(*) FROM refunds WHERE order_id = ?", (oid,)).fetchone()
        refund_id = f"RF-{oid}-{count[0] + 1}"
        db.execute(
            "INSERT INTO refunds (id, order_id, amount_cents, created) VALUES (?, ?, ?, ?)",
            (refund_id, oid, cents, today.isoformat()),
        )
        db.execute(
            "UPDATE orders SET refunded_cents = refunded_cents + ? WHERE id = ?", (cents, oid)
        )
        return {
            "order_id": oid,
            "refund_id": refund_id,
            "amount": cents / 100,
            "currency": currency,
            "refunded_total": (order["refunded_cents"] + cents) / 100,
            "left_to_refund": (left - cents) / 100,
        }

    return _run("issue_refund", idempotency_key, act)


def change_address(order_id: str, address: str) -> dict[str, Any]:
    """Change the delivery address of an order that has not shipped yet; `address` is the whole
    new address (street, postcode, city)."""

    def act(db: sqlite3.Connection, _: date) -> dict[str, Any]:
        order = _order(db, order_id)
        _require(order, "processing", "have its address changed")
        new = " ".join(address.split())
        if len(new) < 8 or not any(ch.isdigit() for ch in new):
            raise ShopError(f"{address!r} is not a full address: give street, postcode and city")
        db.execute("UPDATE orders SET address = ? WHERE id = ?", (new, order["id"]))
        return {"order_id": order["id"], "address": new, "status": order["status"]}

    return _run("change_address", None, act)


def cancel_order(order_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
    """Cancel an order that has not shipped yet; its payment is refunded in full."""

    def act(db: sqlite3.Connection, today: date) -> dict[str, Any]:
        order = _order(db, order_id)
        _require(order, "processing", "be cancelled")
        db.execute(
            "UPDATE orders SET status = 'cancelled', cancelled = ?, refunded_cents = total_cents "
            "WHERE id = ?",
            (today.isoformat(), order["id"]),
        )
        total = order["total_cents"] / 100
        return {
            "order_id": order["id"],
            "status": "cancelled",
            "refunded": total,
            "currency": order["currency"],
        }

    return _run("cancel_order", idempotency_key, act)


def large_refund(arguments: dict[str, Any]) -> bool:
    """The approval condition of `issue_refund`: a refund that takes the order's refunds above
    100 waits for a moderator (so splitting one into small ones does not get round it)."""
    try:
        with _transaction() as db:
            refunded = float(_order(db, str(arguments["order_id"]))["refunded_cents"]) / 100
    except ShopError:
        refunded = 0.0  # no such order: the refund itself will say so
    return refunded + float(arguments["amount"]) > LARGE_REFUND


def _today() -> date:
    """Today's date (a function, so that tests can move the clock)."""
    return date.today()


_Action = Callable[[sqlite3.Connection, date], dict[str, Any]]


def _run(tool: str, key: str | None, action: _Action) -> dict[str, Any]:
    """Run `action` in one transaction; with a `key` seen before, return its stored result."""
    with _transaction() as db:
        if key is not None:
            stored = db.execute(
                "SELECT result FROM calls WHERE tool = ? AND key = ?", (tool, key)
            ).fetchone()
            if stored is not None:
                result: dict[str, Any] = json.loads(stored[0])
                return result
        result = action(db, _today())
        if key is not None:
            db.execute(
                "INSERT INTO calls (tool, key, result) VALUES (?, ?, ?)",
                (tool, key, json.dumps(result)),
            )
        return result


@contextmanager
def _transaction() -> Iterator[sqlite3.Connection]:
    """A connection inside `BEGIN IMMEDIATE` on a seeded file; committed unless it raises."""
    path = database_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as db:
        db.row_factory = sqlite3.Row
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] < _VERSION:
                _seed(db, _today())
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _seed(db: sqlite3.Connection, base: date) -> None:
    """Create the tables and the demo orders, dated back from `base`."""
    for statement in _SCHEMA:
        db.execute(statement)
    db.execute("INSERT OR IGNORE INTO meta VALUES ('seeded_on', ?)", (base.isoformat(),))
    rows = []
    for index, line in enumerate(_ORDERS.splitlines()):
        head, goods = line.split(" | ")
        oid, status, days, currency, customer = head.split(maxsplit=4)
        priced = [item.rsplit(" ", 1) for item in goods.split("; ")]
        items = [{"name": name, "quantity": 1, "price": float(price)} for name, price in priced]
        total = sum(round(float(price) * 100) for _, price in priced)
        name = customer.strip()
        email = name.lower().replace(" ", ".") + "@example.com"
        placed = base - timedelta(days=int(days))
        sent = status in ("shipped", "delivered")
        shipped = _after(placed, 1) if sent else None
        delivered = _after(placed, 3) if status == "delivered" else None
        cancelled = _after(placed, 1) if status == "cancelled" else None
        carrier, prefix = _CARRIERS[index % len(_CARRIERS)]
        tracking = (carrier, f"{prefix}{oid}{7 * int(oid) % 10000:04d}") if sent else (None, None)
        row = (oid, name, email, json.dumps(items), total, currency, status, placed.isoformat())
        address = _STREETS[index % len(_STREETS)]
        refunded = total if status == "cancelled" else 0
        rows.append((*row, shipped, delivered, cancelled, address, *tracking, refunded))
    db.executemany(f"INSERT OR IGNORE INTO orders VALUES ({', '.join('?' * 15)})", rows)
    returned = (base - timedelta(days=12)).isoformat()
    db.execute(  # a return on its way back to the warehouse, not refunded yet
        "INSERT OR IGNORE INTO returns VALUES ('RMA-4471-1', '4471', 'too small', 'received', ?, "
        "'https://shop.example/returns/RMA-4471-1/label.pdf')",
        (returned,),
    )
    db.execute(f"PRAGMA user_version = {_VERSION}")


def _after(day: date, days: int) -> str:
    return (day + timedelta(days=days)).isoformat()


def _money(cents: int) -> str:
    return f"{cents / 100:.2f}"


def _order(db: sqlite3.Connection, order_id: str) -> sqlite3.Row:
    oid = order_id.strip().lstrip("#")
    row: sqlite3.Row | None = db.execute("SELECT * FROM orders WHERE id = ?", (oid,)).fetchone()
    if row is None:
        raise ShopError(
            f"no order {oid}: order numbers have 4 digits, like 1042; please check the number"
        )
    return row


def _require(order: sqlite3.Row, status: str, to: str) -> None:
    """Refuse an order that is not in `status`, saying what it is instead."""
    oid, now = order["id"], order["status"]
    if now == status:
        return
    if now == "cancelled":
        done = "is already cancelled" if to == "be cancelled" else "was cancelled"
        raise ShopError(f"order {oid} {done} (on {order['cancelled']}, refunded in full)")
    if now == "processing":
        raise ShopError(f"order {oid} has not shipped yet, so it cannot {to}")
    if now == "shipped":
        raise ShopError(
            f"order {oid} shipped on {order['shipped']} ({order['carrier']} tracking "
            f"{order['tracking']}) and is not delivered yet, so it cannot {to}"
        )
    raise ShopError(f"order {oid} was delivered on {order['delivered']}, so it cannot {to}")


def _describe(db: sqlite3.Connection, order: sqlite3.Row) -> dict[str, Any]:
    """An order as the model reads it (the customer's email stays in the shop)."""
    oid = order["id"]
    returns = db.execute(
        "SELECT rma, status, reason, created FROM returns WHERE order_id = ?", (oid,)
    ).fetchall()
    found: dict[str, Any] = {"order_id": oid, "status": order["status"]}
    found["customer"], found["items"] = order["customer"], json.loads(order["items"])
    found["total"], found["currency"] = order["total_cents"] / 100, order["currency"]
    found |= {key: order[key] for key in _SHOWN}  # dates, carrier and tracking, address
    found["refunded"] = order["refunded_cents"] / 100
    found["returns"] = [dict(row) for row in returns]
    if order["status"] == "shipped":
        expected = date.fromisoformat(order["shipped"]) + timedelta(days=3)
        found["expected_delivery"] = expected.isoformat()
    if order["status"] == "delivered":
        until = date.fromisoformat(order["delivered"]) + timedelta(days=RETURN_DAYS)
        found["return_until"] = until.isoformat()
    return {key: value for key, value in found.items() if value is not None}
