"""Issue 15's goals, judged from one run's figures: met, NOT met, or not in this run (with
what would put it in), so that a run says for itself what it shows."""

import re
from dataclasses import dataclass

from bench import rest

CONNECT_CPU_VS_FLOOR = 1.3
SOCKETS = 50_000
RSS_PER_SOCKET_KIB = 22.0
FANOUT_SOCKETS = 5_000
FANOUT_LAST_MS = 100.0
SYSTEM_EVENTS_PER_S = 1_500
SYSTEM_P99_MS = 50.0
PUBLISH_EVENT_US = 300
PUBLISH_EVENT_ADDS = re.compile(r"publish_event adds (\d+) µs of CPU")


@dataclass(frozen=True)
class Goal:
    name: str
    verdict: str  # "met", "NOT met", or "not in this run"
    figures: str


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def evaluate(report: dict) -> list[Goal]:
    """Every goal, from the scenarios of `report` (what bench.__main__ writes as JSON)."""
    scenarios, options = report["scenarios"], report["options"]
    return [
        *_connect_cost(scenarios),
        _memory(scenarios),
        _fanout(scenarios),
        _whole_system(scenarios, options),
        _publish_event(scenarios),
        *_rest(scenarios),
        _delivery(scenarios),
    ]


def _connect_cost(scenarios: dict) -> list[Goal]:
    name = f"server CPU per connect+auth ≤ {CONNECT_CPU_VS_FLOOR:g}x the floor's"
    goals = []
    for scenario, results in scenarios.items():
        ours, floor = results.get("ours", {}), results.get("floor", {})
        if "open" not in ours or "open" not in floor:
            continue
        mine = ours["open"]["connect_cpu_us_per_socket"]
        theirs = floor["open"]["connect_cpu_us_per_socket"]
        if not mine or not theirs:
            continue
        ratio = mine / theirs
        goals.append(
            Goal(
                f"{name} ({scenario}, {ours['open']['sockets']:,} sockets)",
                _verdict(ratio <= CONNECT_CPU_VS_FLOOR),
                f"x{ratio:.2f} ({mine:.0f} vs {theirs:.0f} µs)",
            )
        )
    return goals or [Goal(name, "not in this run", "run a scenario with --compare-stock")]


def _memory(scenarios: dict) -> Goal:
    name = f"{SOCKETS:,} sockets on one process at ≤ {RSS_PER_SOCKET_KIB:g} KiB each"
    opened = [
        results["ours"]["open"]
        for results in scenarios.values()
        if "open" in results.get("ours", {}) and results["ours"]["open"]["rss_per_socket_kib"]
    ]
    if not opened:
        return Goal(name, "not in this run", "run connections")
    most = max(opened, key=lambda o: o["sockets"])
    figures = f"{most['rss_per_socket_kib']:g} KiB each at {most['sockets']:,} sockets"
    if most["rss_per_socket_kib"] > RSS_PER_SOCKET_KIB:
        return Goal(name, "NOT met", figures)
    if most["sockets"] < SOCKETS:
        return Goal(name, "not in this run", f"{figures}; --connections {SOCKETS}")
    return Goal(name, "met", figures)


def _fanout(scenarios: dict) -> Goal:
    name = f"one event to {FANOUT_SOCKETS:,} sockets of one user: the last ≤ {FANOUT_LAST_MS:g} ms"
    ours = scenarios.get("fanout", {}).get("ours")
    if ours is None or ours["open"]["sockets"] < FANOUT_SOCKETS:
        return Goal(name, "not in this run", f"run fanout --fanout-sockets {FANOUT_SOCKETS}")
    last = ours["last_socket_ms"]
    return Goal(
        name,
        _verdict(last["p99"] <= FANOUT_LAST_MS),
        f"p99 {last['p99']} ms, median {last['median']} ms over {ours['repeats']} events",
    )


