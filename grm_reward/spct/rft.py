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

:func:`run_rft` is the whole loop (sample, select, count) over a reward model and items; the
CLI only parses flags, calls it and writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from grm_reward.chunking import raise_run_error, score_chunk
from grm_reward.config import _format_validation_error
from grm_reward.errors import ConfigError, GRMError
from grm_reward.spct.items import PreferenceItem
from grm_reward.spct.sampling import JudgeSample, SpctSampler

if TYPE_CHECKING:
    from grm_reward.model import GenerativeRewardModel

__all__ = [
    "HINT_MODES",
    "HintMode",
    "RFTOutcome",
    "RFTSettings",
    "RFTStats",
    "checked_items",
    "hint_wanted",
    "is_too_easy",
    "run_rft",
    "sample_chunk",
    "select_rft",
    "sft_row",
    "trajectory_row",
]

HintMode = Literal["off", "on", "both", "fallback"]
HINT_MODES: tuple[HintMode, ...] = ("off", "on", "both", "fallback")

#: The paper's number of plain trajectories per item (App. C.1).
PAPER_RFT_SAMPLES = 3

class RFTSettings(BaseModel):
    """How RFT data is sampled and selected (``grm-reward spct rft-data`` flags)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    samples: int = Field(PAPER_RFT_SAMPLES, ge=1, description="Plain judge samples per item (paper N_RFT = 3).")
    hint: HintMode = Field("both", description="Hinted sampling mode (see HINT_MODES).")
    keep_easy: bool = Field(False, description="Keep items whose N plain samples were all correct.")
    chunk_size: int = Field(8, ge=1, description="Items sent to the backend together.")
    label_threshold: int | None = Field(
        None, description="Single responses: the score a correct one must exceed (default: the range's lower midpoint)."
    )

    @classmethod
    def build(cls, **values: Any) -> RFTSettings:
        """The settings, with a pydantic validation error turned into :class:`~grm_reward.errors.ConfigError`."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(exc)) from exc

    @property
    def plain(self) -> int:
        """Plain trajectories per item (none when only hinted ones are asked for)."""
        return 0 if self.hint == "on" else self.samples


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


@dataclass
class RFTOutcome:
    """What :func:`run_rft` produced: the SFT rows, every trajectory (kept or not), and the counts."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    trajectories: list[dict[str, Any]] = field(default_factory=list)
    stats: RFTStats = field(default_factory=RFTStats)


Report = Callable[[str], None]


def checked_items(
    sampler: SpctSampler, items: Sequence[PreferenceItem], report: Report | None = None
) -> tuple[list[PreferenceItem], int]:
    """The items whose judge prompt can be built; the others are reported and counted."""
    kept, bad = [], 0
    for item in items:
        try:
            sampler.check(item)
        except GRMError as exc:
            if report is not None:
                report(f"skipped {item.where or item.id}: {exc}")
            bad += 1
            continue
        kept.append(item)
    return kept, bad


def sample_chunk(
    sampler: SpctSampler,
    items: Sequence[PreferenceItem],
    count: int,
    *,
    hinted: bool,
    report: Report | None = None,
) -> tuple[dict[str, list[JudgeSample]], dict[str, str]]:
    """Samples per item id, and the items that failed (id -> message). A chunk that fails is sent
    again item by item (:mod:`grm_reward.chunking`); an error of the run itself stops it."""
    if not items:
        return {}, {}
    outcomes = score_chunk(lambda chunk: sampler.sample(chunk, count, hinted=hinted), items)
    raise_run_error(outcomes)
    done: dict[str, list[JudgeSample]] = {}
    failed: dict[str, str] = {}
    for item, outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, Exception):
            failed[item.id] = str(outcome)
            if report is not None:
                report(f"item {item.id} failed: {outcome}")
        else:
            done[item.id] = outcome
    return done, failed


def run_rft(
    rm: GenerativeRewardModel,
    items: Sequence[PreferenceItem],
    settings: RFTSettings,
    *,
    report: Report | None = None,
    on_chunk: Callable[[list[dict[str, Any]], list[dict[str, Any]]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> RFTOutcome:
    """Sample, select and count RFT trajectories for ``items`` with the judge of ``rm``.

    ``rm.config`` sets the judge (its temperature: the paper's 0.5 when sampling several);
    ``report`` receives one line per skipped or failed item; ``on_chunk(rows, trajectories)``
    gets each chunk's new rows as soon as it is done (the CLI writes them at once);
    ``progress(n)`` counts items.
    """
    sampler = SpctSampler(rm, threshold=settings.label_threshold)
    outcome = RFTOutcome()
    stats = outcome.stats
    todo, bad = checked_items(sampler, items, report)
    stats.skipped_rows += bad
    for start in range(0, len(todo), settings.chunk_size):
        chunk = todo[start : start + settings.chunk_size]
        plain: dict[str, list[JudgeSample]] = {item.id: [] for item in chunk}
        if settings.plain:
            got, failed = sample_chunk(sampler, chunk, settings.plain, hinted=False, report=report)
            plain.update(got)
            stats.failed_items += len(failed)
            chunk = [item for item in chunk if item.id not in failed]
        easy = {item.id: is_too_easy(plain[item.id], settings.plain) for item in chunk}
        wanted = [
            item for item in chunk
            if hint_wanted(settings.hint, item, plain[item.id], too_easy=easy[item.id], keep_easy=settings.keep_easy)
        ]
        if settings.hint != "off":
            stats.no_hint_single += sum(1 for item in chunk if item.best is None)
        hinted, failed = sample_chunk(sampler, wanted, 1, hinted=True, report=report)
        stats.failed_items += len(failed)
        rows: list[dict[str, Any]] = []
        trajectories: list[dict[str, Any]] = []
        for item in chunk:
            if item.id in failed:
                continue
            mine = hinted.get(item.id, [])
            stats.items += 1
            stats.add_samples(plain[item.id])
            stats.add_samples(mine)
            kept, too_easy = select_rft(plain[item.id], mine, samples=settings.plain, keep_easy=settings.keep_easy)
            stats.too_easy += too_easy
            stats.too_easy_kept += too_easy and settings.keep_easy
            rows.extend(sft_row(s) for s in kept)
            trajectories.extend(trajectory_row(s) for s in (*plain[item.id], *mine))
        stats.rows += len(rows)
        outcome.rows.extend(rows)
        outcome.trajectories.extend(trajectories)
        if on_chunk is not None:
            on_chunk(rows, trajectories)
        if progress is not None:
            progress(len(todo[start : start + settings.chunk_size]))
    return outcome
