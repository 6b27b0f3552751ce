"""``polybus queues [NAME ...] [--json]``: each queue's ready, unacked and consumers, and how
many dead letters it has — every queue of the URL's namespace, or those named (a broker that
cannot list its queues, as AMQP cannot, needs them named)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

import polybus
from polybus.console.common import OK, add_url, adopted, run_on_bus
from polybus.core.workqueue import dead_letter_name

COLUMNS = ("queue", "ready", "unacked", "consumers", "dead")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_url(parser)
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these queues")
    parser.add_argument("--json", action="store_true", help="one JSON object per queue")


def run(args: argparse.Namespace) -> int:
    return run_on_bus(args, lambda bus: _show(bus, args))


def _show(bus: polybus.Bus, args: argparse.Namespace) -> int:
    listed = not args.names
    names: list[str] = bus.queue_names() if listed else list(dict.fromkeys(args.names))
    present = set(names)
    dead_letter_queues = {dead_letter_name(name) for name in names}
    rows = []
    for name in names:
        dead = dead_letter_name(name)
        if listed and name in dead_letter_queues:
            continue  # shown as the dead-letter count of its queue
        try:
            row: dict[str, Any] = asdict(adopted(bus, name).stats())
        except polybus.NotFound:
            if listed:
                continue  # deleted since it was listed (a subscription's queue, say)
            raise
        row["queue"] = name  # as the URL's namespace names it
        row["dead"] = _size(bus, dead) if not listed or dead in present else None
        rows.append(row)
    if args.json:
        for row in rows:
            print(json.dumps({column: row[column] for column in COLUMNS}))
    else:
        print(_table(rows))
    return OK


def _size(bus: polybus.Bus, name: str) -> int | None:
    try:
        return adopted(bus, name).size()
    except polybus.NotFound:
        return None


def _table(rows: list[dict[str, Any]]) -> str:
    cells = [[column.upper() for column in COLUMNS]] + [
        [str(row[column]) if row[column] is not None else "-" for column in COLUMNS] for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    ]
    return "\n".join(lines)
