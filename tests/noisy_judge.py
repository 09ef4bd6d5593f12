"""A judge double with seeded, realistic per-sample noise (adaptive-k tests and benchmarks/bench_adaptive_k.py).

Each item's responses get a latent quality from the data set's label: the good response 0, every
other one ``-gap`` with ``gap ~ N(mean_gap, item_sd)`` drawn per item (so some items are hard and
some the judge gets wrong whatever k). Each sample scores every response at ``base + quality +
noise`` (noise N(0, sample_sd) per response, a position bias for the first shown, rounded and
clipped to 1..10), seeded by the sample's seed only, and writes the paper's format, so the real
parser reads it. A share of samples forget the score block (invalid, they abstain).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from grm_reward.backends.scripted import JudgeCall, ScriptedBackend

__all__ = ["NoisyJudge", "noisy_backend"]


def _key(texts: Iterable[str]) -> str:
    return hashlib.blake2b("\x00".join(sorted(texts)).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


@dataclass
class NoisyJudge:
    """Call it with a :class:`JudgeCall`; ``add(responses, good)`` registers an item first."""

    mean_gap: float = 1.0
    item_sd: float = 1.5
    sample_sd: float = 1.2
    position_bias: float = 0.3
    invalid_share: float = 0.03
    seed: int = 0

    def __post_init__(self) -> None:
        self._quality: dict[str, dict[str, float]] = {}

    def add(self, responses: Sequence[str], good: int) -> None:
        """Register an item: ``responses`` with the index of the good one (the label)."""
        key = _key(responses)
        rng = random.Random(f"noisy-judge|{self.seed}|{key}")
        base = rng.uniform(4.5, 7.5)
        quality = {text: base if i == good else base - rng.gauss(self.mean_gap, self.item_sd) for i, text in enumerate(responses)}
        self._quality[key] = quality

    def __call__(self, call: JudgeCall) -> str:
        quality = self._quality.get(_key(call.responses))
        rng = random.Random(f"noisy-judge-sample|{call.seed}")
        if quality is None:  # an item nobody registered: an uninformed judge
            quality = {text: 5.5 for text in call.responses}
        if rng.random() < self.invalid_share:
            return "Specific Criteria: 1. Accuracy (Weight: 100%)\nAnalysis: Both responses address the question."
        scores = []
        for position, text in enumerate(call.responses):
            value = quality[text] + rng.gauss(0.0, self.sample_sd) + (self.position_bias if position == 0 else 0.0)
            scores.append(max(1, min(10, round(value))))
        return (
            "Specific Criteria: 1. Accuracy (Weight: 60%) 2. Helpfulness (Weight: 40%)\n"
            f"Analysis: Compared the {len(scores)} responses on accuracy and helpfulness.\n"
            f"Scores: \\boxed{{{', '.join(map(str, scores))}}}"
        )


def noisy_backend(judge: NoisyJudge) -> ScriptedBackend:
    """A scripted backend that runs ``judge`` and keeps no request log (long runs)."""
    return ScriptedBackend(judge, record=False)
