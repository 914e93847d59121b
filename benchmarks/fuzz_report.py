"""A larger fuzz campaign than the test suite's: every fuzz target of ``tests/fuzzing.py``
with many more generated inputs, SIGKILL-and-resume trials in real processes, and every
checkpoint corruption; prints the counts (and writes them as JSON).

Outcomes per generated input: ``error`` (a GeomKFACError: what bad input must give),
``ok`` (a finite result), ``other`` (a raw Python/NumPy exception), ``nan`` (NaN/inf
returned silently), ``wrong`` (a silently wrong result, e.g. a damaged checkpoint
resumed), ``hang`` (over the time limit). The target is zero ``other``, ``nan``, ``wrong``
and ``hang``.

Usage::

    python benchmarks/fuzz_report.py                       # 300 inputs per target, 10 kills
    python benchmarks/fuzz_report.py --examples 50 --kills 2 --quick
    python benchmarks/fuzz_report.py --json benchmarks/results/fuzz_report.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's geomkfac and fuzz targets

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

import fuzzing  # noqa: E402


def fuzz_targets(examples: int, seed_: int, names=None) -> dict:
    """``{target: {outcome: count}}`` and the first few failures of each target."""
    report, failures = {}, {}
    for name, (strategy, run) in fuzzing.TARGETS.items():
        if names and name not in names:
            continue
        counts: Counter = Counter()
        bad: list = []
        n = max(1, examples // 10) if name == "command_line" else examples

        @seed(seed_ + sum(map(ord, name)))
        @settings(max_examples=n, database=None, derandomize=False, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def campaign(case):
            outcome, detail = fuzzing.classify(run, case)
            counts[outcome] += 1
            if outcome not in ("error", "ok") and len(bad) < 5:
                bad.append({"outcome": outcome, "detail": detail[:300], "input": repr(case)[:300]})

        t0 = time.perf_counter()
        campaign()
        report[name] = {o: counts.get(o, 0) for o in fuzzing.OUTCOMES}
        report[name]["seconds"] = round(time.perf_counter() - t0, 1)
        failures[name] = bad
        print(f"  {name:<16} {sum(counts.values()):>5} inputs  "
              + "  ".join(f"{o} {counts.get(o, 0)}" for o in fuzzing.OUTCOMES), flush=True)
    return {"targets": report, "failures": failures}


def kill_trials(kills: int, steps: int, workdir: str) -> dict:
    """SIGKILL a training process after 1..steps-1 metrics lines (spread evenly), resume,
    compare with the uninterrupted run: ``exact``; ``clean`` (exit 2 with one line: killed
    before its first checkpoint); ``different`` or ``failed`` (neither may happen)."""
    ref = os.path.join(workdir, "reference")
    code, err = fuzzing.run_cli(fuzzing.TRAIN_ARGV + ["--steps", str(steps), "--out", ref])
    if code != 0:
        raise SystemExit(f"the reference run failed: {err}")
    reference = fuzzing.final_state(ref)
    points = [1 + (i * (steps - 2)) // max(kills - 1, 1) for i in range(kills)]
    outcomes, detail = Counter(), {}
    for i, after in enumerate(points):
        res = fuzzing.kill_and_resume_trial(reference, os.path.join(workdir, f"kill{i}"), steps, after)
        res = res.replace(workdir, "RUN_DIR")  # no machine paths in the report
        outcomes[res.split(":")[0]] += 1
        detail[after] = res
        print(f"  kill after {after:>2} metrics lines: {res}", flush=True)
    return {"trials": kills, "kill_points": points, "outcomes": dict(outcomes), "detail": detail}


def corrupt_trials(steps: int, workdir: str) -> dict:
    """Every corruption of :data:`fuzzing.CORRUPTIONS` and :data:`fuzzing.MEMBER_EDITS`."""
    good = os.path.join(workdir, "good")
    code, err = fuzzing.run_cli(fuzzing.TRAIN_ARGV + ["--steps", str(steps // 2), "--out", good])
    if code != 0:
        raise SystemExit(f"the run to damage failed: {err}")
    intact = os.path.join(workdir, "intact")
    shutil.copytree(good, intact)
    fuzzing.run_cli(fuzzing.TRAIN_ARGV + ["--steps", str(steps), "--out", intact, "--resume"])
    reference = fuzzing.final_state(intact)
    outcomes, detail = Counter(), {}
    for how in [*fuzzing.CORRUPTIONS, *fuzzing.MEMBER_EDITS]:
        res = fuzzing.corrupt_trial(good, os.path.join(workdir, f"c-{how}"), steps, how, reference)
        res = res.replace(workdir, "RUN_DIR")
        key = res if res in ("clean", "exact") else "wrong"
        outcomes[key] += 1
        detail[how] = res
        print(f"  {how:<20} {res[:120]}", flush=True)
    return {"trials": sum(outcomes.values()), "outcomes": dict(outcomes), "detail": detail}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=300, help="inputs per fuzz target (default 300)")
    ap.add_argument("--kills", type=int, default=10, help="SIGKILL-and-resume trials (default 10)")
    ap.add_argument("--steps", type=int, default=20, help="training steps of those runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", nargs="*", help="only these fuzz targets")
    ap.add_argument("--quick", action="store_true", help="skip the corruption trials")
    ap.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    print(f"fuzz targets ({args.examples} inputs each, command_line {max(1, args.examples // 10)}):")
    result = fuzz_targets(args.examples, args.seed, args.targets)
    totals = Counter()
    for counts in result["targets"].values():
        totals.update({o: counts[o] for o in fuzzing.OUTCOMES})
    result["totals"] = {o: totals.get(o, 0) for o in fuzzing.OUTCOMES}
    work = tempfile.mkdtemp(prefix="geomkfac-fuzz-report-")
    try:
        if args.kills:
            print(f"SIGKILL and resume ({args.kills} trials, {args.steps} steps):")
            result["kill"] = kill_trials(args.kills, args.steps, work)
        if not args.quick:
            print("damaged checkpoints:")
            result["corrupt"] = corrupt_trials(args.steps, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    n = sum(totals.values())
    print(f"\n{n} generated inputs: " + ", ".join(f"{o} {totals.get(o, 0)}" for o in fuzzing.OUTCOMES))
    if "kill" in result:
        print(f"kill and resume: {result['kill']['outcomes']} of {result['kill']['trials']}")
    if "corrupt" in result:
        print(f"damaged checkpoints: {result['corrupt']['outcomes']} of {result['corrupt']['trials']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
