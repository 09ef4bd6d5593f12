"""Write the tiny SPCT smoke data sets of the recipes (examples/{trl,verl,openrlhf}).

They follow the formats of ``grm-reward spct rl-data / rft-data / meta-data`` and hold real judge
prompts rendered by ``grm_reward.prompts``; the queries and responses are hand-written here (no
data set is copied). They are for smoke runs only: far too small to train a judge.

    python examples/data/spct/make_smoke_data.py     # rewrites rl.jsonl, rft.jsonl, meta.jsonl beside it
"""

from __future__ import annotations

import json
from pathlib import Path

from grm_reward.prompts import get_template, render_judge_prompt, render_meta_prompt
from grm_reward.types import Request

HERE = Path(__file__).resolve().parent

# (query, responses in shown order, best shown index) — pairwise and listwise preference items.
PREFERENCE = [
    ("What is the capital of Australia?", ["Sydney is the capital of Australia.", "Canberra is the capital of Australia."], 1),
    ("What is 12 * 11?", ["12 * 11 = 132.", "12 * 11 = 121."], 0),
    ("Name a prime number greater than 20.", ["21", "25", "23"], 2),
    ("Translate 'thank you' into French.", ["Merci.", "Gracias."], 0),
    ("How many legs does a spider have?", ["Six.", "Eight legs.", "Spiders have ten legs."], 1),
    ("Is the Pacific the largest ocean?", ["No, the Atlantic is larger.", "Yes, the Pacific is the largest ocean."], 1),
]
# (query, response, label 1 correct / 0 incorrect) — single responses, the paper's 0/1 rating.
SINGLE = [
    ("What is the boiling point of water at sea level in Celsius?", "100 degrees Celsius.", 1),
    ("What is the square root of 81?", "The square root of 81 is 8.", 0),
]

CRITIQUES = {
    True: "Specific Criteria: Factual accuracy (weight 60%), directness (weight 40%).\n"
    "Analysis: Response {best} states the correct fact plainly; the others are wrong.\n"
    "Scores: \\boxed{{{scores}}}",
}


def judge_prompt(query: str, responses: list[str]) -> str:
    request = Request(prompt=[{"role": "user", "content": query}], responses=responses)
    if len(responses) == 1:
        return render_judge_prompt(request, [0], get_template("single_binary"), (0, 1))
    return render_judge_prompt(request, list(range(len(responses))), get_template("default"), (1, 10))


def main() -> None:
    rl, rft, meta = [], [], []
    for i, (query, responses, best) in enumerate(PREFERENCE):
        prompt = judge_prompt(query, responses)
        rl.append({"prompt": [{"role": "user", "content": prompt}], "num_responses": len(responses), "best": best,
                   "label": None, "id": f"pref-{i}"})
        scores = [3 if j != best else 9 for j in range(len(responses))]
        good = CRITIQUES[True].format(best=best + 1, scores=", ".join(map(str, scores)))
        hinted = i % 2 == 1
        user = prompt + (f"\nThe best response is: Response {best + 1}" if hinted else "")
        rft.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": good}],
                    "id": f"pref-{i}", "hinted": hinted})
        request = Request(prompt=[{"role": "user", "content": query}], responses=responses)
        meta_prompt = render_meta_prompt(request, list(range(len(responses))))
        bad_scores = [9 if j != best else 3 for j in range(len(responses))]
        bad = "Specific Criteria: Fluency (weight 100%).\nAnalysis: The other response reads better.\n" \
              f"Scores: \\boxed{{{', '.join(map(str, bad_scores))}}}"
        meta.append({"text": f"{meta_prompt}\n{good}", "label": 1, "id": f"pref-{i}-good"})
        meta.append({"text": f"{meta_prompt}\n{bad}", "label": 0, "id": f"pref-{i}-bad"})
    for i, (query, response, label) in enumerate(SINGLE):
        prompt = judge_prompt(query, [response])
        rl.append({"prompt": [{"role": "user", "content": prompt}], "num_responses": 1, "best": None,
                   "label": label, "id": f"single-{i}"})
        verdict = "correct" if label else "incorrect"
        text = (f"Specific Criteria: Accuracy (weight 100%).\nAnalysis: The response is {verdict}.\n"
                f"Scores: \\boxed{{{label}}}")
        rft.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}],
                    "id": f"single-{i}", "hinted": False})
    for name, rows in (("rl", rl), ("rft", rft), ("meta", meta)):
        with open(HERE / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{name}.jsonl: {len(rows)} rows")


if __name__ == "__main__":
    main()
