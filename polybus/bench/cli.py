"""The body of ``polybus bench``: build the plan, run it under progress bars, write outputs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from polybus.bench import DEFAULT_MESSAGES, DEFAULT_SIZES, QUICK_MESSAGES
from polybus.bench.model import Plan
from polybus.core.errors import MissingDependency

QUICK_SIZES = (128, 1024)
TABLE_WIDTH = 200


def plan_from(args: argparse.Namespace) -> Plan:
    messages = args.messages or (QUICK_MESSAGES if args.quick else DEFAULT_MESSAGES)
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    return Plan(
        messages=messages,
        sizes=sizes,
        patterns=args.patterns,
        rate=args.rate,
        repeat=args.repeat,
    )


def main(args: argparse.Namespace) -> int:
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
    except ImportError:
        print("polybus bench needs rich; run: pip install 'polybus[bench]'", file=sys.stderr)
        return 2
    from polybus.bench import report as output
    from polybus.bench import runner

    if args.plot:  # fail before measuring, not after
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("--plot needs matplotlib; run: pip install 'polybus[bench]'", file=sys.stderr)
            return 2
    plan = plan_from(args)
    urls = args.urls or list(runner.DEFAULT_URLS)
    console = Console()
    console.width = max(console.width, TABLE_WIDTH)  # a full table, not ellipses
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("bench", total=runner.count_steps(plan, urls, args.baseline))

        def advance(what: str, done: int) -> None:
            progress.update(task, description=what, advance=done)

        report = runner.run(plan, urls, args.baseline, advance)
    output.show(report, console)
    try:
        if args.json:
            output.write_json(report, Path(args.json))
        if args.csv:
            output.write_csv(report, Path(args.csv))
        if args.plot:
            output.plot(report, Path(args.plot))
    except (OSError, MissingDependency) as exc:
        print(f"polybus bench: {exc}", file=sys.stderr)
        return 2
    return 1 if report.failed else 0
