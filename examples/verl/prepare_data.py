"""Convert ``grm-reward spct rl-data`` rows to the parquet files verl's RLHFDataset reads.

Each row becomes::

    {"data_source": "grm_spct",
     "prompt": [{"role": "user", "content": <judge prompt>}],
     "ability": "judge",
     "reward_model": {"style": "rule",
                      "ground_truth": '{"num_responses": n, "best": i, "label": null, "score_range": [1, 10]}'},
     "extra_info": {"id": ..., "index": i, "split": "train" | "test", "num_responses": n}}

``ground_truth`` is the JSON encoding :func:`grm_reward.spct.reward_funcs.encode_ground_truth`
writes and :func:`grm_reward.spct.reward_funcs.compute_score` reads (validated here, so a bad row
fails now, not in a Ray worker mid-training).

    python examples/verl/prepare_data.py rl.jsonl -o ~/data/grm_spct [--test-size 512]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from grm_reward.spct.reward_funcs import encode_ground_truth

DATA_SOURCE = "grm_spct"


def verl_row(row: dict[str, Any], index: int, split: str) -> dict[str, Any]:
    prompt = row["prompt"]
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    ground_truth = encode_ground_truth(
        row["num_responses"], row.get("best"), row.get("label"), score_range=row.get("score_range") or (1, 10)
    )
    return {
        "data_source": DATA_SOURCE,
        "prompt": prompt,
        "ability": "judge",
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": {"id": str(row.get("id", index)), "index": index, "split": split,
                       "num_responses": int(row["num_responses"])},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input", type=Path, help="rl-data JSONL")
    p.add_argument("-o", "--output-dir", type=Path, required=True)
    p.add_argument("--test-size", type=int, default=0,
                   help="rows held out as test.parquet (0: test.parquet repeats the first rows, for val hooks)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import pandas as pd

    with open(args.input, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise SystemExit(f"{args.input} has no rows")
    random.Random(args.seed).shuffle(rows)
    test_rows = rows[: args.test_size] if args.test_size else rows[: min(8, len(rows))]
    train_rows = rows[args.test_size :] if args.test_size else rows
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", train_rows), ("test", test_rows)):
        frame = pd.DataFrame([verl_row(r, i, split) for i, r in enumerate(part)])
        frame.to_parquet(args.output_dir / f"{split}.parquet")
        print(f"{split}.parquet: {len(frame)} rows -> {args.output_dir / f'{split}.parquet'}")


if __name__ == "__main__":
    main()
