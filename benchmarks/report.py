"""The benchmark's table, ratios and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = (
    f"{'design':>8} {'offered/s':>9} {'path':>6} {'ingest/s':>9} {'events/s':>9} {'p50 ms':>8} "
    f"{'p95 ms':>8} "
    f"{'p99 ms':>8} {'prod CPU%':>9} {'work CPU%':>9} {'redis CPU%':>10} {'prod MB':>7} "
    f"{'work MB':>7} {'dropped':>7} {'lost':>5}"
)


def _line(row: dict[str, Any], path: str) -> str:
    s, cpu, rss = row[path], row["cpu_percent"], row["peak_rss_mb"]
    received = row["received"]
    lost = "-" if path == "orders" or received is None else str(received - row["published"])
    dropped = row["dropped"] if path == "prices" else 0
    offered = f"{row['offered']:>9.0f}" if row["offered"] else f"{'max':>9}"
    ingest = f"{row.get('ingest_per_s') or 0:>9.0f}" if path == "prices" else f"{'':>9}"
    return (
        f"{row['design']:>8} {offered} {path:>6} {ingest} {s['events_per_s']:>9.0f} "
        f"{s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f} {s['p99_ms']:>8.1f} {cpu['producer']:>9.0f} "
        f"{cpu['worker']:>9.0f} {cpu['redis']:>10.0f} {rss['producer']:>7.0f} "
        f"{rss['worker']:>7.0f} {dropped:>7} {lost:>5}"
    )


def best(rows: list[dict[str, Any]], design: str) -> float:
    """The highest price events/s a design delivered at any offered rate."""
    return max((r["prices"]["events_per_s"] for r in rows if r["design"] == design), default=0.0)


def best_ingest(rows: list[dict[str, Any]], design: str) -> float:
    """The highest ingest rate (messages read and handed off per second) a design reached."""
    return max((r.get("ingest_per_s") or 0.0 for r in rows if r["design"] == design), default=0.0)


def render(rows: list[dict[str, Any]]) -> str:
    """The table (one line per design, rate and path) and the throughput ratios."""
    lines = [COLUMNS, "-" * len(COLUMNS)]
    for row in rows:
        lines.append(_line(row, "prices"))
        if row.get("orders"):
            lines.append(_line(row, "orders"))
    ours, naive, direct = best(rows, "pipeline"), best(rows, "naive"), best(rows, "direct")
    if ours and naive:
        lines.append(f"pipeline / naive throughput: {ours / naive:.1f}x")
    if ours and direct:
        lines.append(f"pipeline / direct throughput: {ours / direct:.2f}")
    if limit := best_ingest(rows, "ceiling"):
        for design in ("ingest", "ingest-split", "pipeline"):
            if mine := best_ingest(rows, design):
                lines.append(f"{design} producer ingest / ceiling: {mine / limit:.2f}")
    for row in rows:
        if relative := row.get("relative"):
            orders = row.get("orders") or {}
            lines.append(
                f"{row['design']} at {relative} of the ceiling ({row['offered']:.0f}/s): "
                f"ingest {row.get('ingest_per_s') or 0:.0f}/s, dropped {row['dropped']}, "
                f"order p99 {orders.get('p99_ms', float('nan')):.1f} ms"
            )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> str:
    """Throughput and p99 latency against offered load, per design, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: pip install matplotlib (or make bench)"
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for design in dict.fromkeys(r["design"] for r in rows):
        mine = [r for r in rows if r["design"] == design]
        offered = [r["offered"] for r in mine]
        left.plot(offered, [r["prices"]["events_per_s"] for r in mine], marker="o", label=design)
        right.plot(offered, [r["prices"]["p99_ms"] for r in mine], marker="o", label=design)
    rates = sorted({r["offered"] for r in rows})
    left.plot(rates, rates, linestyle=":", color="grey", label="offered")
    left.set(xlabel="offered market messages/s", ylabel="events/s on channels", title="Throughput")
    right.set(xlabel="offered market messages/s", ylabel="p99 ms (log)", title="Latency")
    right.set_yscale("log")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return f"plot: {path}"
