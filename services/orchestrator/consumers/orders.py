"""Reference consumer of `action.create_order` and `action.payment_link`.

- `create_order` records the order (order id = action id; total = unit price x quantity in
  Decimal). A redelivered message finds the order already recorded and does nothing.
- `payment_link` creates a payment link through the payments port for the order it names
  (`orderId`), else for the order created in the same turn (same tenant, session and
  correlation id; a session's messages arrive in order, so `create_order` comes first), else
  for the amount the action carries. Idempotent by action id: a redelivery never creates a
  second link. When an order is known its total is charged, not the amount the model wrote.

Invalid parameters raise `HandlerRejected` (dead-lettered at once, never retried); a failing
payments provider raises, so the message is redelivered and retried.

Orders and links live in memory: this is the reference consumer of the embedded profile, not a
system of record.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from services.orchestrator.bus import BusMessage, HandlerRejected
from services.orchestrator.consumers.payments import PaymentLink, PaymentsProvider, money

__all__ = ["LinkRecord", "Order", "OrdersConsumer"]

log = logging.getLogger(__name__)

CREATE_ORDER: Final = "action.create_order"
PAYMENT_LINK: Final = "action.payment_link"
CURRENCY: Final = re.compile(r"^[A-Za-z]{3}$")
DETAIL_FIELDS: Final = ("size", "shippingAddress", "email", "phone")


@dataclass(frozen=True)
class Order:
    order_id: str
    """The id of the create_order action."""
    tenant_id: str
    session_id: str
    correlation_id: str
    product_id: str
    quantity: int
    unit_price: Decimal
    currency: str
    total: Decimal
    details: Mapping[str, str] = field(default_factory=dict)
    """Size, shipping address, email, phone: as the customer gave them."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; amounts as decimal strings."""
        return {
            "orderId": self.order_id,
            "tenantId": self.tenant_id,
            "sessionId": self.session_id,
            "productId": self.product_id,
            "quantity": self.quantity,
            "unitPrice": str(self.unit_price),
            "currency": self.currency,
            "total": str(self.total),
            **dict(self.details),
        }


@dataclass(frozen=True)
class LinkRecord:
    action_id: str
    order_id: str
    tenant_id: str
    session_id: str
    link: PaymentLink


class OrdersConsumer:
    """Handles create_order and payment_link; see the module docstring."""

    subjects: Final = frozenset({CREATE_ORDER, PAYMENT_LINK})

    def __init__(self, payments: PaymentsProvider) -> None:
        self._payments = payments
        self._lock = asyncio.Lock()
        self.orders: dict[str, Order] = {}
        """By order id (= create_order action id)."""
        self.links: dict[str, LinkRecord] = {}
        """By payment_link action id."""
        self._by_turn: dict[tuple[str, str, str], str] = {}

    async def handle(self, message: BusMessage) -> None:
        async with self._lock:  # redeliveries and sessions never race on one action id
            if message.subject == CREATE_ORDER:
                self._create_order(message)
            elif message.subject == PAYMENT_LINK:
                await self._payment_link(message)

    __call__ = handle

    def order_of_turn(self, tenant_id: str, session_id: str, correlation_id: str) -> Order | None:
        order_id = self._by_turn.get((tenant_id, session_id, correlation_id))
        return self.orders.get(order_id) if order_id else None

    def _create_order(self, message: BusMessage) -> None:
        if message.message_id in self.orders:
            log.info("order already recorded", extra={"orderId": message.message_id})
            return
        params = message.params()
        currency = _currency(params.get("currency"))
        quantity = params.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int | Decimal):
            raise HandlerRejected("create_order: quantity must be a whole number")
        if quantity != int(quantity) or not 1 <= quantity <= 10_000:
            raise HandlerRejected("create_order: quantity must be a whole number in [1, 10000]")
        try:
            unit_price = money(params.get("unitPrice"), currency)
        except ValueError:
            raise HandlerRejected("create_order: unitPrice must be an amount >= 0") from None
        order = Order(
            order_id=message.message_id,
            tenant_id=message.tenant_id,
            session_id=message.session_id,
            correlation_id=message.correlation_id,
            product_id=str(params.get("productId") or ""),
            quantity=int(quantity),
            unit_price=unit_price,
            currency=currency,
            total=money(unit_price * int(quantity), currency),
            details={k: str(params[k]) for k in DETAIL_FIELDS if params.get(k) is not None},
        )
        self.orders[order.order_id] = order
        self._by_turn[(order.tenant_id, order.session_id, order.correlation_id)] = order.order_id
        log.info(
            "order recorded",
            extra={"orderId": order.order_id, "total": str(order.total), "currency": currency},
        )

    async def _payment_link(self, message: BusMessage) -> None:
        if message.message_id in self.links:
            log.info("payment link already created", extra={"actionId": message.message_id})
            return
        params = message.params()
        order = self._order_for(message, params)
        if order.total <= 0:
            raise HandlerRejected("payment_link: nothing to pay (the total is zero)")
        link = await self._payments.create_link(order)
        self.links[message.message_id] = LinkRecord(
            message.message_id, order.order_id, message.tenant_id, message.session_id, link
        )
        log.info(
            "payment link created",
            extra={"actionId": message.message_id, "orderId": order.order_id},
        )

    def _order_for(self, message: BusMessage, params: Mapping[str, Any]) -> Order:
        named = params.get("orderId")
        order = self.orders.get(str(named)) if named else None
        if order is not None and order.tenant_id != message.tenant_id:
            order = None  # another tenant's order id: never charge it
        order = order or self.order_of_turn(
            message.tenant_id, message.session_id, message.correlation_id
        )
        if order is not None:
            return order
        currency = _currency(params.get("currency"))
        try:
            amount = money(params.get("amount"), currency)
        except ValueError:
            raise HandlerRejected("payment_link: no order and no valid amount") from None
        # No order to pay: the link stands alone, named by its action.
        return Order(
            order_id=message.message_id,
            tenant_id=message.tenant_id,
            session_id=message.session_id,
            correlation_id=message.correlation_id,
            product_id="",
            quantity=1,
            unit_price=amount,
            currency=currency,
            total=amount,
        )


def _currency(value: Any) -> str:
    if not isinstance(value, str) or not CURRENCY.match(value):
        raise HandlerRejected("currency must be an ISO 4217 code")
    return value.upper()
