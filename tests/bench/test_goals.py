"""Each goal judged from a run's figures: met, NOT met at its edge, not in a run that did not
measure it. The figures are as bench writes them (tests/bench/test_bench.py checks a real
run's goals against its output)."""

import pytest

from bench import goals


def opened(sockets: int, cpu_us: float, rss_kib: float = 18.8) -> dict:
    return {"sockets": sockets, "connect_cpu_us_per_socket": cpu_us, "rss_per_socket_kib": rss_kib}


def step(rate: int, publish_rate: float, p99: float, **counts) -> dict:
    return {
        "rate": rate,
        "publish_rate": publish_rate,
        "latency_ms": {"p99": p99},
        "lost": counts.get("lost", 0),
        "duplicated": counts.get("duplicated", 0),
        "out_of_order": counts.get("out_of_order", 0),
        "system_cpu_us_per_event": 900,
    }


def run(scenarios: dict, batch: int = 1, publisher_cpu: str = "any") -> dict[str, goals.Goal]:
    report = {"scenarios": scenarios, "options": {"batch": batch, "publisher_cpu": publisher_cpu}}
    return {goal.name.split(" (")[0]: goal for goal in goals.evaluate(report)}


CONNECT = "server CPU per connect+auth ≤ 1.3x the floor's"
MEMORY = "50,000 sockets on one process at ≤ 22 KiB each"
FANOUT = "one event to 5,000 sockets of one user: the last ≤ 100 ms"
SYSTEM = "whole system ≥ 1,500 events/s lossless, p99 < 50 ms, one event per transaction"
PUBLISH = "publish_event ≤ 300 µs of producer CPU"
DELIVERY = "no event lost, duplicated or out of order"


def test_an_empty_run_measures_nothing_and_says_what_would():
    judged = run({})
    assert {goal.verdict for goal in judged.values()} == {"not in this run"}
    assert judged[FANOUT].figures == "run fanout --fanout-sockets 5000"


@pytest.mark.parametrize(("ours_us", "verdict"), [(1300, "met"), (1301, "NOT met"), (500, "met")])
def test_connect_cost_against_the_floors_in_the_same_scenario(ours_us, verdict):
    scenarios = {
        "connections": {
            "ours": {"open": opened(10_000, ours_us)},
            "floor": {"open": opened(10_000, 1000)},
        }
    }
    goal = run(scenarios)[CONNECT]
    assert goal.verdict == verdict
    assert goal.figures.startswith(f"x{ours_us / 1000:.2f}")


@pytest.mark.parametrize(
    ("sockets", "rss_kib", "verdict"),
    [
        (50_000, 22.0, "met"),
        (50_000, 22.1, "NOT met"),
        (19_000, 18.8, "not in this run"),
        (19_000, 23.0, "NOT met"),  # over the limit already, whatever the count
    ],
)
def test_memory_per_socket_is_met_only_at_fifty_thousand(sockets, rss_kib, verdict):
    goal = run({"connections": {"ours": {"open": opened(sockets, 600, rss_kib)}}})[MEMORY]
    assert goal.verdict == verdict
    assert f"at {sockets:,} sockets" in goal.figures


def fanned_out(sockets: int, p99: float, lost_or_duplicated: int = 0) -> dict:
    return {
        "open": opened(sockets, 600),
        "repeats": 50,
        "last_socket_ms": {"median": 74.0, "p99": p99},
        "lost_or_duplicated": lost_or_duplicated,
    }


@pytest.mark.parametrize(
    ("sockets", "p99", "verdict"),
    [(5000, 100.0, "met"), (5000, 100.1, "NOT met"), (500, 40.0, "not in this run")],
)
def test_fanout_counts_at_five_thousand_sockets(sockets, p99, verdict):
    assert run({"fanout": {"ours": fanned_out(sockets, p99)}})[FANOUT].verdict == verdict


