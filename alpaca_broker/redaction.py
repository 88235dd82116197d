"""Secrets out of log lines, in every form a line can carry them.

A secret reaches a log line raw, or already transformed by whoever formatted it: JSON-escaped
(``json.dumps``, with or without ``ensure_ascii``), ``repr``/``ascii``-escaped (a dict or a
tuple in a message), as UTF-8 ``bytes`` repr, percent-encoded (a URL, ``quote`` or
``quote_plus``, upper- or lower-case hex) or percent-decoded, and any of those JSON-escaped
once more (a ``repr`` inside a JSON log line). :class:`Redactor` replaces each of these forms
with ``***``.

Short secrets: a secret of fewer than :data:`MIN_SECRET_CHARS` characters would, replaced
everywhere, blank out common substrings of unrelated text (and show where the secret's
characters occur). Such a secret is replaced where it stands alone (no letter, digit or ``_``
right before or after it: ``pw`` in ``user pw=pw,`` but not in ``pwd`` or ``upward``), and
wherever its position marks it as one: the password of any ``scheme://user:password@`` URL,
or of a query parameter named for a password (``?password=``), which is masked whatever its
length (and whether or not it is a known secret). Alpaca's own credentials are 20 and 40
characters; shorter than 8 they are refused at start (``Settings.credentials``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

MASK = "***"
MIN_SECRET_CHARS = 4

# The password of any URL with userinfo: scheme://[user]:PASSWORD@host (kombu masks its own
# URLs the same way, as redis://:**@host).
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@\"'<>]*:)([^\s/@\"'<>]+)(@)")
_PERCENT = re.compile(r"%[0-9A-F]{2}")
# A query parameter that holds a secret (redis-py reads ``?password=``; others their own
# spellings), and its value in a line of text.
_SECRET_PARAM = re.compile(r"[a-z_]*(?:password|passwd|pwd|secret|token)", re.IGNORECASE)
_QUERY_SECRET = re.compile(
    r"([?&;][a-z_]*(?:password|passwd|pwd|secret|token)=)([^\s&#;\"'<>]+)", re.IGNORECASE
)


def _json_forms(text: str) -> set[str]:
    return {json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}


def _percent_forms(text: str) -> set[str]:
    encoded = {quote(text, safe=""), quote(text), quote_plus(text), quote_plus(text, safe="/")}
    return encoded | {_PERCENT.sub(lambda m: m.group(0).lower(), form) for form in encoded}


def forms(secret: str, min_chars: int = MIN_SECRET_CHARS) -> set[str]:
    """Every form of ``secret`` a log line may hold (see the module's docstring), of at least
    ``min_chars`` characters."""
    first = {secret, unquote(secret), repr(secret)[1:-1], ascii(secret)[1:-1]}
    first.add(repr(secret.encode("utf-8"))[2:-1])
    first.add(secret.encode("unicode_escape").decode("ascii"))
    first |= _json_forms(secret) | _percent_forms(secret)
    # A second layer: any of those inside a JSON document (a repr in a JSON log line).
    second = {escaped for form in first for escaped in _json_forms(form)}
    return {form for form in first | second if len(form) >= min_chars}


class Redactor:
    """Replaces every form of every secret, and every URL password, with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        found: set[str] = set()
        short: set[str] = set()
        for secret in secrets:
            found |= forms(secret)
            short |= {form for form in forms(secret, 1) if len(form) < MIN_SECRET_CHARS}
        # Longest first, so that a longer form is not left half-replaced by a shorter one.
        ordered = sorted(found, key=lambda form: (-len(form), form))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        # A short form, where it stands alone (see the module's docstring).
        alone = "|".join(map(re.escape, sorted(short, key=lambda form: (-len(form), form))))
        self._short = re.compile(rf"(?<!\w)(?:{alone})(?!\w)") if short else None

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        if self._short is not None:
            text = self._short.sub(MASK, text)
        text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
        return _QUERY_SECRET.sub(lambda m: f"{m.group(1)}{MASK}", text)


def _query_secret(pair: str) -> str | None:
    """The value of a ``name=value`` query pair whose name says it is a secret, else None."""
    name, sep, value = pair.partition("=")
    return value if sep and value and _SECRET_PARAM.fullmatch(unquote_plus(name)) else None


def url_secrets(url: str) -> list[str]:
    """Every secret ``url`` carries, as written and percent-decoded: the password of its
    userinfo (``scheme://user:password@``) and the value of each query parameter named for a
    password, secret or token (``?password=``)."""
    parts = urlsplit(url)
    found = [parts.password, unquote(parts.password)] if parts.password else []
    for pair in parts.query.split("&"):
        if value := _query_secret(pair):
            found += [value, unquote_plus(value)]
    return list(dict.fromkeys(found))


def masked_url(url: str) -> str:
    """``url`` with every secret of :func:`url_secrets` replaced by ``***``, for printing."""
    parts = urlsplit(url)
    netloc, query = parts.netloc, parts.query
    if parts.password:
        userinfo, _, address = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{address}"
    query = "&".join(
        f"{pair.partition('=')[0]}={MASK}" if _query_secret(pair) else pair
        for pair in query.split("&")
    )
    # Spliced into the URL as written (urlunsplit would respell some, e.g. unix:///path).
    if netloc != parts.netloc:
        url = url.replace(parts.netloc, netloc, 1)
    if query != parts.query:
        url = url.replace(f"?{parts.query}", f"?{query}", 1)
    return url
