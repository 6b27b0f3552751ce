"""Showing a report: the rich table, ``--json``, ``--csv`` and the ``--plot`` chart."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING

from polybus.bench.model import CASES, SUBSCRIBERS, Result
from polybus.bench.runner import Report
from polybus.core.errors import MissingDependency

if TYPE_CHECKING:
    from rich.console import Console

# cases the chart draws as latency (ms, lower is better) rather than msgs/s
LATENCY_CASES = ("latency",)


def _number(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def header_lines(report: Report) -> list[str]:
    m, plan = report.machine, report.plan
    lines = [
        f"polybus {m['polybus']} bench — {m['date']} on {m['host']}: {m['cpus']} CPUs "
        f"({m['cpu']}), load {'/'.join(map(str, m['load']))}, Python {m['python']}, "
        f"{m['platform']}",
        f"sizes {', '.join(f'{s} B' for s in plan.sizes)}; work queue {plan.messages} msgs, "
        f"fanout {plan.fanout} msgs x {SUBSCRIBERS} subscribers, latency {plan.latency} msgs at "
        f"{plan.rate:g}/s, RPC {plan.rpc} calls; warm-up {plan.warmup} msgs per case; "
        "fresh queues per case",
    ]
    for broker in report.brokers:
        counts = (
            "" if broker.messages == plan.messages else f" (counts scaled to {broker.messages})"
        )
        lines.append(f"{broker.url}: durability: {broker.durability}{counts}")
    return lines


def show(report: Report, console: Console) -> None:
    from rich.table import Table

    for line in header_lines(report):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    table = Table(title="results (msgs/s and MB/s of payload; latency in ms)")
    for column, justify in (
        ("case", "left"),
        ("size", "right"),
        ("broker", "left"),
        ("client", "left"),
        ("n", "right"),
        ("msgs/s", "right"),
        ("MB/s", "right"),
        ("p50", "right"),
        ("p95", "right"),
        ("p99", "right"),
        ("vs raw", "right"),
        ("how", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    order = {case: i for i, case in enumerate(CASES)}
    measured = [r for r in report.results if r.case != "*"]
    measured.sort(key=lambda r: (order.get(r.case, 99), r.size or 0))
    previous = ""
    for r in measured:
        if previous and r.case != previous:
            table.add_section()
        previous = r.case
        if r.status != "ok":
            table.add_row(r.case, f"{r.size}", r.broker, r.client, f"{r.status}: {r.detail}")
            continue
        table.add_row(
            r.case,
            f"{r.size}",
            r.broker,
            r.client,
            f"{r.messages}",
            _number(r.msgs_per_s),
            _number(r.mb_per_s, 2),
            _number(r.p50_ms, 2),
            _number(r.p95_ms, 2),
            _number(r.p99_ms, 2),
            "" if r.vs_raw is None else f"{r.vs_raw:.2f}x",
            r.mode,
        )
    console.print(table)
    for r in report.results:
        if r.case == "*":  # a client that could not start: unreachable, or a bug on connect
            line = f"{r.broker} {r.client}: {r.status}: {r.detail}"
            console.print(line, markup=False, soft_wrap=True)
    for note in report.notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


def write_json(report: Report, path: Path) -> None:
    document = {
        "machine": report.machine,
        "plan": {**asdict(report.plan), "warmup": report.plan.warmup},
        "brokers": [
            {
                "url": broker.url,
                "durability": broker.durability,
                "messages": broker.messages,
                "clients": broker.clients,
            }
            for broker in report.brokers
        ],
        "results": [r.row() for r in report.results],
        "notes": report.notes,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def write_csv(report: Report, path: Path) -> None:
    names = [f.name for f in fields(Result)]
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, names)
        writer.writeheader()
        for r in report.results:
            writer.writerow(r.row())


def plot(report: Report, path: Path) -> None:
    """A grouped bar chart per case: sizes along x, one bar per broker and client."""
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependency(
            "--plot needs matplotlib, which is not installed; run: pip install 'polybus[bench]'"
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in report.results if r.status == "ok" and r.size is not None]
    cases = [case for case in CASES if any(r.case == case for r in ok)]
    series = list(dict.fromkeys((r.broker, r.client) for r in ok))
    sizes = list(report.plan.sizes)
    columns = 2
    rows = max(1, -(-len(cases) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(14, 4 * rows), squeeze=False)
    width = 0.8 / max(1, len(series))
    palette = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]  # 20 distinct colours
    for index, case in enumerate(cases):
        axis = axes[index // columns][index % columns]
        latency = case in LATENCY_CASES
        for i, (broker, client) in enumerate(series):
            values = []
            for size in sizes:
                row = next(
                    (
                        r
                        for r in ok
                        if (r.case, r.size, r.broker, r.client) == (case, size, broker, client)
                    ),
                    None,
                )
                value = None if row is None else (row.p50_ms if latency else row.msgs_per_s)
                values.append(value if value else math.nan)
            positions = [x + (i - (len(series) - 1) / 2) * width for x in range(len(sizes))]
            color = palette[i % len(palette)]
            axis.bar(positions, values, width, label=f"{broker} {client}", color=color)
        axis.set_title(f"{case} — {'p50 latency, ms (lower is better)' if latency else 'msgs/s'}")
        axis.set_xticks(range(len(sizes)), [f"{s} B" for s in sizes])
        axis.set_yscale("log")
    for index in range(len(cases), rows * columns):
        axes[index // columns][index % columns].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8)
    figure.suptitle(f"polybus bench, {report.machine['date']}, {report.machine['cpus']} CPUs")
    figure.tight_layout(rect=(0, 0.08, 1, 0.97))
    figure.savefig(path, dpi=100)
    plt.close(figure)
