"""`polybus bench`: its arguments, its outputs, and an unreachable broker as a line."""

from __future__ import annotations

import argparse
import csv
import json
import sys

import pytest

from polybus import bench, cli
from polybus.bench import runner
from polybus.bench.cli import plan_from
from polybus.bench.model import (
    CASES,
    PATTERNS,
    Result,
    display_url,
    percentile,
    with_namespace,
)
from polybus.bench.runner import _ratios

QUICK = ["bench", "--quick", "--messages", "60", "--rate", "5000"]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_measure_every_pattern_at_the_classic_sizes():
    plan = plan_from(parse())
    assert plan.sizes == (128, 512, 1024, 10240)
    assert plan.patterns == tuple(PATTERNS)
    assert plan.cases == CASES
    assert plan.messages == bench.DEFAULT_MESSAGES


def test_quick_is_small_unless_told_otherwise():
    assert plan_from(parse("--quick")).messages == bench.QUICK_MESSAGES
    assert plan_from(parse("--quick", "--messages", "7", "--sizes", "64")).messages == 7
    assert plan_from(parse("--quick", "--sizes", "64")).sizes == (64,)


def test_sizes_patterns_urls_and_outputs_parse():
    args = parse(
        "--url", "memory://a", "--url", "redis://h:1", "--sizes", "128,10240",
        "--patterns", "rpc,fanout", "--json", "r.json", "--csv", "r.csv", "--plot", "r.png",
        "--baseline",
    )  # fmt: skip
    assert args.urls == ["memory://a", "redis://h:1"]
    assert args.sizes == (128, 10240)
    assert plan_from(args).cases == ("rpc-seq", "rpc-32", "fanout")
    assert (args.json, args.csv, args.plot, args.baseline) == ("r.json", "r.csv", "r.png", True)


@pytest.mark.parametrize(
    "argv",
    [
        ["--sizes", "4"],  # too small to carry the latency timestamp
        ["--sizes", "1k"],
        ["--patterns", "workqueue,pigeons"],
        ["--messages", "0"],
        ["--rate", "-1"],
    ],
)
def test_bad_arguments_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    assert exit_.value.code == 2
    assert "error" in capsys.readouterr().err


def test_percentile_is_a_measured_value_by_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50.0,
        99.0,
        100.0,
    )
    assert percentile([3.0], 95) == 3.0


def test_urls_get_a_namespace_and_are_shown_without_password_or_query():
    assert with_namespace("memory://", "b1") == "memory://?namespace=b1"
    assert with_namespace("amqp://h/?heartbeat=5", "b1") == "amqp://h/?heartbeat=5&namespace=b1"
    shown = display_url("amqp://guest:secret@h:5672/?namespace=b1")
    assert shown == "amqp://guest:***@h:5672/"


def test_ratio_divides_by_the_raw_client_on_the_same_broker_case_and_size():
    def row(broker, client, rate, size=128, case="workqueue-send"):
        return Result(broker, client, case, size, msgs_per_s=rate)

    results = [
        row("redis://h", "redis-py", 1000.0),
        row("redis://h", "polybus", 500.0),
        row("redis://h", "polybus", 700.0, size=1024),  # no raw figure at this size
        row("amqp://h", "pika", 200.0),
        row("amqp://h", "kombu", 300.0),
        row("memory://", "polybus", 9000.0),
    ]
    _ratios(results)
    assert [r.vs_raw for r in results] == [1.0, 0.5, None, 1.0, 1.5, None]


