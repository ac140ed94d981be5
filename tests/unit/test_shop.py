"""The demo shop: seeding on first use, each rule of its tools, idempotency keys, and a first use
by several threads and processes at once, on a real SQLite file per test."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import shop
from bot.engine import function_tool
from bot.engine.loader import load_workflow
from bot.shop import ShopError

ROOT = Path(__file__).parents[2]
TODAY = date.today()


@pytest.fixture(autouse=True)
def shop_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "shop" / "shop.db"  # its folder does not exist yet
    monkeypatch.setenv("BOT_SHOP_DATABASE", str(path))
    return path


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def days_ago(days: int) -> str:
    return (TODAY - timedelta(days=days)).isoformat()


def test_first_use_creates_and_seeds_the_file(shop_file: Path) -> None:
    assert not shop_file.exists()
    order = shop.lookup_order("1042")
    assert shop_file.exists()
    assert order == {
        "order_id": "1042",
        "status": "delivered",
        "customer": "Maya Patel",
        "items": [
            {"name": "Trail running shoes", "quantity": 1, "price": 129.0},
            {"name": "Merino socks, 3 pairs", "quantity": 1, "price": 24.0},
        ],
        "total": 153.0,
        "currency": "EUR",
        "placed": days_ago(14),
        "shipped": days_ago(13),
        "carrier": "GLS",
        "tracking": "GL7710427294",
        "delivered": days_ago(11),
        "address": "17 Calle Mayor, 28013 Madrid",
        "refunded": 0.0,
        "returns": [],
        "return_until": (TODAY + timedelta(days=19)).isoformat(),
    }
    orders = rows(shop_file, "SELECT id, status, email FROM orders")
    assert len(orders) >= 36
    assert all(len(oid) == 4 and oid.isdigit() for oid, _, _ in orders)
    assert {status for _, status, _ in orders} == {
        "processing",
        "shipped",
        "delivered",
        "cancelled",
    }
    assert all(email.endswith("@example.com") for _, _, email in orders)
    assert rows(shop_file, "SELECT value FROM meta") == [(TODAY.isoformat(),)]


def test_seeding_is_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seeded = []
    for name in ("a.db", "b.db"):
        monkeypatch.setenv("BOT_SHOP_DATABASE", str(tmp_path / name))
        shop.lookup_order("1001")
        seeded.append(rows(tmp_path / name, "SELECT * FROM orders ORDER BY id"))
    assert seeded[0] == seeded[1]


@pytest.mark.parametrize(
    ("order_id", "status", "extra"),
    [
        ("4420", "shipped", {"expected_delivery": days_ago(4)}),  # late
        ("1050", "processing", {}),
        ("1003", "cancelled", {"cancelled": days_ago(19), "refunded": 64.0}),
    ],
)
def test_lookup_shows_what_each_status_has(
    order_id: str, status: str, extra: dict[str, Any]
) -> None:
    order = shop.lookup_order(f" #{order_id} ")
    assert order["status"] == status
    assert order.items() >= extra.items()
    assert ("tracking" in order) == (status == "shipped")


def test_an_unknown_order_is_a_clear_error() -> None:
    with pytest.raises(ShopError, match="no order 9999: order numbers have 4 digits"):
        shop.lookup_order("9999")


async def test_a_refused_call_is_an_error_result_the_model_reads() -> None:
    output = await function_tool(shop.lookup_order).invoke('{"order_id": "9999"}')
    assert output.is_error
    assert output.content.startswith("Error: lookup_order failed: ShopError: no order 9999")


def test_the_key_is_never_offered_to_the_model() -> None:
    for function in (shop.start_return, shop.issue_refund, shop.cancel_order):
        properties = function_tool(function).spec.parameters["properties"]
        assert "idempotency_key" not in properties
    assert function_tool(shop.issue_refund).spec.parameters["required"] == ["order_id", "amount"]


def test_a_return_of_a_recent_delivery_gets_a_label() -> None:
    made = shop.start_return("1042", "too small", idempotency_key=None)
    assert made["rma"] == "RMA-1042-1"
    assert made["label"] == "https://shop.example/returns/RMA-1042-1/label.pdf"
    assert made["send_by"] == (TODAY + timedelta(days=14)).isoformat()
    returns = shop.lookup_order("1042")["returns"]
    assert returns == [
        {"rma": "RMA-1042-1", "status": "label sent", "reason": "too small", "created": str(TODAY)}
    ]
    with pytest.raises(ShopError, match="order 1042 already has a return, RMA-1042-1"):
        shop.start_return("1042", "too small")


@pytest.mark.parametrize(
    ("order_id", "reason", "message"),
    [
        ("1031", "broken", r"order 1031 was delivered on .*, 42 days ago: returns are accepted"),
        ("4420", "broken", r"order 4420 shipped on .* and is not delivered yet, so it cannot be"),
        ("1050", "broken", "order 1050 has not shipped yet, so it cannot be returned"),
        ("1003", "broken", "order 1003 was cancelled"),
        ("1042", "  ", "a return needs a reason"),
    ],
)
def test_returns_follow_the_rules(order_id: str, reason: str, message: str) -> None:
    with pytest.raises(ShopError, match=message):
        shop.start_return(order_id, reason)


def test_the_return_window_closes_30_days_after_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    shop.lookup_order("1042")  # seeded today: delivered 11 days ago
    monkeypatch.setattr(shop, "_today", lambda: TODAY + timedelta(days=20))
    with pytest.raises(ShopError, match="31 days ago: returns are accepted within 30 days"):
        shop.start_return("1042", "too late")
    monkeypatch.setattr(shop, "_today", lambda: TODAY + timedelta(days=19))
    assert shop.start_return("1042", "just in time")["rma"] == "RMA-1042-1"


def test_refunds_add_up_to_the_total_at_most() -> None:
    first = shop.issue_refund("1042", 100.5)
    assert first == {
        "order_id": "1042",
        "refund_id": "RF-1042-1",
        "amount": 100.5,
        "currency": "EUR",
        "refunded_total": 100.5,
        "left_to_refund": 52.5,
    }
    with pytest.raises(ShopError, match=r"60.00 EUR is more than is left .* 52.50 of its 153.00"):
        shop.issue_refund("1042", 60)
    assert shop.issue_refund("1042", 52.5)["left_to_refund"] == 0
    assert shop.lookup_order("1042")["refunded"] == 153.0


@pytest.mark.parametrize(
    ("order_id", "amount", "message"),
    [
        ("1042", 0, "a refund must be more than 0 EUR"),
        ("1042", -5, "a refund must be more than 0 EUR"),
        ("1042", 153.01, "is more than is left to refund"),
        ("1050", 10, "order 1050 has not shipped yet, so it cannot be refunded"),
        ("4420", 10, "not delivered yet, so it cannot be refunded"),
        ("1003", 10, "order 1003 was cancelled"),
    ],
)
def test_refunds_follow_the_rules(order_id: str, amount: float, message: str) -> None:
    before = shop.lookup_order(order_id)["refunded"]
    with pytest.raises(ShopError, match=message):
        shop.issue_refund(order_id, amount)
    assert shop.lookup_order(order_id)["refunded"] == before


def test_a_key_makes_a_call_act_once(shop_file: Path) -> None:
    first = shop.issue_refund("3001", 40, idempotency_key="case-7")
    assert shop.issue_refund("3001", 40, idempotency_key="case-7") == first
    assert shop.lookup_order("3001")["refunded"] == 40
    assert shop.issue_refund("3001", 40, idempotency_key="case-8")["refund_id"] == "RF-3001-2"
    cancelled = shop.cancel_order("7003", idempotency_key="c1")
    assert shop.cancel_order("7003", idempotency_key="c1") == cancelled  # not "already cancelled"
    assert len(rows(shop_file, "SELECT * FROM refunds")) == 2


def test_a_refused_call_stores_nothing_under_its_key() -> None:
    with pytest.raises(ShopError):
        shop.issue_refund("1042", 500, idempotency_key="k")
    assert shop.issue_refund("1042", 50, idempotency_key="k")["amount"] == 50


async def test_the_tool_passes_its_key_through() -> None:
    tool = function_tool(shop.issue_refund)
    arguments = '{"order_id": "1042", "amount": 30}'
    outputs = [await tool.invoke(arguments, key="call-1") for _ in range(2)]
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0].content)["refund_id"] == "RF-1042-1"
    assert shop.lookup_order("1042")["refunded"] == 30


def test_an_address_changes_only_before_shipping() -> None:
    changed = shop.change_address("3310", "  1 Main St,\n 75001 Paris ")
    assert changed == {
        "order_id": "3310",
        "address": "1 Main St, 75001 Paris",
        "status": "processing",
    }
    assert shop.lookup_order("3310")["address"] == "1 Main St, 75001 Paris"
    with pytest.raises(ShopError, match="not delivered yet, so it cannot have its address changed"):
        shop.change_address("4420", "1 Main St, 75001 Paris")
    with pytest.raises(ShopError, match="is not a full address"):
        shop.change_address("3310", "Paris")


def test_an_order_is_cancelled_only_before_shipping() -> None:
    assert shop.cancel_order("1050") == {
        "order_id": "1050",
        "status": "cancelled",
        "refunded": 249.0,
        "currency": "EUR",
    }
    order = shop.lookup_order("1050")
    assert (order["status"], order["cancelled"], order["refunded"]) == (
        "cancelled",
        str(TODAY),
        249,
    )
    with pytest.raises(ShopError, match="order 1050 is already cancelled"):
        shop.cancel_order("1050")
    with pytest.raises(
        ShopError, match=r"order 1042 was delivered on .*, so it cannot be cancelled"
    ):
        shop.cancel_order("1042")
    with pytest.raises(ShopError, match="order 9902 shipped on"):
        shop.cancel_order("9902")


@pytest.mark.parametrize(
    ("amount", "large"), [(100, False), (100.01, True), (150, True), (5, False)]
)
def test_a_refund_above_100_needs_approval(amount: float, large: bool) -> None:
    assert shop.large_refund({"order_id": "1042", "amount": amount}) is large
    returns = load_workflow(ROOT / "bot" / "workflows" / "ecommerce.yaml").agents["Returns"]
    refund = next(tool for tool in returns.function_tools if tool.name == "issue_refund")
    assert refund.needs_approval(json.dumps({"order_id": "1042", "amount": amount})) is large


def test_the_shipped_workflow_offers_the_shop() -> None:
    workflow = load_workflow(ROOT / "bot" / "workflows" / "ecommerce.yaml")
    offered = {
        name: sorted(tool.name for tool in agent.function_tools)
        for name, agent in workflow.agents.items()
    }
    assert offered == {
        "Triage": [],
        "Returns": ["issue_refund", "lookup_order", "start_return"],
        "Orders": ["cancel_order", "change_address", "lookup_order"],
        "Fraud": [],
    }


def test_threads_using_a_new_file_at_once_seed_it_once(shop_file: Path) -> None:
    start = threading.Barrier(8)
    found: list[str] = []
    failed: list[BaseException] = []

    def use(order_id: str) -> None:
        start.wait()
        try:
            found.append(shop.lookup_order(order_id)["status"])
        except BaseException as exc:
            failed.append(exc)

    workers = [threading.Thread(target=use, args=(oid,)) for oid in ["1042", "1050"] * 4]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failed == []
    assert sorted(found) == ["delivered"] * 4 + ["processing"] * 4
    assert rows(shop_file, "SELECT count(*) FROM orders") == [(42,)]


def test_two_processes_using_a_new_file_at_once_seed_it_once(shop_file: Path) -> None:
    code = (
        "from bot import shop; print(shop.cancel_order('8824', idempotency_key='same')['status'])"
    )
    env = {"BOT_SHOP_DATABASE": str(shop_file), "PYTHONPATH": str(ROOT)}
    processes = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=30)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0]
    assert outputs == ["cancelled\n", "cancelled\n"]  # the second returned the first's result
    assert rows(shop_file, "SELECT count(*) FROM orders") == [(42,)]
    assert rows(shop_file, "SELECT count(*) FROM meta") == [(1,)]


def test_refunds_split_into_small_ones_still_need_approval_past_the_limit() -> None:
    assert not shop.large_refund({"order_id": "1042", "amount": 76.5})
    shop.issue_refund("1042", 76.5)
    assert shop.large_refund({"order_id": "1042", "amount": 76.5})  # 153 in all
    assert not shop.large_refund({"order_id": "9999", "amount": 50})  # unknown: it says so itself
