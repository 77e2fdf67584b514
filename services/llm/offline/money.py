"""Amounts as the reply's language writes them: always two decimals, from a Decimal (never a
float), with the language's separators and currency placement.

    Spanish   14,50 €    1234,50 €    12.345,50 €    14,50 US$    14,50 CHF
    English   €14.50     €1,234.50    €12,345.50     $14.50       CHF 14.50

Spanish puts the symbol after the amount and groups thousands with "." from five digits on
(the RAE's and CLDR's rule: 1234,50 but 12.345,50); English puts the symbol first and groups
with ",". A currency without a symbol in the language is written as its ISO 4217 code, after
the amount in Spanish and before it, spaced, in English. Other languages get the
code after an amount with a decimal point ("14.50 EUR"), which no reader can misread.
"""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

CENT: Final = Decimal("0.01")


@dataclass(frozen=True)
class _Style:
    decimal: str
    group: str
    min_grouping: int
    """The fewest integer digits that get a group separator (5: 1234 stays whole)."""
    symbol_first: bool
    symbols: dict[str, str]


STYLES: Final = {
    "es": _Style(",", ".", 5, symbol_first=False, symbols={"EUR": "€", "USD": "US$"}),
    "en": _Style(".", ",", 4, symbol_first=True, symbols={"EUR": "€", "GBP": "£", "USD": "$"}),
}
NEUTRAL: Final = _Style(".", "", 0, symbol_first=False, symbols={})


@dataclass(frozen=True)
class Money:
    """An amount in a currency, to be shown in `language` (a primary subtag: "es", "en")."""

    amount: Decimal
    currency: str
    language: str

    def __str__(self) -> str:
        return format_money(self.amount, self.currency, self.language)

    def number(self) -> str:
        """The amount alone, two decimals, in the language's separators ("14,50")."""
        return format_amount(self.amount, self.language)


def _style(language: str) -> _Style:
    return STYLES.get(language.split("-", 1)[0].lower(), NEUTRAL)


def _check(amount: Decimal) -> None:
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError("an amount is a finite Decimal")


def format_amount(amount: Decimal, language: str) -> str:
    """`amount` rounded half up to the cent, with the language's decimal and group separators."""
    _check(amount)
    style = _style(language)
    cents = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    sign = "-" if cents < 0 else ""
    units, _, decimals = f"{abs(cents):f}".partition(".")
    if style.group and len(units) >= style.min_grouping:
        groups: list[str] = []
        while len(units) > 3:
            units, tail = units[:-3], units[-3:]
            groups.insert(0, tail)
        units = style.group.join([units, *groups])
    return f"{sign}{units}{style.decimal}{decimals}"


def format_money(amount: Decimal, currency: str, language: str) -> str:
    """`amount` in `currency` (ISO 4217; "" for none) as `language` writes it."""
    _check(amount)
    if amount < 0:
        return "-" + format_money(-amount, currency, language)
    number = format_amount(amount, language)
    code = currency.strip().upper()
    if not code:
        return number
    style = _style(language)
    symbol = style.symbols.get(code)
    if style.symbol_first:
        return f"{symbol}{number}" if symbol else f"{code} {number}"
    return f"{number} {symbol or code}"