def test_memory_run_writes_every_case_to_json_csv_and_a_chart(tmp_path, capsys):
    # Given a quick run on the memory broker with every output asked for
    out_json, out_csv, out_png = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.png"
    argv = [*QUICK, "--url", "memory://", "--sizes", "64,1024"]
    argv += ["--json", str(out_json), "--csv", str(out_csv), "--plot", str(out_png)]

    # When it runs
    assert cli.main(argv) == 0

    # Then every case at every size was measured through polybus, and every output says so
    printed = capsys.readouterr().out
    assert "workqueue-consume" in printed and "rpc-32" in printed
    document = json.loads(out_json.read_text())
    measured = {(r["case"], r["size"]) for r in document["results"] if r["client"] == "polybus"}
    assert measured == {(case, size) for case in CASES for size in (64, 1024)}
    assert all(r["status"] == "ok" and r["msgs_per_s"] > 0 for r in document["results"])
    latency = [r for r in document["results"] if r["case"] == "latency"]
    assert all(0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] for r in latency)
    assert document["machine"]["cpus"] and document["brokers"][0]["url"] == "memory://"
    assert "durability" in document["brokers"][0]
    with out_csv.open() as rows:
        table = list(csv.DictReader(rows))
    assert {(r["client"], r["case"], r["size"]) for r in table} == {
        (r["client"], r["case"], str(r["size"])) for r in document["results"]
    }
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_blocking_api_measures_the_work_queue_and_rpc_and_says_what_it_leaves_out(tmp_path):
    out_json = tmp_path / "r.json"
    argv = [*QUICK, "--url", "memory://", "--sizes", "64", "--patterns", "workqueue,rpc,fanout"]
    assert cli.main([*argv, "--json", str(out_json), "--repeat", "2"]) == 0
    document = json.loads(out_json.read_text())
    blocking = {r["case"] for r in document["results"] if r["client"] == "polybus-blocking"}
    assert blocking == {"workqueue-send", "workqueue-send-each", "workqueue-consume", "rpc-seq"}
    assert any("polybus-blocking" in note and "fanout" in note for note in document["notes"])


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1", "amqp://guest:secret@127.0.0.1:1/"])
def test_unreachable_broker_is_a_line_and_the_rest_still_runs(url, tmp_path, capsys):
    # Given one broker that answers and one that does not
    out_json = tmp_path / "r.json"
    argv = [*QUICK, "--url", url, "--url", "memory://", "--sizes", "64", "--baseline"]

    # When the bench runs on both
    code = cli.main([*argv, "--patterns", "workqueue", "--json", str(out_json)])

    # Then the dead one is reported unreachable, every client on it, and memory is measured
    assert code == 0
    printed = capsys.readouterr().out
    shown = display_url(url)
    assert f"{shown} polybus: unreachable" in printed
    document = json.loads(out_json.read_text())
    dead = [r for r in document["results"] if r["broker"] == shown]
    assert dead and all(r["status"] == "unreachable" and r["detail"] for r in dead)
    assert "secret" not in out_json.read_text()
    assert {r["client"] for r in dead} >= {"polybus", "polybus-blocking", "kombu"}
    alive = [r for r in document["results"] if r["broker"] == "memory://"]
    assert alive and all(r["status"] == "ok" for r in alive)


def test_unknown_scheme_is_unreachable_with_the_reason(capsys):
    assert cli.main([*QUICK, "--url", "nosuch://x", "--patterns", "rpc"]) == 0
    printed = capsys.readouterr().out
    assert "nosuch://x polybus: unreachable: no transport for scheme 'nosuch'" in printed


def test_plot_without_matplotlib_names_the_extra_before_measuring(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = cli.main([*QUICK, "--url", "memory://", "--plot", str(tmp_path / "r.png")])
    assert code == 2
    assert "pip install 'polybus[bench]'" in capsys.readouterr().err
    assert not (tmp_path / "r.png").exists()


def test_a_transport_bug_on_connect_is_an_error_row_and_exit_status_1(monkeypatch, capsys):
    # Given a transport whose connect fails with something that is not a PolybusError
    def broken_open(self):
        raise RuntimeError("Event loop is closed")

    monkeypatch.setattr(runner.PolybusSuite, "open", broken_open)

    # When the bench runs, the blocking API still gets measured
    code = cli.main([*QUICK, "--url", "memory://", "--sizes", "64", "--patterns", "workqueue"])

    # Then the failure is a line that names it, the rest ran, and the exit status says so
    printed = capsys.readouterr().out
    assert code == 1
    assert "memory:// polybus: error: RuntimeError: Event loop is closed" in printed
    assert "polybus-blocking" in printed


def test_repeat_keeps_each_cases_best_run():
    from polybus.bench.model import Measurement, Plan
    from polybus.bench.runner import _measure

    class Uneven:
        client = "uneven"
        raw = False
        patterns = frozenset({"workqueue"})
        runs = iter([(2.0, 1.0), (1.0, 3.0), (4.0, 2.0)])  # (send, consume) seconds per run

        def run(self, pattern, size, plan):
            send, consume = next(self.runs)
            return [
                Measurement("workqueue-send", 100, send, "batches"),
                Measurement("workqueue-consume", 100, consume, "ack each"),
            ]

    plan = Plan(messages=100, sizes=(64,), patterns=("workqueue",), rate=100.0, repeat=3)
    rows = {r.case: r.seconds for r in _measure(Uneven(), "memory://", "workqueue", 64, plan)}
    assert rows == {"workqueue-send": 1.0, "workqueue-consume": 1.0}
