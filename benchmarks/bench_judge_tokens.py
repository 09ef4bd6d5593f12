"""Judge tokens per rewarded response with and without reuse (issue 12): shared principles, deduplication.

Both sides of every comparison run in one process on the same judge double, and the counted
quantities come first: judge completion and prompt tokens (the scripted backend's whitespace-word
counts) per rewarded response, then what each saving costs in reward quality.

The judge double (:class:`PrincipledJudge`) writes the paper's three sections at stated lengths
(``--principle-words``, ``--analysis-words`` + ``--words-per-response``; defaults sized on the
240-380-token outputs of DeepSeek-GRM-27B, paper App. E.4) and scores response i in sample j as
``quality_i + b(P_j, i) + e_ij``: ``b`` is what the sample's principles P_j make of response i
(normal, sd ``--principle-sd``, a function of the principles and the response), ``e`` is seeded
critique noise (sd ``--critique-sd``). A sample writing its own principles draws its own P_j; with
shared principles every sample reads the one set the principle call wrote, so ``b`` no longer
averages out over the k samples. The quality cost is therefore the double's assumption about how
much of a judge's disagreement comes from its principles, printed for a few values.

    .venv/bin/python benchmarks/bench_judge_tokens.py                 # every table, ~1 min on 2 CPUs
    .venv/bin/python benchmarks/bench_judge_tokens.py --pairs 866 --groups 64
    .venv/bin/python benchmarks/bench_judge_tokens.py --only embedded     # the embedded judge's real token counts
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grm_reward import GenerativeRewardModel, Request, RewardResult  # noqa: E402
from grm_reward.backends import ScriptedBackend  # noqa: E402
from grm_reward.backends.scripted import JudgeCall  # noqa: E402
from grm_reward.prompts.defences import defend_request  # noqa: E402
from tests.conftest import find_shared_data  # noqa: E402

PRINCIPLES_MARK = "set the judging criteria"  # a phrase of prompts/templates/principles.txt
GIVEN = "#### Given Principles ####\n"
RB_PARTIAL = (find_shared_data() or ROOT.parent / "shared" / "data") / "rewardbench_partial" / "rewardbench_v1_partial.jsonl"


def _unit(*parts: object) -> float:
    """A repeatable draw in [0, 1) from its inputs (Python's hash() is salted per process)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _gauss(*parts: object) -> float:
    return random.Random(_unit(*parts)).gauss(0.0, 1.0)


def _words(count: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(count))


class PrincipledJudge:
    """A judge double whose samples write principles, a critique and scores (see the module docstring)."""

    def __init__(self, quality: dict[str, float], args: argparse.Namespace, principle_sd: float) -> None:
        self.quality = quality
        self.args = args
        self.principle_sd = principle_sd

    def __call__(self, call: JudgeCall) -> str:
        a = self.args
        if PRINCIPLES_MARK in call.prompt:  # the shared-principles call: principles only
            return "Specific Criteria: 1. " + _words(a.principle_words, "p") + " (Weight: 100%)"
        rng = call.rng
        if GIVEN in call.prompt:
            given = call.prompt.split(GIVEN, 1)[1].split("\n####", 1)[0]
            principles, written = hashlib.blake2b(given.encode(), digest_size=8).hexdigest(), ""
        else:
            principles = str(rng.getrandbits(64))
            written = "Specific Criteria: 1. " + _words(a.principle_words, "p") + " (Weight: 100%)\n"
        lo, hi = 1, 10
        scores = []
        for response in call.responses:
            value = self.quality[response] + self.principle_sd * _gauss(principles, response) + rng.gauss(0, a.critique_sd)
            scores.append(max(lo, min(hi, round(value))))
        analysis = _words(a.analysis_words + a.words_per_response * len(call.responses), "a")
        return f"{written}Analysis: {analysis}\nScores: \\boxed{{{', '.join(map(str, scores))}}}"


def grpo_groups(count: int, size: int, duplicates: float, seed: int) -> tuple[list[tuple[str, list[str]]], dict[str, float]]:
    """``count`` groups of ``size`` completions, a ``duplicates`` share of each a copy of another member."""
    rng = random.Random(seed)
    groups, quality = [], {}
    for g in range(count):
        prompt = f"Question {g}: " + _words(40, f"q{g}_")
        distinct = size - round(size * duplicates)
        members = [f"Completion {g}.{i}: " + _words(rng.randint(30, 120), "w") for i in range(distinct)]
        for member in members:
            quality[member] = rng.uniform(2.0, 9.0)
        members += [rng.choice(members[:distinct]) for _ in range(size - distinct)]
        rng.shuffle(members)
        groups.append((prompt, members))
    return groups, quality


def run(rm: GenerativeRewardModel, requests: list[Request]) -> tuple[list[RewardResult], dict[str, float]]:
    backend = rm.backend
    assert isinstance(backend, ScriptedBackend)
    before = (backend.stats.completion_tokens, backend.stats.prompt_tokens, backend.stats.samples)
    started = time.perf_counter()
    results = rm.score_batch(requests)
    responses = sum(r.n for r in requests)
    spent = {
        "completion": (backend.stats.completion_tokens - before[0]) / responses,
        "prompt": (backend.stats.prompt_tokens - before[1]) / responses,
        "samples": (backend.stats.samples - before[2]) / responses,
        "usage_completion": sum(r.usage.completion_tokens for r in results) / responses,
        "wall_ms": 1000 * (time.perf_counter() - started),
    }
    return results, spent


def model(quality: dict[str, float], args: argparse.Namespace, principle_sd: float, **config: object) -> GenerativeRewardModel:
    backend = ScriptedBackend(PrincipledJudge(quality, args, principle_sd), record=False)
    return GenerativeRewardModel(backend=backend, k=args.k, seed=args.seed, **config)  # type: ignore[arg-type]


def requests_of(groups: list[tuple[str, list[str]]], listwise: bool) -> list[Request]:
    if listwise:
        return [Request(prompt, members) for prompt, members in groups]
    return [Request(prompt, [member]) for prompt, members in groups for member in members]


def shared_principles(args: argparse.Namespace) -> None:
    groups, quality = grpo_groups(args.groups, args.group_size, 0.0, args.seed)
    later, later_quality = grpo_groups(args.groups, args.group_size, 0.0, args.seed + 1)
    later = [(groups[g][0], members) for g, (_, members) in enumerate(later)]  # step 2: same prompts, new completions
    quality.update(later_quality)
    print(f"\n## Shared principles: {args.groups} GRPO groups, G={args.group_size}, k={args.k}; judge tokens per "
          "rewarded response (words)")
    print(f"{'input':<11}{'step':<7}{'principles':<12}{'completion':>11}{'prompt':>9}{'samples':>9}   ratio on/off (completion, prompt)")
    for listwise in (False, True):
        off = model(quality, args, args.principle_sd)
        on = model(quality, args, args.principle_sd, principles={"shared": True})
        for step, step_groups in (("1", groups), ("2", later)):
            requests = requests_of(step_groups, listwise)
            _, a = run(off, requests)
            _, b = run(on, requests)
            assert abs(b["usage_completion"] - b["completion"]) < 1e-9, "results' usage must add up to the judge's tokens"
            mode = "listwise" if listwise else "one-by-one"
            for name, m in (("own", a), ("shared", b)):
                print(f"{mode:<11}{step:<7}{name:<12}{m['completion']:>11.1f}{m['prompt']:>9.1f}{m['samples']:>9.3f}", end="")
                print(f"   {b['completion'] / a['completion']:.3f}x, {b['prompt'] / a['prompt']:.3f}x" if name == "shared" else "")


def embedded(args: argparse.Namespace) -> None:
    """Shared principles on the embedded judge (real tokenizer counts, transformers backend): the machinery.

    The 135M judge ignores the output format and writes to its budget, so its completion tokens do not
    shrink when it is asked for a critique alone; its prompt tokens are the figure that transfers."""
    from _common import judge_name, load_judge

    from grm_reward import GRMConfig

    base = GRMConfig(max_new_tokens=args.embedded_tokens, transformers={"device": "cpu"}, k=args.k, seed=args.seed)
    backend = load_judge(base)
    groups, _ = grpo_groups(args.embedded_groups, args.group_size, 0.0, args.seed)
    print(f"\n## Shared principles on {judge_name(base)} (CPU, max_new_tokens={args.embedded_tokens}): "
          f"{args.embedded_groups} groups, G={args.group_size}, k={args.k}; judge tokens per rewarded response")
    print(f"{'input':<11}{'principles':<12}{'completion':>11}{'prompt':>9}{'wall s':>8}   ratio on/off (completion, prompt)")
    for listwise in (False, True):
        requests = requests_of(groups, listwise)
        sides = {}
        for name, extra in (("own", {}), ("shared", {"principles": {"shared": True}})):
            rm = GenerativeRewardModel(base.updated(**extra), backend=backend)
            started = time.perf_counter()
            results = rm.score_batch(requests)
            responses = sum(r.n for r in requests)
            sides[name] = (sum(r.usage.completion_tokens for r in results) / responses,
                           sum(r.usage.prompt_tokens for r in results) / responses, time.perf_counter() - started)
        a, b = sides["own"], sides["shared"]
        mode = "listwise" if listwise else "one-by-one"
        for name, (c, p, w) in sides.items():
            print(f"{mode:<11}{name:<12}{c:>11.1f}{p:>9.1f}{w:>8.1f}", end="")
            print(f"   {b[0] / a[0]:.3f}x, {b[1] / a[1]:.3f}x" if name == "shared" else "")


def deduplication(args: argparse.Namespace) -> None:
    print(f"\n## Deduplication: {args.groups} GRPO groups, G={args.group_size}, k={args.k}; judge tokens per rewarded response (words)")
    print(f"{'dupes':<7}{'input':<11}{'dedup':<7}{'completion':>11}{'prompt':>9}{'samples':>9}   ratio on/off (completion)  "
          "copies' reward spread (off -> on)")
    for share in (0.0, 0.25, 0.5):
        groups, quality = grpo_groups(args.groups, args.group_size, share, args.seed)
        for listwise in (False, True):
            requests = requests_of(groups, listwise)
            off = model(quality, args, args.principle_sd)
            on = model(quality, args, args.principle_sd, reuse={"dedup": True})
            ra, a = run(off, requests)
            rb, b = run(on, requests)
            spread_off, spread_on = copy_spread(groups, ra, listwise), copy_spread(groups, rb, listwise)
            mode = "listwise" if listwise else "one-by-one"
            print(f"{share:<7.0%}{mode:<11}{'off':<7}{a['completion']:>11.1f}{a['prompt']:>9.1f}{a['samples']:>9.3f}")
            print(f"{'':<7}{mode:<11}{'on':<7}{b['completion']:>11.1f}{b['prompt']:>9.1f}{b['samples']:>9.3f}"
                  f"   {b['completion'] / a['completion']:.3f}x{'':<18}{spread_off:.3f} -> {spread_on:.3f}")


def copy_spread(groups: list[tuple[str, list[str]]], results: list[RewardResult], listwise: bool) -> float:
    """Mean absolute reward difference between copies of one completion in one group (0: they agree)."""
    rewards: list[list[float]] = []
    if listwise:
        rewards = [[float(x or 0.0) for x in r.rewards] for r in results]
    else:
        flat = iter(results)
        rewards = [[float(next(flat).rewards[0] or 0.0) for _ in members] for _, members in groups]
    gaps = []
    for (_, members), values in zip(groups, rewards):
        first: dict[str, float] = {}
        for member, value in zip(members, values):
            if member in first:
                gaps.append(abs(value - first[member]))
            first.setdefault(member, value)
    return mean(gaps) if gaps else 0.0


def pairwise_items(count: int, seed: int) -> tuple[list[tuple[str, str, str]], str]:
    if RB_PARTIAL.is_file():
        rows = [json.loads(line) for line in RB_PARTIAL.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = [r for r in rows if r["chosen"] != r["rejected"]]
        random.Random(seed).shuffle(rows)
        return [(r["prompt"], r["chosen"], r["rejected"]) for r in rows[:count]], f"RewardBench v1 (partial), {min(count, len(rows))} pairs"
    from _common import PAIRS

    return list(PAIRS), f"the {len(PAIRS)} built-in pairs (shared data absent)"


def quality_cost(args: argparse.Namespace) -> None:
    items, source = pairwise_items(args.pairs, args.seed)
    quality = {}
    for prompt, chosen, rejected in items:
        shown, _ = defend_request(Request(prompt, [chosen, rejected]))  # the judge reads responses as defended
        for text, value in zip([chosen, rejected, *shown.responses], [args.chosen_quality, args.chosen_quality - args.gap] * 2):
            quality[text] = value
    requests = [Request(p, [c, r]) for p, c, r in items]
    print(f"\n## Quality: {source}, listwise pairs, k={args.k}; the double's chosen-rejected gap {args.gap}, "
          f"critique sd {args.critique_sd}; means over seeds {args.seed}..{args.seed + args.quality_seeds - 1}")
    print(f"{'principle sd':<14}{'acc own':>9}{'acc shared':>12}{'same pick':>11}{'completion on/off':>19}")
    for sd in sorted({0.0, 0.5, args.principle_sd, 1.5}):
        own, shared, same, ratio = [], [], [], []
        for seed in range(args.seed, args.seed + args.quality_seeds):
            runs = argparse.Namespace(**{**vars(args), "seed": seed})
            ra, a = run(model(quality, runs, sd), requests)
            rb, b = run(model(quality, runs, sd, principles={"shared": True}), requests)
            own.append(mean(_correct(r) for r in ra))
            shared.append(mean(_correct(r) for r in rb))
            same.append(mean(1.0 if _pick(x) == _pick(y) else 0.0 for x, y in zip(ra, rb)))
            ratio.append(b["completion"] / a["completion"])
        print(f"{sd:<14.1f}{mean(own):>9.3f}{mean(shared):>12.3f}{mean(same):>11.3f}{mean(ratio):>18.3f}x")
    print("acc: share of pairs whose chosen answer gets the higher reward (ties count 1/2); same pick: share of pairs where "
          "own and shared principles prefer the same answer (or both tie)")


def together(args: argparse.Namespace) -> None:
    """A GRPO step judged with today's defaults, each saving alone, and every saving switched on."""
    groups, quality = grpo_groups(args.groups, args.group_size, args.together_duplicates, args.seed)
    k = args.together_k
    runs = argparse.Namespace(**{**vars(args), "k": k})
    savings: list[tuple[str, dict[str, object]]] = [
        ("defaults", {}),
        ("adaptive k", {"adaptive": {"enabled": True, "target": "values"}}),
        ("shared principles", {"principles": {"shared": True}}),
        ("dedup", {"reuse": {"dedup": True}}),
        ("all on", {"adaptive": {"enabled": True, "target": "values"}, "principles": {"shared": True},
                    "reuse": {"dedup": True}}),
        ("all on, tol 0.10", {"adaptive": {"enabled": True, "target": "values", "tolerance": 0.1},
                              "principles": {"shared": True}, "reuse": {"dedup": True}}),
    ]
    print(f"\n## All together: one GRPO step, {args.groups} groups, G={args.group_size}, "
          f"{args.together_duplicates:.0%} duplicate completions, k={k} (max k under adaptive, target 'values'); "
          "judge tokens per rewarded response (words)")
    print(f"{'input':<11}{'setting':<19}{'completion':>11}{'prompt':>9}{'samples':>9}{'vs defaults':>13}"
          f"{'rank corr':>11}{'|dr| mean':>11}")
    for listwise in (False, True):
        requests = requests_of(groups, listwise)
        base: list[RewardResult] = []
        base_tokens = 0.0
        for name, config in savings:
            results, m = run(model(quality, runs, args.principle_sd, **config), requests)
            if name == "defaults":
                base, base_tokens = results, m["completion"]
            flat = [x for r in results for x in r.rewards]
            flat_base = [x for r in base for x in r.rewards]
            drift = mean(abs((a or 0.0) - (b or 0.0)) for a, b in zip(flat, flat_base))
            corr = _group_rank_corr(groups, results, quality, listwise)
            mode = "listwise" if listwise else "one-by-one"
            print(f"{mode:<11}{name:<19}{m['completion']:>11.1f}{m['prompt']:>9.1f}{m['samples']:>9.3f}"
                  f"{m['completion'] / base_tokens:>12.3f}x{corr:>11.3f}{drift:>11.3f}")
    print("rank corr: mean over groups of Spearman's correlation between the rewards and the double's true quality; "
          "|dr| mean: mean absolute change of a reward (unit scale) against the defaults' reward")


def _group_rank_corr(
    groups: list[tuple[str, list[str]]], results: list[RewardResult], quality: dict[str, float], listwise: bool
) -> float:
    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):  # ties share their mean rank
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for m in range(i, j + 1):
                out[order[m]] = (i + j) / 2
            i = j + 1
        return out

    corrs, at = [], 0
    for _, members in groups:
        if listwise:
            rewards = [r or 0.0 for r in results[at].rewards]
            at += 1
        else:
            rewards = [results[at + i].rewards[0] or 0.0 for i in range(len(members))]
            at += len(members)
        a, b = ranks(rewards), ranks([quality[m] for m in members])
        ma, mb = mean(a), mean(b)
        num = sum((x - ma) * (y - mb) for x, y in zip(a, b))
        den = (sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b)) ** 0.5
        if den:
            corrs.append(num / den)
    return mean(corrs)


