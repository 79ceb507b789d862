"""Removes personal identifiers from free text before it reaches a model (training and inference).

Customer profiles in promogym are generated without personal data, but a conversion model is meant
to run on real CRM text too, so every text passes this scrubber: e-mail addresses, phone numbers,
card-like and IBAN-like numbers, URLs, IP addresses and @handles become placeholder tokens.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE), "[EMAIL]"),
    (re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE), "[URL]"),
    (re.compile(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}(?:\s?[A-Z0-9]{1,4})?\b"), "[IBAN]"),
    (re.compile(r"(?<![\w])(?:\+|00)\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){1,4}"), "[PHONE]"),
    (re.compile(r"\b(?:\d[ -]?){13,19}\b"), "[CARD]"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), "[IP]"),
    (re.compile(r"(?<![\w])\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}\b"), "[PHONE]"),
    (re.compile(r"\b0\d{2,4}[\s.-]?\d{3,4}[\s.-]?\d{3,4}\b"), "[PHONE]"),
    (re.compile(r"(?<![\w@])@[A-Za-z_][\w.]{2,}"), "[HANDLE]"),
)


@functools.lru_cache(maxsize=1 << 20)
def scrub(text: str) -> str:
    """``text`` with personal identifiers replaced by placeholder tokens (memoised: profiles and
    descriptions repeat across offers)."""
    for pattern, token in _PATTERNS:
        text = pattern.sub(token, text)
    return text


def scrub_all(texts: Iterable[str]) -> list[str]:
    """:func:`scrub` of each text."""
    return [scrub(t) for t in texts]