def test_the_whole_system_counts_the_best_lossless_step_under_fifty_milliseconds():
    steps = [
        step(1000, 1000.0, 4.0),
        step(1500, 1499.8, 4.1),  # within 1 % of its step: carried
        step(2000, 1906.5, 60.0),  # over the p99
        step(3000, 2900.0, 5.0, lost=1),  # lossy
    ]
    goal = run({"throughput": {"ours": {"steps": steps}}})[SYSTEM]
    assert goal.verdict == "met"
    assert goal.figures.startswith("1,499.8 events/s at the 1500/s step, p99 4.1 ms")
    slow = run({"throughput": {"ours": {"steps": steps[:1]}}})[SYSTEM]
    assert slow.verdict == "NOT met"
    batched = run({"throughput": {"ours": {"steps": steps}}}, batch=20)[SYSTEM]
    assert batched.verdict == "not in this run"  # 20 events per transaction is not the goal


def test_publishers_pinned_beside_the_load_generator_cannot_fail_the_whole_system():
    # Publisher-limited on the load generator's core: not what the machine carries.
    limited = [step(1000, 1000.0, 3.0), step(2000, 1417.8, 4.2)]
    pinned = run({"throughput": {"ours": {"steps": limited}}}, publisher_cpu="load")[SYSTEM]
    assert pinned.verdict == "not in this run"
    assert pinned.figures.startswith("publisher-limited at 1,417.8/s of 2000/s")
    assert "--publisher-cpu any" in pinned.figures
    # Unpinned, falling short is the system's own.
    assert run({"throughput": {"ours": {"steps": limited}}})[SYSTEM].verdict == "NOT met"
    # Pinned but offered in full (the server failed the step's p99): the system's own too.
    slow = [step(1000, 1000.0, 3.0), step(2000, 1990.0, 80.0)]
    judged = run({"throughput": {"ours": {"steps": slow}}}, publisher_cpu="load")[SYSTEM]
    assert judged.verdict == "NOT met"
    # Pinned and carrying the goal's rate: met wherever the publishers ran.
    enough = [step(1500, 1500.0, 3.0), step(2000, 1600.0, 4.0)]
    assert (
        run({"throughput": {"ours": {"steps": enough}}}, publisher_cpu="load")[SYSTEM].verdict
        == "met"
    )


@pytest.mark.parametrize(("added", "verdict"), [(300, "met"), (301, "NOT met")])
def test_publish_event_is_read_from_the_cost_runs_output(added, verdict):
    output = f"...\nproducer CPU per transaction: ... publish_event adds {added} µs of CPU\n"
    goal = run({"publish_cost": {"ours": {"output": output}}})[PUBLISH]
    assert (goal.verdict, goal.figures) == (verdict, f"{added} µs")


def test_each_rest_endpoint_is_judged_on_cpu_rate_p99_and_database_sessions():
    figures = {
        "saturated": {
            "server_cpu_ms_per_request": 3.01,
            "served_per_s": 250.0,
            "db_sessions_per_request": 0.0,
        },
        "paced": {"rate": 100.0, "p99_ms": 20.0},
    }
    judged = run({"rest": {"ours": {"draft_approve": figures, "seconds": 12.0}}})
    assert judged["draft_approve: ≤ 3 ms of server CPU"].verdict == "NOT met"
    assert judged["draft_approve: ≥ 250 requests/s on one core"].verdict == "met"
    assert judged["draft_approve: p99 ≤ 20 ms at 100/s"].verdict == "met"
    assert judged["draft_approve: no new database session per request"].verdict == "met"


def test_one_duplicate_anywhere_fails_delivery():
    clean = {"ours": {"steps": [step(500, 500.0, 3.0)]}}
    assert run({"throughput": clean})[DELIVERY].verdict == "met"
    fanout = {"ours": fanned_out(500, 40.0, lost_or_duplicated=1)}
    judged = run({"throughput": clean, "fanout": fanout})[DELIVERY]
    assert (judged.verdict, judged.figures) == ("NOT met", "1 of 2 steps with one")