def _correct(result: RewardResult) -> float:
    pick = _pick(result)
    return 1.0 if pick == 0 else 0.5 if pick == -1 else 0.0


def _pick(result: RewardResult) -> int:
    a, b = (result.rewards[0] or 0.0), (result.rewards[1] or 0.0)
    return 0 if a > b else 1 if b > a else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=32, help="GRPO groups (prompts) per step")
    parser.add_argument("--group-size", type=int, default=8, help="G, completions per prompt")
    parser.add_argument("-k", type=int, default=4, help="judge samples per request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--principle-words", type=int, default=100, help="length of a sample's principles section")
    parser.add_argument("--analysis-words", type=int, default=40, help="length of a critique, before per-response parts")
    parser.add_argument("--words-per-response", type=int, default=70, help="critique length per response shown")
    parser.add_argument("--principle-sd", type=float, default=1.0, help="sd of what a principle set makes of a response")
    parser.add_argument("--critique-sd", type=float, default=1.5, help="sd of a sample's critique noise")
    parser.add_argument("--pairs", type=int, default=400, help="pairs for the quality table")
    parser.add_argument("--quality-seeds", type=int, default=3, help="seeds the quality table averages over")
    parser.add_argument("--gap", type=float, default=1.5, help="the double's quality gap between chosen and rejected")
    parser.add_argument("--chosen-quality", type=float, default=6.5)
    parser.add_argument("--only", default="principles,dedup,quality,together", help="tables to run (also: embedded)")
    parser.add_argument("--together-k", type=int, default=8, help="k (max k under adaptive) of the all-together table")
    parser.add_argument("--together-duplicates", type=float, default=0.25, help="duplicate share of the all-together step")
    parser.add_argument("--embedded-groups", type=int, default=2, help="groups for the embedded-judge table")
    parser.add_argument("--embedded-tokens", type=int, default=48, help="max_new_tokens for the embedded-judge table")
    args = parser.parse_args()
    only = set(args.only.split(","))
    print(f"judge double: principles {args.principle_words} words, critique {args.analysis_words} + "
          f"{args.words_per_response}/response words, principle sd {args.principle_sd}, critique sd {args.critique_sd}, "
          f"seed {args.seed}")
    if "principles" in only:
        shared_principles(args)
    if "dedup" in only:
        deduplication(args)
    if "quality" in only:
        quality_cost(args)
    if "together" in only:
        together(args)
    if "embedded" in only:
        embedded(args)


if __name__ == "__main__":
    main()
