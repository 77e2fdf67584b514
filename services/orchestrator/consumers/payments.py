"""The payments port: a payment link for an order. Money is `Decimal`, never float.

`LocalPayments` is the embedded profile's provider: no money moves; the link is a deterministic
local URL (`http://127.0.0.1/pay/<order id>`). A real provider (Wompi, Stripe, ...) implements
`PaymentsProvider` and should pass the order id as its idempotency key.
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Final, Protocol

__all__ = [
    "LocalPayments",
    "Payable",
    "PaymentLink",
    "PaymentsProvider",
    "minor_units",
    "money",
]

ZERO_DECIMAL_CURRENCIES: Final = frozenset({"CLP", "JPY", "KRW", "PYG", "VND", "ISK", "UGX"})
"""ISO 4217 currencies without minor units (the rest use two decimals here)."""


def minor_units(currency: str) -> int:
    return 0 if currency.upper() in ZERO_DECIMAL_CURRENCIES else 2


def money(value: Any, currency: str) -> Decimal:
    """`value` (Decimal, int or numeric string; a float only through its shortest repr) as an
    amount of `currency`, rounded half up to its minor units. Raises ValueError for a negative,
    non-finite or non-numeric value."""
    if isinstance(value, bool):
        raise ValueError("an amount must be a number")
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation:
        raise ValueError("an amount must be a number") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError("an amount must be finite and not negative")
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_UP)


class Payable(Protocol):
    """What a payment link is created for (an order)."""

    @property
    def order_id(self) -> str: ...

    @property
    def tenant_id(self) -> str: ...

    @property
    def total(self) -> Decimal: ...

    @property
    def currency(self) -> str: ...


@dataclass(frozen=True)
class PaymentLink:
    url: str
    amount: Decimal
    currency: str
    expires_at: datetime

    def as_dict(self) -> dict[str, str]:
        """JSON-ready; the amount as a decimal string."""
        return {
            "url": self.url,
            "amount": str(self.amount),
            "currency": self.currency,
            "expiresAt": self.expires_at.isoformat(),
        }


class PaymentsProvider(Protocol):
    async def create_link(self, order: Payable) -> PaymentLink:
        """A link to pay `order.total` in `order.currency`. Calling it again for the same order
        id must not charge twice."""


class LocalPayments:
    """Deterministic links, no money moved (embedded profile, tests)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1/pay",
        *,
        ttl: timedelta = timedelta(hours=24),
        clock: Any = time.time,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._ttl = ttl
        self._clock = clock
        self.created: list[str] = []
        """Order ids a link was created for, in order (one per call)."""

    async def create_link(self, order: Payable) -> PaymentLink:
        self.created.append(order.order_id)
        return PaymentLink(
            url=f"{self._base_url}/{urllib.parse.quote(order.order_id, safe='')}",
            amount=money(order.total, order.currency),
            currency=order.currency.upper(),
            expires_at=datetime.fromtimestamp(self._clock(), tz=UTC) + self._ttl,
        )
