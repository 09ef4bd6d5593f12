"""Rejective fine-tuning (RFT) data: the paper's cold start for the judge (§3.2, App. C.1).

For each item, N_RFT = 3 plain (non-hinted) trajectories are sampled. The rules, from the paper:

- "reject trajectories with predicted rewards that are incorrect" (Eq. 10, strict: a tie at the
  top or an unreadable sample is incorrect);
- reject "the query and responses with all N_RFT trajectories correct (too easy)";
- hinted sampling appends "The best response is: Response j" to the judge prompt; "each query
  and the corresponding responses are sampled once, and trajectories are only rejected when
  incorrect".

Hint modes (:data:`HINT_MODES`): ``off`` (plain only), ``on`` (hinted only: one trajectory per
item, no too-easy test, which needs N plain ones), ``both`` (the paper's two sources: N plain
trajectories per item, then one hinted trajectory for each item that was not dropped as too easy)
and ``fallback`` (one hinted trajectory only for the items none of whose plain trajectories was
correct; saves judge calls). A too-easy item is dropped whole, its hinted trajectory included,
since the paper rejects "the query and responses". A single response (n = 1) is never hinted:
its best is "Response 1", a hint without information.

Rows are chat-format SFT rows. The user turn is the judge prompt **without** the hint (the judge
never sees one at inference), the assistant turn the trajectory as written::

    {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}],
     "id": ..., "hinted": false, "num_responses": 2, "order": [1, 0], "scores": [3, 8]}

``order[p]`` is the item's index of the response shown as Response p+1 and ``scores`` are the
judge's scores as written (``scores[p]`` is for Response p+1). A system prompt in the config comes
first in ``messages``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from grm_reward.spct.items import PreferenceItem
from grm_reward.spct.sampling import JudgeSample

__all__ = ["HINT_MODES", "HintMode", "RFTStats", "hint_wanted", "is_too_easy", "select_rft", "sft_row", "trajectory_row"]

HintMode = Literal["off", "on", "both", "fallback"]
HINT_MODES: tuple[HintMode, ...] = ("off", "on", "both", "fallback")

#: The paper's number of plain trajectories per item (App. C.1).
PAPER_RFT_SAMPLES = 3


@dataclass
class RFTStats:
    """Counts over a run, for the summary."""

    items: int = 0
    plain_samples: int = 0
    plain_correct: int = 0
    plain_unreadable: int = 0
    hinted_samples: int = 0
    hinted_correct: int = 0
    hinted_unreadable: int = 0
    too_easy: int = 0
    too_easy_kept: int = 0
    no_hint_single: int = 0
    rows: int = 0
    failed_items: int = 0
    skipped_rows: int = 0

    def add_samples(self, samples: Sequence[JudgeSample]) -> None:
        for sample in samples:
            if sample.hinted:
                self.hinted_samples += 1
                self.hinted_correct += sample.correct
                self.hinted_unreadable += sample.shown_scores is None
            else:
                self.plain_samples += 1
                self.plain_correct += sample.correct
                self.plain_unreadable += sample.shown_scores is None

    def lines(self) -> list[str]:
        def share(part: int, whole: int) -> str:
            return f"{part}/{whole} ({100.0 * part / whole:.1f}%)" if whole else "0/0"

        return [
            f"items: {self.items} sampled, {self.failed_items} failed, {self.skipped_rows} input rows skipped",
            f"plain samples: {self.plain_samples}, correct {share(self.plain_correct, self.plain_samples)}, "
            f"unreadable {share(self.plain_unreadable, self.plain_samples)}",
            f"hinted samples: {self.hinted_samples}, correct {share(self.hinted_correct, self.hinted_samples)}, "
            f"unreadable {share(self.hinted_unreadable, self.hinted_samples)}"
            + (f"; {self.no_hint_single} single-response items not hinted" if self.no_hint_single else ""),
            f"too easy (every plain sample correct): {self.too_easy} items"
            + (f", kept ({self.too_easy_kept}, --keep-easy)" if self.too_easy_kept else ", dropped"),
            f"rows written: {self.rows}",
        ]

    def to_dict(self) -> dict[str, int]:
        return dict(vars(self))


def is_too_easy(plain: Sequence[JudgeSample], samples: int) -> bool:
    """All ``samples`` plain trajectories of an item are correct (and there were that many)."""
    return samples > 0 and len(plain) == samples and all(s.correct for s in plain)


def hint_wanted(mode: HintMode, item: PreferenceItem, plain: Sequence[JudgeSample], *, too_easy: bool, keep_easy: bool) -> bool:
    """Whether the item gets a hinted trajectory under ``mode``, given its plain ones."""
    if mode == "off" or item.best is None:
        return False
    if mode == "on":
        return True
    if too_easy and not keep_easy:
        return False
    if mode == "both":
        return True
    return not any(s.correct for s in plain)  # fallback


def select_rft(
    plain: Sequence[JudgeSample], hinted: Sequence[JudgeSample], *, samples: int, keep_easy: bool
) -> tuple[list[JudgeSample], bool]:
    """The trajectories of one item kept for RFT, and whether the item was too easy."""
    too_easy = is_too_easy(plain, samples)
    if too_easy and not keep_easy:
        return [], True
    return [s for s in (*plain, *hinted) if s.correct], too_easy


def sft_row(sample: JudgeSample) -> dict[str, Any]:
    """The chat-format SFT row of a kept trajectory (see the module docstring)."""
    return {
        "messages": [dict(m) for m in sample.messages] + [{"role": "assistant", "content": sample.text}],
        "id": sample.item.id,
        "hinted": sample.hinted,
        "num_responses": sample.item.n,
        "order": list(sample.order),
        "scores": None if sample.shown_scores is None else list(sample.shown_scores),
    }


def trajectory_row(sample: JudgeSample) -> dict[str, Any]:
    """Every sampled trajectory, accepted or not, with its item: what ``spct meta-data`` can reuse."""
    item = sample.item
    return {
        "trajectory": True,
        "id": item.id,
        "prompt": item.prompt_json(),
        "responses": list(item.responses),
        "best": item.best,
        "label": item.label,
        "hinted": sample.hinted,
        "order": list(sample.order),
        "messages": [dict(m) for m in sample.messages],
        "text": sample.text,
        "scores": None if sample.shown_scores is None else list(sample.shown_scores),
        "correct": sample.correct,
        "reason": sample.reason,
        "seed": sample.seed,
    }
