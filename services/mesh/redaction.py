"""Removing personal data from text that leaves a tenant's scope (global documents, logs).

`scrub_pii` replaces email addresses, IBANs, payment card numbers (Luhn-valid) and phone
numbers (9 to 15 digits) with placeholders. It is a safety net for text the platform shares,
not a guarantee: names and street addresses are not recognised.
"""

import re

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]+(?:\.[\w-]+)+")
IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
PHONE = re.compile(r"(?<![\w.])(?:\+|\()?\d(?:[\s().-]{0,2}\d){8,14}(?![\w.]?\d)")


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[card]" if _luhn_valid(digits) else match.group()


def _phone(match: re.Match[str]) -> str:
    return match.group() if ISO_DATE.match(match.group()) else "[phone]"


def scrub_pii(text: str) -> str:
    """`text` with emails, IBANs, card numbers and phone numbers replaced by placeholders."""
    text = EMAIL.sub("[email]", text)
    text = IBAN.sub("[iban]", text)
    text = CARD.sub(_card, text)
    return PHONE.sub(_phone, text)
