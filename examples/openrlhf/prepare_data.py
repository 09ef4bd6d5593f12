"""Convert ``grm-reward spct rl-data`` rows to the prompt JSONL OpenRLHF's PromptDataset reads.

Each row becomes ``{"prompt": [{"role": "user", "content": <judge prompt>}], "ground_truth":
'{"num_responses": n, "best": i, "label": null, "score_range": [1, 10]}', "id": ...}``; train with
``--data.input_key prompt --data.label_key ground_truth --data.apply_chat_template``.
The ground truth is validated here (:func:`grm_reward.spct.reward_funcs.encode_ground_truth`),
so a bad row fails now rather than inside a rollout actor.

    python examples/openrlhf/prepare_data.py rl.jsonl -o prompts.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from grm_reward.spct.reward_funcs import encode_ground_truth


def openrlhf_row(row: dict[str, Any], index: int) -> dict[str, Any]:
    prompt = row["prompt"]
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    return {
        "prompt": prompt,
        "ground_truth": encode_ground_truth(
            row["num_responses"], row.get("best"), row.get("label"), score_range=row.get("score_range") or (1, 10)
        ),
        "id": str(row.get("id", index)),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input", type=Path, help="rl-data JSONL")
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(args.input, encoding="utf-8") as src, open(args.output, "w", encoding="utf-8") as dst:
        for line in src:
            if line.strip():
                dst.write(json.dumps(openrlhf_row(json.loads(line), count), ensure_ascii=False) + "\n")
                count += 1
    print(f"{count} rows -> {args.output}")


if __name__ == "__main__":
    main()
