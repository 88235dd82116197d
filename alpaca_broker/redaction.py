"""Secrets out of log lines, in every form a line can carry them.

A secret reaches a log line raw, or already transformed by whoever formatted it: JSON-escaped
(``json.dumps``, with or without ``ensure_ascii``), ``repr``/``ascii``-escaped (a dict or a
tuple in a message), as UTF-8 ``bytes`` repr, percent-encoded (a URL, ``quote`` or
``quote_plus``, upper- or lower-case hex) or percent-decoded, and any of those JSON-escaped
once more (a ``repr`` inside a JSON log line). :class:`Redactor` replaces each of these forms
with ``***``.

Short secrets: a secret of fewer than :data:`MIN_SECRET_CHARS` characters would, replaced
everywhere, blank out common substrings of unrelated text (and show where the secret's
characters occur). Such a secret is replaced only where its position marks it as one: the
password of any ``scheme://user:password@`` URL, which is masked whatever its length (and
whether or not it is a known secret). Alpaca's own credentials are 20 and 40 characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote

MASK = "***"
MIN_SECRET_CHARS = 4

# The password of any URL with userinfo: scheme://[user]:PASSWORD@host (kombu masks its own
# URLs the same way, as redis://:**@host).
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@\"'<>]*:)([^\s/@\"'<>]+)(@)")
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def _json_forms(text: str) -> set[str]:
    return {json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}


def _percent_forms(text: str) -> set[str]:
    encoded = {quote(text, safe=""), quote(text), quote_plus(text), quote_plus(text, safe="/")}
    return encoded | {_PERCENT.sub(lambda m: m.group(0).lower(), form) for form in encoded}


def forms(secret: str) -> set[str]:
    """Every form of ``secret`` a log line may hold (see the module's docstring)."""
    first = {secret, unquote(secret), repr(secret)[1:-1], ascii(secret)[1:-1]}
    first.add(repr(secret.encode("utf-8"))[2:-1])
    first.add(secret.encode("unicode_escape").decode("ascii"))
    first |= _json_forms(secret) | _percent_forms(secret)
    # A second layer: any of those inside a JSON document (a repr in a JSON log line).
    second = {escaped for form in first for escaped in _json_forms(form)}
    return {form for form in first | second if len(form) >= MIN_SECRET_CHARS}


class Redactor:
    """Replaces every form of every secret, and every URL password, with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        found: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_CHARS:
                found |= forms(secret)
        # Longest first, so that a longer form is not left half-replaced by a shorter one.
        ordered = sorted(found, key=lambda form: (-len(form), form))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
