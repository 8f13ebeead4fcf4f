"""python -m bench SCENARIO [options]: load-test the notification server as production runs it.

Scenarios: connections, throughput, fanout, mixed, rest, publish_api, publish-cost, or `all`
(every scenario, with --compare-stock and --sse). --sse adds our server read over server-sent
events; --before REV adds the project as it was at git revision REV.
Prints a table and writes bench/results/<timestamp>.json. See docs/performance.md.
"""

import argparse
import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import report
from bench.infra import LOAD_CPU, collect_garbage_now_only, cpu_count, pin
from bench.scenarios import SCENARIOS, Bench, Options, run_scenario
from notifications.realtime.open_files import raise_open_file_limit


def _rates(text: str) -> list[int]:
    return [int(value) for value in text.split(",") if value.strip()]


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("expected KEY=VALUE")
    return key, value


def parse_args(argv: list[str]) -> tuple[list[str], Options, str | None]:
    defaults = Options()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="+", choices=[*SCENARIOS, "publish-cost", "all"])
    parser.add_argument("--compare-stock", action="store_true", help="also run stock and floor")
    parser.add_argument(
        "--sse",
        action="store_true",
        help="also read our server over server-sent events (target sse, ratios sse/ours)",
    )
    parser.add_argument(
        "--before",
        metavar="REV",
        help="also run ours as of git revision REV (its own worktree and database): ours@REV",
    )
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--connections", type=int, default=defaults.connections)
    parser.add_argument("--rates", type=_rates, default=defaults.rates, help="e.g. 500,1000")
    parser.add_argument("--duration", type=float, default=defaults.duration, help="s per step")
    parser.add_argument("--fanout-sockets", type=int, default=defaults.fanout_sockets)
    parser.add_argument("--fanout-repeats", type=int, default=defaults.fanout_repeats)
    parser.add_argument("--mixed-users", type=int, default=defaults.mixed_users)
    parser.add_argument("--mixed-rates", type=_rates, default=defaults.mixed_rates)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--rest-requests", type=int, default=defaults.rest_requests)
    parser.add_argument("--rest-rate", type=float, default=defaults.rest_rate)
    parser.add_argument(
        "--publish-events", type=int, default=defaults.publish_events, help="per publish_api step"
    )
    parser.add_argument("--publishers", type=int, default=defaults.publishers)
    parser.add_argument("--batch", type=int, default=defaults.batch, help="events per commit")
    parser.add_argument(
        "--publisher-cpu",
        choices=["load", "any"],
        default=defaults.publisher_cpu,
        help="pin publishers next to the load generator (default) or let them float",
    )
    parser.add_argument("--layer", choices=["core", "pubsub"], default=defaults.layer)
    parser.add_argument(
        "--server-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VAL",
        help="extra environment for our server and its publishers (repeatable)",
    )
    parser.add_argument("--drain", type=float, default=defaults.drain)
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/")
    parser.add_argument("--json", dest="json_path", help="write the JSON here instead")
    args = parser.parse_args(argv)
    options = dataclasses.replace(
        defaults,
        users=args.users,
        connections=args.connections,
        rates=args.rates,
        duration=args.duration,
        fanout_sockets=args.fanout_sockets,
        fanout_repeats=args.fanout_repeats,
        mixed_users=args.mixed_users,
        mixed_rates=args.mixed_rates,
        concurrency=args.concurrency,
        rest_requests=args.rest_requests,
        rest_rate=args.rest_rate,
        publish_events=args.publish_events,
        publishers=args.publishers,
        batch=args.batch,
        publisher_cpu=args.publisher_cpu,
        layer=args.layer,
        server_env=dict(args.server_env),
        compare_stock=args.compare_stock or "all" in args.scenario,
        sse=args.sse or "all" in args.scenario,
        before=args.before,
        drain=args.drain,
    )
    if "all" in args.scenario:
        scenarios = [*SCENARIOS, "publish-cost"]
    else:
        scenarios = list(dict.fromkeys(args.scenario))
    output = None if args.no_json else (args.json_path or "")
    return scenarios, options, output


