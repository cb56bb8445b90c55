"""Mask personal data in customer text before it leaves the warehouse in an alert.

Leadership needs the customers' words, not their contact details: an alert
email is forwarded, archived and pasted into slides, so anything that names or
reaches a person (email address, phone number, card number, IBAN) is masked at
the last step, where the text is shown. The warehouse keeps the original.

The patterns are deliberately conservative about what they *keep*: prices,
dates, times, short order numbers and error codes are what makes a complaint
actionable, so a number is only masked when it looks like one of the four
kinds above. Card numbers and IBANs carry a check digit (Luhn, ISO 7064
mod 97-10), which lets us mask them without mangling other long numbers. That
arithmetic cannot be written as a regular expression, hence
:func:`mask_pii_expr` maps the Python function over a column; alerts mask a
handful of examples, never whole tables.
"""

from __future__ import annotations

import re

import polars as pl

# Local part kept to its first character: enough to tell "j***" from "m***"
# in a thread, not enough to write to them. The domain stays: "a customer at
# bigcorp.com" is often the point of the complaint.
_EMAIL = re.compile(
    r"(?<![\w.%+-])(\w)[\w.%+-]*@"
    r"((?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,24})(?![\w-])"
)

# ISO 13616: country, 2 check digits, up to 30 alphanumerics, printed in
# groups of four or not at all.
_IBAN = re.compile(r"\b([A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?)\b")

# 13-19 digits, optionally separated by single spaces or dashes.
_CARD = re.compile(r"(?<![\w.,/-])(\d(?:[ -]?\d){12,18})(?![\w]|[.,]\d)")

# Anything phone-like: an optional +, then digits with single spaces,
# dots, dashes or parentheses between them. Filtered by _looks_like_phone.
_PHONE = re.compile(
    r"(?<![\w@#/.,:*+-])"  # not the tail of a word, code, path, decimal or time
    # Each group after the first needs a separator (or follows a ")"), so a
    # long digit run has one parse and cannot backtrack exponentially.
    r"(\+?\(?\d+\)?(?:(?:[ .\-]|(?<=\)))\(?\d+\)?)*)"
    r"(?![\w]|[.,:/-]\d)"
)
_DATE_LIKE = re.compile(
    r"\d{4}[-./]\d{1,2}[-./]\d{1,2}"  # 2026-03-10, 2026.03.10
    r"|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}"  # 10/03/2026, 10.03.26
)
_IPV4 = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_ok(compact: str) -> bool:
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


def _mask_iban(m: re.Match[str]) -> str:
    compact = m.group(1).replace(" ", "")
    if not _iban_ok(compact):
        return m.group(0)
    return f"{compact[:2]}** **** **** {compact[-4:]}"


def _mask_card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(1))
    if not (13 <= len(digits) <= 19 and _luhn_ok(digits)):
        return m.group(0)
    return f"**** **** **** {digits[-4:]}"


def _mask_email(m: re.Match[str]) -> str:
    return f"{m.group(1)}***@{m.group(2)}"


def _looks_like_phone(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    international = candidate.startswith(("+", "00"))
    if not 8 <= len(digits) <= 15:
        return False
    if _DATE_LIKE.search(candidate) or _IPV4.match(candidate):
        return False
    separated = bool(re.search(r"[ .\-()]", candidate))
    if international or separated:
        # A separated run of 8+ digits with no date shape: "020 7946 0958",
        # "(555) 123-4567", "06 12 34 56 78". Decimal amounts never get here:
        # a price has at most one dot and a couple of decimals, see below.
        return not re.fullmatch(r"\d+[.,]\d{1,2}", candidate)
    # One unbroken run: a national number starts with its trunk 0
    # (0612345678); a plain 10-digit run is the North-American shape. Other
    # bare runs are order or account references and are left alone.
    return (digits.startswith("0") and 9 <= len(digits) <= 11) or len(digits) == 10


def _mask_phone(m: re.Match[str]) -> str:
    candidate = m.group(1)
    if not _looks_like_phone(candidate):
        return m.group(0)
    positions = [i for i, ch in enumerate(candidate) if ch.isdigit()]
    keep = set(positions[-2:])
    return "".join("*" if ch.isdigit() and i not in keep else ch for i, ch in enumerate(candidate))


def mask_pii(text: str) -> str:
    """Return ``text`` with emails, phone numbers, card numbers and IBANs masked.

    Order matters: IBANs and cards first (their check digits make them
    certain), then emails (so digits inside an address are not read as a
    phone), then phones over whatever digits are left.
    """
    if not text:
        return text
    text = _IBAN.sub(_mask_iban, text)
    text = _CARD.sub(_mask_card, text)
    text = _EMAIL.sub(_mask_email, text)
    return _PHONE.sub(_mask_phone, text)


def mask_pii_expr(col: pl.Expr) -> pl.Expr:
    """:func:`mask_pii` over a String column (nulls stay null).

    Element-wise Python on purpose: the check-digit tests have no vectorised
    form, and masking runs on a few example complaints per alert.
    """
    return col.map_elements(mask_pii, return_dtype=pl.String, skip_nulls=True)