def _whole_system(scenarios: dict, options: dict) -> Goal:
    name = (
        f"whole system ≥ {SYSTEM_EVENTS_PER_S:,} events/s lossless, p99 < {SYSTEM_P99_MS:g} ms, "
        "one event per transaction"
    )
    ours = scenarios.get("throughput", {}).get("ours")
    if ours is None or options["batch"] != 1:
        return Goal(name, "not in this run", "run throughput with --batch 1")
    carried = [
        step
        for step in ours["steps"]
        if _lossless(step) and step["latency_ms"]["p99"] < SYSTEM_P99_MS
    ]
    best = max(carried, key=lambda step: step["publish_rate"], default=None)
    if best is None:
        return Goal(name, "NOT met", "no step was lossless with p99 < 50 ms")
    figures = (
        f"{best['publish_rate']:,} events/s at the {best['rate']}/s step, p99 "
        f"{best['latency_ms']['p99']} ms, {best.get('system_cpu_us_per_event')} µs of "
        "whole-system CPU per event"
    )
    # A step is offered at its rate; within 1 % of it counts as carrying it.
    if best["publish_rate"] >= 0.99 * SYSTEM_EVENTS_PER_S:
        return Goal(name, "met", figures)
    offered = ours["steps"][-1]
    if (
        options.get("publisher_cpu", "load") == "load"
        and offered["publish_rate"] < 0.9 * offered["rate"]
    ):
        # Pinned beside the load generator, the publishers share its core: the step shows how
        # fast they could publish there, not what the machine carries.
        return Goal(
            name,
            "not in this run",
            f"publisher-limited at {offered['publish_rate']:,}/s of {offered['rate']}/s with the "
            "publishers on the load generator's core; run throughput --publishers 3 "
            "--publisher-cpu any",
        )
    return Goal(name, "NOT met", figures)


def _publish_event(scenarios: dict) -> Goal:
    name = f"publish_event ≤ {PUBLISH_EVENT_US} µs of producer CPU"
    output = scenarios.get("publish_cost", {}).get("ours", {}).get("output", "")
    found = PUBLISH_EVENT_ADDS.search(output)
    if found is None:
        return Goal(name, "not in this run", "run publish-cost")
    added = int(found.group(1))
    return Goal(name, _verdict(added <= PUBLISH_EVENT_US), f"{added} µs")


def _rest(scenarios: dict) -> list[Goal]:
    ours = scenarios.get("rest", {}).get("ours")
    if ours is None:
        return [Goal("REST requests", "not in this run", "run rest")]
    goals = []
    for endpoint, figures in ours.items():
        if endpoint == "seconds":
            continue
        saturated, paced = figures["saturated"], figures["paced"]
        cpu, served = saturated["server_cpu_ms_per_request"], saturated["served_per_s"]
        sessions, p99 = saturated["db_sessions_per_request"], paced["p99_ms"]
        cpu_met, rate_met, p99_met = rest.goals_met(saturated, paced)
        goals += [
            Goal(
                f"{endpoint}: ≤ {rest.TARGET_CPU_MS:g} ms of server CPU",
                _verdict(cpu_met),
                f"{cpu:.2f} ms",
            ),
            Goal(
                f"{endpoint}: ≥ {rest.TARGET_RATE:g} requests/s on one core",
                _verdict(rate_met),
                f"{served:.0f}/s",
            ),
            Goal(
                f"{endpoint}: p99 ≤ {rest.TARGET_P99_MS:g} ms at {paced['rate']:g}/s",
                _verdict(p99_met),
                f"{p99:.1f} ms",
            ),
            Goal(
                f"{endpoint}: no new database session per request",
                _verdict(sessions == 0),
                f"{sessions:.2f} per request",
            ),
        ]
    return goals


def _lossless(step: dict) -> bool:
    return step["lost"] == step["duplicated"] == step["out_of_order"] == 0


def _delivery(scenarios: dict) -> Goal:
    name = "no event lost, duplicated or out of order (ours and the event stream)"
    steps = []
    for scenario, results in scenarios.items():
        for kind in ("ours", "sse"):
            result = results.get(kind, {})
            if scenario == "connections" and "check" in result:
                steps.append(result["check"])
            steps += result.get("steps", []) if scenario in ("throughput", "mixed") else []
            if scenario == "fanout" and result:
                steps.append({"lost": result["lost_or_duplicated"], "duplicated": 0})
    if not steps:
        return Goal(name, "not in this run", "run connections, throughput, fanout or mixed")
    bad = [step for step in steps if not _lossless({"out_of_order": 0, **step})]
    return Goal(name, _verdict(not bad), f"{len(bad)} of {len(steps)} steps with one")


def render(report: dict) -> str:
    goals = evaluate(report)
    width = max(len(goal.name) for goal in goals)
    lines = ["\n== goals (issue 15) =="]
    lines += [f"{goal.name.ljust(width)}  {goal.verdict:<15}  {goal.figures}" for goal in goals]
    return "\n".join(lines)
