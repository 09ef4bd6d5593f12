"""Write the SPCT smoke data of the recipes (examples/{trl,verl,openrlhf}) with the real commands.

    python examples/data/spct/make_smoke_data.py

``items.jsonl`` holds hand-written preference items (pairwise, best-of-N, single responses with
0/1 labels; no data set is copied). From it, ``grm-reward spct`` writes

- ``rl.jsonl``   (``spct rl-data``): judge prompts with the shown best position / label;
- ``rft.jsonl``  (``spct rft-data --hint both --template smoke_template.txt``: the short judge prompt
  the TRL smoke run also builds its RL rows with) and ``meta.jsonl`` (``spct meta-data``): judge
  trajectories from the scripted stand-in judge ``smoke_judge.py`` (not a judge: it prefers the
  first response shown, or the hinted one), so they show the formats, not good critiques.

They are for smoke runs only: far too small to train a judge.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

ITEMS = [
    {"id": "capital", "prompt": "What is the capital of Australia?",
     "chosen": "Canberra is the capital of Australia.", "rejected": "Sydney is the capital of Australia."},
    {"id": "multiply", "prompt": "What is 12 * 11?", "chosen": "12 * 11 = 132.", "rejected": "12 * 11 = 121."},
    {"id": "prime", "prompt": "Name a prime number greater than 20.", "responses": ["21", "25", "23"], "best": 2},
    {"id": "merci", "prompt": [{"role": "user", "content": "Translate 'thank you' into French."}],
     "chosen": "Merci.", "rejected": "Gracias."},
    {"id": "spider", "prompt": "How many legs does a spider have?",
     "responses": ["Six.", "Eight legs.", "Spiders have ten legs."], "best": 1},
    {"id": "ocean", "prompt": "Is the Pacific the largest ocean?",
     "chosen": "Yes, the Pacific is the largest ocean.", "rejected": "No, the Atlantic is larger."},
    {"id": "boiling", "prompt": "What is the boiling point of water at sea level in Celsius?",
     "response": "100 degrees Celsius.", "label": 1},
    {"id": "sqrt", "prompt": "What is the square root of 81?", "response": "The square root of 81 is 8.", "label": 0},
]


def spct(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "grm_reward", "spct", *args], check=True, env=env, cwd=HERE)


def main() -> None:
    with open(HERE / "items.jsonl", "w", encoding="utf-8") as f:
        for item in ITEMS:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    judge = ["--backend", "smoke_judge:backend", "--samples", "3", "--seed", "0"]
    spct("rl-data", "items.jsonl", "-o", "rl.jsonl", "--seed", "0")
    # RFT rows with the short smoke template, as the TRL smoke run's RL rows (spct.py --smoke --template):
    # a tiny policy learns the answer format from them in seconds on a CPU.
    spct("rft-data", "items.jsonl", "-o", "rft.jsonl", "--hint", "both", "--template", "smoke_template.txt", *judge)
    spct("meta-data", "items.jsonl", "-o", "meta.jsonl", *judge)  # text in the embedded tokenizer's template


if __name__ == "__main__":
    main()
