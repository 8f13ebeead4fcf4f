"""The figures of a run: the headline numbers per scenario and target, the ratios against an
earlier revision, the stock consumer and the floor, the table on stdout and the JSON file."""

import json
import math
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from bench import goals, publish_api, rest
from bench.infra import SSE

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _common_step(ours: list[dict], other: list[dict]) -> tuple[dict, dict] | None:
    """The highest rate both targets ran (compare like with like)."""
    theirs = {step["rate"]: step for step in other}
    common = [step for step in ours if step["rate"] in theirs]
    if not common:
        return None
    step = max(common, key=lambda s: s["rate"])
    return step, theirs[step["rate"]]


def headline(scenario: str, result: dict, step: dict | None = None) -> dict:
    """CPU per delivered event (µs), p99 (ms) and RSS per socket (KiB) of one result."""
    rss = result.get("open", {}).get("rss_per_socket_kib")
    if scenario == "connections":
        step = result["check"]
    if scenario == "fanout":
        return {
            "cpu_us": result["server_cpu_us_per_delivered"],
            "p99_ms": result["last_socket_ms"]["p99"],
            "rss_kib": rss,
        }
    if step is None:
        return {"cpu_us": None, "p99_ms": None, "rss_kib": rss}
    return {
        "cpu_us": step["server_cpu_us_per_delivered"],
        "p99_ms": step["latency_ms"]["p99"],
        "rss_kib": rss,
        "at_rate": step.get("rate"),
    }


def _ratio(a, b) -> float | None:
    # A zero reading is below the measurement's resolution (CPU comes in 10 ms /proc ticks),
    # so no ratio can be told from it, whichever side it is on.
    if a is None or b is None or a == 0 or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 2)


def ratios(scenario: str, results: dict) -> dict:
    """ours / each other target (ours@REV, stock, floor) for CPU per event, p99 and RSS per
    socket."""
    if scenario == "publish_cost" or "ours" not in results:
        return {}
    out = {}
    for other in results:
        if other == "ours":
            continue
        ours_step = other_step = None
        if scenario in ("throughput", "mixed"):
            pair = _common_step(results["ours"]["steps"], results[other]["steps"])
            if pair:
                ours_step, other_step = pair
        mine = headline(scenario, results["ours"], ours_step)
        theirs = headline(scenario, results[other], other_step)
        if other == SSE:
            # The stream beside the socket (the goal: within 1.5x on each): sse / ours.
            connect = (results[SSE]["open"], results["ours"]["open"])
            out[f"{SSE}/ours"] = {
                **_ratios(theirs, mine),
                "connect_rate": _ratio(*(o["connect_auth_per_s"] for o in connect)),
                "at_rate": mine.get("at_rate"),
            }
        else:
            out[f"ours/{other}"] = {**_ratios(mine, theirs), "at_rate": mine.get("at_rate")}
    return out


def _ratios(a: dict, b: dict) -> dict:
    return {
        "cpu_per_event": _ratio(a["cpu_us"], b["cpu_us"]),
        "p99": _ratio(a["p99_ms"], b["p99_ms"]),
        "rss_per_socket": _ratio(a["rss_kib"], b["rss_kib"]),
    }


def machine() -> dict:
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu_model = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                "",
            )
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "load_cpus": sorted(os.sched_getaffinity(0)),  # the load generator's
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def write_json(report: dict, path: Path | None = None) -> Path:
    """Write the report to `path`, by default bench/results/<UTC timestamp>.json."""
    if path is None:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(_finite(report), indent=2, allow_nan=False, default=str))
    return path