def publish_cost(bench: Bench, kind: str) -> dict:
    """bench/publish_cost.py of the target's revision on its database and the run's Redis
    (in-process, no server)."""
    env = {**bench.server_env(kind), "BENCH_RUNS": os.environ.get("BENCH_RUNS", "1000")}
    done = subprocess.run(
        [sys.executable, "-m", "bench.publish_cost"],
        cwd=bench.root(kind),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return {"output": done.stdout + (done.stderr if done.returncode else "")}


# Open files a process of the run needs besides its sockets (database and Redis connections,
# pipes, logs): 19,000 sockets ran under a limit of 20,000.
OPEN_FILES_BESIDES_SOCKETS = 500


def check_open_files(scenarios: list[str], options: Options) -> None:
    """Refuse, before anything starts, a run whose sockets this machine's open-file limit
    cannot hold (the load generator and each server hold every socket of a step)."""
    sockets = options.sockets(scenarios)
    needed = sockets + OPEN_FILES_BESIDES_SOCKETS
    allowed = raise_open_file_limit()
    if allowed < needed:
        raise SystemExit(
            f"python -m bench: {sockets:,} sockets need {needed:,} open files in the load "
            f"generator and in each server, and this machine allows {allowed:,} per process "
            f"(`ulimit -Hn`). Raise the hard limit (as root: `ulimit -Hn {needed}` before the "
            f"run; a container: `--ulimit nofile={needed}`), or ask for fewer sockets."
        )


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


async def run(bench: Bench, scenarios: list[str]) -> dict:
    results = {}
    for scenario in scenarios:
        if scenario == "publish-cost":
            results["publish_cost"] = {}
            for kind in bench.options.our_targets():
                progress(f"publish_cost: {kind} ...")
                results["publish_cost"][kind] = await asyncio.to_thread(publish_cost, bench, kind)
        else:
            results[scenario] = await run_scenario(bench, scenario, progress)
    return results


def main(argv: list[str] | None = None) -> dict:
    scenarios, options, output = parse_args(sys.argv[1:] if argv is None else argv)
    if cpu_count() < 2:
        progress("one CPU only: the server and the load share it (figures are not comparable)")
    check_open_files(scenarios, options)
    pin(LOAD_CPU)
    collect_garbage_now_only()
    # Ctrl-C as SIGTERM: an interrupt raised wherever the run is. asyncio's own handler only
    # cancels the main task, which code inside can absorb (wait_for on Python 3.11 may): a
    # loaded CI run once went on and exited 0 after Ctrl-C.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    began = time.perf_counter()
    bench = Bench(options)
    try:
        progress(f"database {bench.db.name}, private Redis, users ...")
        bench.setup()
        if bench.before is not None:
            progress(
                f"{options.before_kind}: commit {bench.before.commit[:12]} in {bench.before.root},"
                f" database {bench.before.db.name}"
            )
        bench.prepare(scenarios)
        try:
            import uvloop

            results = uvloop.run(run(bench, scenarios))
        except ImportError:
            results = asyncio.run(run(bench, scenarios))
    finally:
        bench.close()
    outcome = {
        "started": started,
        "seconds": round(time.perf_counter() - began, 1),
        "machine": report.machine(),
        "options": dataclasses.asdict(options),
        "before": (
            {
                "commit": bench.before.commit,
                "worktree": str(bench.before.root),
                "database": bench.before.db.name,
            }
            if bench.before
            else None
        ),
        "scenarios": results,
        "ratios": {name: report.ratios(name, result) for name, result in results.items()},
    }
    print(report.render(outcome))
    if output is not None:
        path = report.write_json(outcome, Path(output) if output else None)
        print(f"\nJSON: {path}  ({outcome['seconds']} s)")
    return outcome


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
