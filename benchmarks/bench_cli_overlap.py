"""`grm-reward score`: the default (rows in flight, written in order) against chunks run one after
another and against the best --chunk-size, on 64 rows with a judge that takes 0.5 s per call.

Run from the repository root: ``python benchmarks/bench_cli_overlap.py [--rows 64] [--latency 0.5]``.
Every configuration runs through the command itself (``grm_reward.cli.main``), side by side in one
process; the figure is the wall-time ratio to the best chunk size (goal <= 1.1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from grm_reward.backends.scripted import ScriptedBackend
from grm_reward.cli import main

LATENCY = 0.5


def judge(call: object) -> str:
    return "Analysis: fine.\nScores: \\boxed{7, 4}"


def slow_judge(config: object) -> ScriptedBackend:
    """A judge whose every call (one batch of rows) takes LATENCY seconds, as a remote judge would."""
    return ScriptedBackend(judge, delay=LATENCY, record=False)


def run(src: Path, out: Path, *flags: str) -> float:
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    code = main(["score", str(src), "-o", str(out), "--backend", "bench_cli_overlap:slow_judge", "-q", *flags])
    if code != 0:
        raise SystemExit(f"score {' '.join(flags)} exited with {code}")
    return time.perf_counter() - started


def main_() -> None:
    global LATENCY
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration; the best counts")
    args = parser.parse_args()
    LATENCY = args.latency
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.modules["bench_cli_overlap"] = sys.modules[__name__]
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        src.write_text("".join(json.dumps({"prompt": f"q{i}", "responses": ["a", "b"]}) + "\n"
                               for i in range(args.rows)), encoding="utf-8")
        configs = {
            "chunks of 8 one after another (--in-flight 8)": ("--chunk-size", "8", "--in-flight", "8"),
            "default (--chunk-size 8, --in-flight 64)": (),
            "--chunk-size 64": ("--chunk-size", "64"),
        }
        run(src, out)  # warm-up: imports and first-use costs stay out of the comparison
        times = {name: min(run(src, out, *flags) for _ in range(args.repeats)) for name, flags in configs.items()}
    best = times["--chunk-size 64"]
    print(f"{args.rows} rows, judge latency {args.latency}s per call, best of {args.repeats} runs")
    for name, seconds in times.items():
        print(f"  {name:<48} {seconds:6.2f}s  {seconds / best:5.2f}x the best chunk size")


if __name__ == "__main__":
    main_()
