"""Synthetic news: articles naming one or more symbols, some sent again later as updates
(same ``id``, later ``updated_at``)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from simulator import assetmsgs
from simulator.codec import Message

_TOPICS = (
    "Reports Quarterly Results Above Estimates",
    "Announces Share Buyback Program",
    "Shares Move On Analyst Upgrade",
    "Enters Partnership With",
    "Names New Chief Financial Officer",
)
_AUTHORS = ("Benzinga Newsdesk", "Benzinga Insights", "Jane Analyst")
#: Share of articles that are updates of an earlier one.
UPDATE_SHARE = 0.3


class NewsDesk:
    """Writes articles; ids start high and grow, as Alpaca's do."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._next_id = 24_900_000 + rng.randrange(10_000)
        self._sent: list[tuple[int, int, list[str], str]] = []  # id, created, symbols, topic

    def article(self, symbols: Sequence[str], ts_ns: int) -> Message:
        """A new article about one or two of ``symbols``, or an update of an earlier one."""
        rng = self._rng
        if self._sent and rng.random() < UPDATE_SHARE:
            article_id, created, named, topic = self._sent.pop(rng.randrange(len(self._sent)))
            return self._build(article_id, created, ts_ns, named, topic, updated=True)
        named = sorted(set(rng.sample(list(symbols), k=min(len(symbols), rng.choice((1, 1, 2))))))
        topic = rng.choice(_TOPICS)
        article_id = self._next_id
        self._next_id += 1
        self._sent = [*self._sent[-99:], (article_id, ts_ns, named, topic)]
        return self._build(article_id, ts_ns, ts_ns, named, topic, updated=False)

    def _build(
        self,
        article_id: int,
        created: int,
        updated_ns: int,
        named: list[str],
        topic: str,
        *,
        updated: bool,
    ) -> Message:
        headline = f"{', '.join(named)} {topic}"
        note = " (updated)" if updated else ""
        return assetmsgs.news(
            article_id,
            headline=headline + note,
            summary=f"{headline}.",
            author=self._rng.choice(_AUTHORS),
            created_ns=created,
            updated_ns=updated_ns,
            content=f"<p>{headline}{note}.</p>",
            url=f"https://www.benzinga.com/news/{article_id}",
            symbols=named,
        )
