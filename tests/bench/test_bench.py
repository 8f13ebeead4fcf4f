"""The benchmark works: every scenario, tiny, against real servers (ours, the stock consumer
and the floor, an earlier revision with --before), and its report's numbers are sane. Proves
the harness, not the performance."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from bench import goals
from bench.infra import LOAD_CPU, POSTGRES_ADMIN_URL, ROOT, SERVER_CPU
from tests.support.limits import with_open_files

pytestmark = [pytest.mark.live, pytest.mark.redis, pytest.mark.postgres]


def postgres_answers() -> bool:
    try:
        psycopg.connect(f"{POSTGRES_ADMIN_URL}/postgres", connect_timeout=2).close()
    except psycopg.Error:
        return False
    return True


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if not postgres_answers():
        pytest.skip(f"the benchmark needs PostgreSQL at {POSTGRES_ADMIN_URL}")
    path = tmp_path_factory.mktemp("bench") / "report.json"
    command = [sys.executable, "-m", "bench", "connections", "throughput", "fanout", "mixed"]
    command += ["--compare-stock", "--sse", "--users", "10", "--connections", "20"]
    command += ["--rates", "50,100", "--duration", "1", "--fanout-sockets", "20"]
    command += ["--fanout-repeats", "5", "--mixed-users", "10", "--mixed-rates", "20"]
    command += ["--concurrency", "10", "--json", str(path)]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=280, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "== throughput ==" in done.stdout and "ours/floor" in done.stdout
    report = json.loads(path.read_text())
    assert goals.render(report) in done.stdout
    return report


def assert_step_delivered_everything(step: dict, target: str) -> None:
    assert step["published"] > 0
    assert step["delivered"] == step["expected"] > 0
    assert step["lost"] == step["duplicated"] == 0
    if target == "stock":
        # It forwards group messages as they come: when two producers publish to one user at
        # once, the later-numbered event can arrive first (counted; its step fails).
        assert step["out_of_order"] >= 0
    else:
        assert step["out_of_order"] == 0
    latency = step["latency_ms"]
    assert 0 <= latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"] < 10_000
    assert step["server_cpu_s"] >= 0  # /proc counts 10 ms ticks: a tiny step may show 0
    assert step["server_rss_mib"] > 10
    assert step["redis_cpu_us_per_published"] >= 0


def assert_all_sockets_opened(result: dict, count: int) -> None:
    opened = result["open"]
    assert opened["sockets"] == count and opened["failed"] == 0
    assert opened["connect_auth_per_s"] > 0
    assert opened["rss_after_mib"] > 10


def test_connections_opens_every_socket_and_each_gets_its_users_event(report):
    results = report["scenarios"]["connections"]
    assert set(results) == {"ours", "sse", "stock", "floor"}
    for target, result in results.items():
        assert_all_sockets_opened(result, 20)
        assert_step_delivered_everything(result["check"], target)
        # 10 users with 2 sockets each: one event per user reaches 20 sockets.
        assert result["check"]["published"] == 10 and result["check"]["delivered"] == 20


def test_throughput_steps_deliver_every_event_once_in_order(report):
    for target, result in report["scenarios"]["throughput"].items():
        assert_all_sockets_opened(result, 10)
        assert [step["rate"] for step in result["steps"]][:1] == [50]
        for step in result["steps"]:
            assert_step_delivered_everything(step, target)
            assert step["published"] == step["delivered"]  # one socket per user


def test_fanout_reaches_every_socket_every_time(report):
    for result in report["scenarios"]["fanout"].values():
        assert_all_sockets_opened(result, 20)
        assert result["delivered"] == result["expected"] == 5 * 20
        assert result["lost_or_duplicated"] == 0
        last = result["last_socket_ms"]
        assert 0 < result["first_socket_ms_median"] <= last["median"] <= last["p99"]


def test_mixed_rest_requests_publish_to_the_sockets(report):
    results = report["scenarios"]["mixed"]
    # The floor has no REST API; the sse target's REST is ours.
    assert set(results) == {"ours", "stock"}
    for target, result in results.items():
        (step,) = result["steps"]
        assert step["http_errors"] == 0
        assert step["published"] == 20  # 20 requests/s for 1 s, each one event
        assert_step_delivered_everything(step, target)
        assert 0 < step["http_ms"]["p50"] <= step["http_ms"]["p99"]


def test_ratios_compare_ours_with_stock_and_floor_and_sse_with_ours(report):
    for scenario in ("connections", "throughput", "fanout"):
        ratios = report["ratios"][scenario]
        assert set(ratios) == {"ours/stock", "ours/floor", "sse/ours"}
        for ratio in ratios.values():
            assert ratio["p99"] > 0 and ratio["rss_per_socket"] is not None
            # None when either side used less than one 10 ms /proc tick in a tiny run.
            assert ratio["cpu_per_event"] is None or ratio["cpu_per_event"] > 0
        assert report["ratios"][scenario]["sse/ours"]["connect_rate"] > 0


def test_the_goals_are_judged_from_the_runs_own_figures(report):
    verdicts = {goal.name: goal.verdict for goal in goals.evaluate(report)}
    for scenario in ("connections", "throughput", "fanout", "mixed"):
        results = report["scenarios"][scenario]
        ours = results["ours"]["open"]["connect_cpu_us_per_socket"]
        floor = results.get("floor", {}).get("open", {}).get("connect_cpu_us_per_socket")
        name = f"server CPU per connect+auth ≤ 1.3x the floor's ({scenario}, "
        judged = [verdict for goal, verdict in verdicts.items() if goal.startswith(name)]
        if ours and floor:
            assert judged == ["met" if ours / floor <= 1.3 else "NOT met"]
        else:  # no floor (mixed), or under one /proc tick of CPU in a tiny run: nothing to judge
            assert judged == []
    by_start = {name.split(" ", 1)[0]: verdict for name, verdict in verdicts.items()}
    assert by_start["50,000"] == "not in this run"  # 20 sockets
    assert by_start["one"] == "not in this run"  # a fan-out to 20, not 5,000
    assert by_start["whole"] == "NOT met"  # 100 events/s at most
    assert by_start["no"] == "met"


def test_every_server_has_a_core_of_its_own(report):
    # A child inherits its parent's affinity: once, every server ran on the load's core.
    if report["machine"]["cpus"] < 2:
        pytest.skip("one CPU: the server and the load share it")
    assert report["machine"]["load_cpus"] == [LOAD_CPU]
    for scenario in ("connections", "throughput", "fanout", "mixed"):
        for result in report["scenarios"][scenario].values():
            assert result["open"]["server_cpus"] == [SERVER_CPU]


def test_publish_api_reports_both_paths_at_batches_of_1_and_100(tmp_path):
    if not postgres_answers():
        pytest.skip(f"the benchmark needs PostgreSQL at {POSTGRES_ADMIN_URL}")
    path = tmp_path / "report.json"
    command = [sys.executable, "-m", "bench", "publish_api", "--publish-events", "200"]
    command += ["--users", "10", "--json", str(path)]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "== publish_api ==" in done.stdout and "HTTP API" in done.stdout
    result = json.loads(path.read_text())["scenarios"]["publish_api"]
    assert list(result) == ["ours"]  # the stock consumer and the floor have no such API
    http, in_process = result["ours"]["http"], result["ours"]["publish_event"]
    assert [(s["batch"], s["requests"], s["events"], s["errors"]) for s in http] == [
        (1, 200, 200, 0),
        (100, 2, 200, 0),
    ]
    assert [(s["batch"], s["events"]) for s in in_process] == [(1, 200), (100, 200)]
    for step in http + in_process:
        assert step["events_per_s"] > 0 and step["cpu_us_per_event"] >= 0


def test_the_abuse_measurements_run_and_show_the_limits_holding():
    """bench.abuse (docs/guarantees.md): the lockout, refresh-race and pending-flood figures,
    small, against a real production-mode server."""
    if not postgres_answers():
        pytest.skip(f"the benchmark needs PostgreSQL at {POSTGRES_ADMIN_URL}")
    command = [sys.executable, "-m", "bench.abuse", "lockout", "refresh-race", "pending-flood"]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=280, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    decoder, text, results = json.JSONDecoder(), done.stdout, {}
    while text.strip():
        value, end = decoder.raw_decode(text.lstrip())
        results.update(value)
        text = text.lstrip()[end:]
    assert results["lockout"]["first_429_at"] == 11
    assert results["refresh-race"]["succeeded"] == 1
    flood = results["pending-flood"]
    assert flood["flood_open"] == 50 and flood["flood_refused_403"] == 1150
    assert flood["other_address_got"] == "connected"


def git_knows(revision: str) -> bool:
    done = subprocess.run(
        ["git", "cat-file", "-e", f"{revision}^{{commit}}"], cwd=ROOT, timeout=10, check=False
    )
    return done.returncode == 0


def database_exists(name: str) -> bool:
    with psycopg.connect(f"{POSTGRES_ADMIN_URL}/postgres", connect_timeout=5) as conn:
        query = "SELECT 1 FROM pg_database WHERE datname = %s"
        return conn.execute(query, [name]).fetchone() is not None


def assert_left_nothing(worktree: str, database: str) -> None:
    listed = subprocess.run(
        ["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True, timeout=10
    )
    assert worktree not in listed.stdout
    assert not Path(worktree).exists()
    assert not database_exists(database)


# The revision before issue 14's redesign: its Event table still has `sequence`, not
# `event_id`, so its server and publishers only work on a database of its own.
EARLIER = "e417e06"


def test_before_runs_an_earlier_revision_beside_ours_and_removes_its_worktree(tmp_path):
    if not postgres_answers():
        pytest.skip(f"the benchmark needs PostgreSQL at {POSTGRES_ADMIN_URL}")
    if not git_knows(EARLIER):
        pytest.skip(f"{EARLIER} is not in this clone's history")
    path = tmp_path / "report.json"
    command = [sys.executable, "-m", "bench", "connections", "--before", EARLIER]
    command += ["--users", "10", "--connections", "20", "--concurrency", "10"]
    command += ["--json", str(path)]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(path.read_text())
    earlier = f"ours@{EARLIER}"
    results = report["scenarios"]["connections"]
    assert list(results) == ["ours", earlier]
    for target, result in results.items():
        assert_all_sockets_opened(result, 20)
        assert_step_delivered_everything(result["check"], target)
    assert set(report["ratios"]["connections"]) == {f"ours/{earlier}"}
    assert report["before"]["commit"].startswith(EARLIER)
    assert f"ours/{earlier} at 2000/s" in done.stdout
    assert_left_nothing(report["before"]["worktree"], report["before"]["database"])


def test_before_removes_its_worktree_and_database_on_ctrl_c():
    if not postgres_answers():
        pytest.skip(f"the benchmark needs PostgreSQL at {POSTGRES_ADMIN_URL}")
    command = [sys.executable, "-m", "bench", "throughput", "--before", "HEAD", "--no-json"]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        # "[hh:mm:ss] ours@HEAD: commit <sha> in <worktree>, database <name>"
        started = re.compile(r"ours@HEAD: commit \w+ in (\S+), database (\w+)")
        deadline = time.monotonic() + 120
        while not (found := started.search(line := process.stderr.readline())):
            assert line and time.monotonic() < deadline, "the earlier revision never started"
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 130
    finally:
        process.kill()
        process.wait()
    assert_left_nothing(found[1], found[2])


def test_a_run_the_open_file_limit_cannot_hold_is_refused_before_anything_starts():
    command = [sys.executable, "-m", "bench", "connections", "--connections", "5000", "--no-json"]
    done = subprocess.run(
        with_open_files(command, 2000, 2000),
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "5,000 sockets need 5,500 open files" in done.stderr
    assert "this machine allows 2,000 per process" in done.stderr
    assert "database" not in done.stderr  # no database, Redis or server was started