def _finite(value):
    """NaN (a percentile of nothing) as null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


# --- the table -----------------------------------------------------------------------------


def _fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _step_row(kind: str, step: dict) -> list[str]:
    latency = step["latency_ms"]
    return [
        kind,
        _fmt(step["rate"]),
        _fmt(step.get("publish_rate", step.get("request_rate"))),
        _fmt(step["delivered_per_s"], 0),
        f"{step['delivered']}/{step['expected']}",
        _fmt(step["lost"]),
        _fmt(step["duplicated"]),
        _fmt(step["out_of_order"]),
        _fmt(latency["p50"]),
        _fmt(latency["p95"]),
        _fmt(latency["p99"]),
        _fmt(latency["max"]),
        _fmt(step["server_cpu_us_per_delivered"], 0),
        _fmt(step["server_cpu_util"], 2),
        _fmt(step["server_rss_mib"]),
        _fmt(step["redis_cpu_us_per_published"], 0),
        _fmt(step.get("postgres_cpu_us_per_published"), 0),
        _fmt(step.get("system_cpu_us_per_event"), 0),
        _fmt(step.get("load_cpu_util"), 2),
    ]


STEP_HEADER = [
    "target",
    "rate/s",
    "sent/s",
    "deliv/s",
    "delivered",
    "lost",
    "dup",
    "ooo",
    "p50ms",
    "p95ms",
    "p99ms",
    "maxms",
    "cpuµs/ev",
    "cpu",
    "rssMiB",
    "redisµs/ev",
    "pgµs/ev",
    "sysµs/ev",
    "load",
]


def _table(rows: list[list[str]], header: list[str]) -> str:
    table = [header, *rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in table
    )


def _open_rows(results: dict) -> str:
    header = ["target", "sockets", "failed", "conn+auth/s", "cpuµs/conn", "RSS before→after MiB"]
    header.append("KiB/socket")
    rows = []
    for kind, result in results.items():
        opened = result["open"]
        rows.append(
            [
                kind,
                _fmt(opened["sockets"]),
                _fmt(opened["failed"]),
                _fmt(opened["connect_auth_per_s"], 0),
                _fmt(opened["connect_cpu_us_per_socket"], 0),
                f"{opened['rss_before_mib']}→{opened['rss_after_mib']}",
                _fmt(opened["rss_per_socket_kib"]),
            ]
        )
    return _table(rows, header)


def render(report: dict) -> str:
    out = [
        f"ReasonFlow Notify benchmark — {report['started']} — {report['machine']['cpus']} CPUs "
        f"({report['machine']['cpu_model']}), layer {report['options']['layer']}, "
        f"{report['options']['publishers']} publisher process(es), batch "
        f"{report['options']['batch']}, publishers on CPU {report['options']['publisher_cpu']}",
        "every server (ours, stock): GC frozen after start-up with serve's thresholds, "
        "logs at INFO as JSON (production's)",
    ]
    if report.get("before"):
        out.append(f"ours@{report['options']['before']} is commit {report['before']['commit']}")
    for scenario, results in report["scenarios"].items():
        out.append(f"\n== {scenario} ==")
        if scenario == "publish_cost":
            for kind, result in results.items():
                out.append(f"{kind}:\n{result['output'].rstrip()}")
            continue
        if scenario == "rest":
            out.append(rest.render(results))
            continue
        if scenario == "publish_api":
            out.append(publish_api.render(results))
            continue
        out.append(_open_rows(results))
        if scenario == "fanout":
            header = ["target", "delivered", "last p50ms", "last p99ms", "last max", "first p50"]
            header += ["cpuµs/deliv", "redisµs/ev", "sysµs/ev"]
            rows = [
                [
                    kind,
                    f"{r['delivered']}/{r['expected']}",
                    _fmt(r["last_socket_ms"]["median"]),
                    _fmt(r["last_socket_ms"]["p99"]),
                    _fmt(r["last_socket_ms"]["max"]),
                    _fmt(r["first_socket_ms_median"]),
                    _fmt(r["server_cpu_us_per_delivered"]),
                    _fmt(r["redis_cpu_us_per_published"], 0),
                    _fmt(r.get("system_cpu_us_per_event"), 0),
                ]
                for kind, r in results.items()
            ]
            out.append(_table(rows, header))
        else:
            rows = []
            for kind, r in results.items():
                steps = [r["check"]] if scenario == "connections" else r["steps"]
                rows += [_step_row(kind, step) for step in steps]
            out.append(_table(rows, STEP_HEADER))
            for kind, r in results.items():
                if scenario == "throughput":
                    out.append(
                        f"{kind}: max rate with 0 loss and p99 ≤ 50 ms: "
                        f"{r['max_passing_rate']}/s ({r['stopped']}); one server core at the "
                        f"last step's CPU/event: ~{r['server_core_capacity_per_s']}/s"
                    )
                if scenario == "mixed":
                    http = ", ".join(
                        f"{s['rate']}/s asked, {s['request_rate']}/s served: "
                        f"p50 {s['http_ms']['p50']} ms p99 {s['http_ms']['p99']} ms from due"
                        f" ({s['http_errors']} errors)"
                        for s in r["steps"]
                    )
                    out.append(f"{kind}: HTTP {http}")
        for name, ratio in report["ratios"].get(scenario, {}).items():
            at = f" at {ratio['at_rate']}/s" if ratio.get("at_rate") else ""
            connect = (
                f", connect rate x{_fmt(ratio['connect_rate'], 2)}"
                if "connect_rate" in ratio
                else ""
            )
            out.append(
                f"{name}{at}: CPU/event x{_fmt(ratio['cpu_per_event'], 2)}, "
                f"p99 x{_fmt(ratio['p99'], 2)}, RSS/socket x{_fmt(ratio['rss_per_socket'], 2)}"
                f"{connect}"
            )
    out.append(goals.render(report))
    return "\n".join(out)
