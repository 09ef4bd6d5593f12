"""The SPCT rule reward (Eq. 11) in the form each RL framework loads, for training a judge with GRPO.

The policy being trained *is* the judge: its completion is a judge output (principles, critique,
``Scores: \\boxed{...}``) for a judge prompt from ``grm-reward spct rl-data``. Each rollout gets

- **+1** when its scores put the labelled best response strictly above every other (n >= 2), or
  agree with the 0/1 label of a single response (n = 1, the threshold rule of
  :func:`grm_reward.spct.rewards.is_correct`);
- **-1** otherwise: wrong pick, a tie at the top, wrong score count, out-of-range or unreadable.

Reading is always strict (never the format guarantee): the judge is being taught the format.

Three forms, one rule (:func:`judge_verdict`):

- TRL: :func:`judge_rule_reward`, a ``GRPOTrainer`` reward function reading the rl-data columns
  ``num_responses``, ``best``, ``label``, ``score_range`` (TRL passes dataset columns as keyword lists).
- verl: :func:`compute_score` (``reward.custom_reward_function.path=pkg://grm_reward.spct.reward_funcs``),
  reading ``reward_model.ground_truth`` in the encoding of :func:`encode_ground_truth`.
- OpenRLHF: :func:`openrlhf_reward_func`, wrapped by the file ``examples/openrlhf/judge_rule_reward.py``
  (``--reward.remote_url /path/judge_rule_reward.py``); the label is the same encoding, and the
  judge's output is split off the chat-templated query by :func:`split_judge_output`.

**Ground-truth encoding** (verl's ``ground_truth``, OpenRLHF's label): a JSON object, as a string
or a mapping, ``{"num_responses": n, "best": i | null, "label": 0 | 1 | null, "score_range": [lo, hi]}``
(``score_range`` and ``threshold`` optional), i.e. the fields of a ``grm-reward spct rl-data`` row.
``best`` is the 0-based position at which the judge prompt *shows* the best response (the judge's
scores are in shown order); ``label`` is a single response's 0/1 correctness. ``score_range`` is
the range the prompt asks for (default 1-10); a single response is judged against the threshold
of :func:`grm_reward.spct.rewards.is_correct` (default: the range's lower midpoint, 5 on 1-10,
0 on 0-1 where the rule is the paper's ``S_1 = r_1``).

Importing this module imports neither torch, trl, verl nor openrlhf.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grm_reward.chat_templates import split_query
from grm_reward.errors import InputError
from grm_reward.parsing import parse_judgement
from grm_reward.spct.rewards import is_correct
from grm_reward.types import completion_text

__all__ = [
    "RuleLabel",
    "Verdict",
    "compute_score",
    "encode_ground_truth",
    "judge_rule_reward",
    "judge_verdict",
    "openrlhf_reward_func",
    "parse_ground_truth",
    "split_judge_output",
]

@dataclass(frozen=True, slots=True)
class RuleLabel:
    """What one judge prompt's rule reward needs: how many responses it shows, and the truth."""

    num_responses: int
    best: int | None = None
    label: int | None = None
    score_range: tuple[int, int] = (1, 10)
    threshold: int | None = None

    def __post_init__(self) -> None:
        if self.num_responses < 1:
            raise InputError(f"num_responses must be >= 1, got {self.num_responses}")
        if self.num_responses == 1:
            if self.label is None:
                raise InputError("a single-response judge prompt needs its label (1 = correct, 0 = incorrect)")
            if self.label not in (0, 1):
                raise InputError(f"a single response's label must be 0 (incorrect) or 1 (correct), got {self.label}")
        if self.num_responses >= 2:
            if self.best is None:
                raise InputError(f"a judge prompt with {self.num_responses} responses needs 'best'")
            if not 0 <= self.best < self.num_responses:
                raise InputError(f"best={self.best} is not a 0-based index of {self.num_responses} responses")
        if not self.score_range[0] < self.score_range[1]:
            raise InputError(f"score_range must be [lo, hi] with lo < hi, got {list(self.score_range)}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The rule reward of one judge output, with why: ``valid`` (scores read), ``correct``, ``tie``."""

    reward: float
    valid: bool
    correct: bool
    tie: bool


def judge_verdict(text: str, truth: RuleLabel) -> Verdict:
    """Eq. 11 on one judge output, read strictly.

    >>> truth = RuleLabel(num_responses=2, best=1)
    >>> judge_verdict("Analysis: B wins.\\nScores: \\\\boxed{3, 8}", truth)
    Verdict(reward=1.0, valid=True, correct=True, tie=False)
    >>> judge_verdict("Scores: \\\\boxed{8, 8}", truth)
    Verdict(reward=-1.0, valid=True, correct=False, tie=True)
    >>> judge_verdict("Both are fine.", truth).reward
    -1.0
    """
    scores = parse_judgement(text, truth.num_responses, truth.score_range).scores
    if scores is None:
        return Verdict(-1.0, valid=False, correct=False, tie=False)
    correct = is_correct(
        scores, best=truth.best, label=truth.label, score_range=truth.score_range, threshold=truth.threshold
    )
    tie = truth.best is not None and truth.num_responses >= 2 and scores.count(max(scores)) > 1
    return Verdict(1.0 if correct else -1.0, valid=True, correct=correct, tie=tie)


# --- the ground-truth encoding ------------------------------------------------------------------
def encode_ground_truth(
    num_responses: int,
    best: int | None = None,
    label: int | None = None,
    *,
    score_range: Sequence[int] = (1, 10),
    threshold: int | None = None,
) -> str:
    """The JSON string verl's ``ground_truth`` and OpenRLHF's label carry (validated first).

    >>> encode_ground_truth(2, best=1)
    '{"num_responses": 2, "best": 1, "label": null, "score_range": [1, 10]}'
    """
    items = _as_list(score_range)
    if items is None or len(items) != 2:
        raise InputError(f"score_range must be [lo, hi], got {_short(score_range)}")
    truth = RuleLabel(num_responses, best, label, (int(items[0]), int(items[1])), threshold)
    value: dict[str, Any] = {
        "num_responses": truth.num_responses,
        "best": truth.best,
        "label": truth.label,
        "score_range": list(truth.score_range),
    }
    if threshold is not None:
        value["threshold"] = threshold
    return json.dumps(value)


def parse_ground_truth(value: Any) -> RuleLabel:
    """A :class:`RuleLabel` from the encoding (a JSON string or a mapping); a clear error otherwise.

    >>> parse_ground_truth('{"num_responses": 1, "best": null, "label": 1, "score_range": [0, 1]}')
    RuleLabel(num_responses=1, best=None, label=1, score_range=(0, 1), threshold=None)
    >>> parse_ground_truth("4")
    Traceback (most recent call last):
    ...
    grm_reward.errors.InputError: ground truth must be a JSON object like {"num_responses": 2, "best": 0, "label": null} (see grm_reward.spct.reward_funcs.encode_ground_truth), got '4'
    """
    data = value
    if isinstance(value, (str, bytes)):
        try:
            data = json.loads(value)
        except ValueError:
            data = None
    if not isinstance(data, Mapping):
        raise InputError(
            'ground truth must be a JSON object like {"num_responses": 2, "best": 0, "label": null} '
            f"(see grm_reward.spct.reward_funcs.encode_ground_truth), got {_short(value)}"
        )
    unknown = set(data) - {"num_responses", "best", "label", "score_range", "threshold"}
    if unknown:
        raise InputError(
            f"ground truth has unknown keys {sorted(unknown)}; known: num_responses, best, label, score_range, threshold"
        )
    if "num_responses" not in data:
        raise InputError(f"ground truth lacks num_responses: {_short(value)}")
    return RuleLabel(
        num_responses=_as_int(data["num_responses"], "num_responses"),
        best=_as_optional_int(data.get("best"), "best"),
        label=_as_optional_int(data.get("label"), "label"),
        score_range=_as_optional_range(data.get("score_range")) or (1, 10),
        threshold=_as_optional_int(data.get("threshold"), "threshold"),
    )


# --- TRL ----------------------------------------------------------------------------------------
def judge_rule_reward(
    prompts: Sequence[Any] | None = None,
    completions: Sequence[Any] = (),
    num_responses: Sequence[Any] | None = None,
    best: Sequence[Any] | None = None,
    label: Sequence[Any] | None = None,
    *,
    score_range: Sequence[Any] | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    log_extra: Callable[[str, list[Any]], None] | None = None,
    **kwargs: Any,
) -> list[float]:
    """TRL ``GRPOTrainer`` reward function: +1 / -1 per judge completion (Eq. 11).

    TRL passes the rl-data columns ``num_responses``, ``best``, ``label`` and ``score_range`` as
    lists aligned with ``completions`` (strings, or conversational
    ``[{"role": "assistant", "content": ...}]``); without a ``score_range`` column the range is 1-10. It logs
    ``judge_rule_reward/unreadable_share`` and ``judge_rule_reward/tie_share`` when TRL passes
    ``log_metric``, and a ``judge_rule_reward_valid`` column when it passes ``log_extra``. TRL logs
    the reward itself as ``rewards/judge_rule_reward/mean``.

    >>> judge_rule_reward(
    ...     completions=[[{"role": "assistant", "content": "Scores: \\\\boxed{2, 9}"}], "Scores: \\\\boxed{8}", "?"],
    ...     num_responses=[2, 1, 2], best=[1, None, 0], label=[None, 1, None])
    [1.0, 1.0, -1.0]
    """
    count = len(completions)
    columns = {"num_responses": num_responses, "best": best, "label": label, "score_range": score_range}
    for name, values in columns.items():
        if values is None:
            if name in ("num_responses",):
                raise InputError(
                    "judge_rule_reward needs a num_responses column (and best / label): "
                    "train on rows written by `grm-reward spct rl-data`"
                )
            continue
        if isinstance(values, (str, bytes)) or len(values) != count:
            raise InputError(f"column {name!r} must hold one value per completion ({count})")
    verdicts = []
    for i, completion in enumerate(completions):
        try:
            truth = RuleLabel(
                num_responses=_as_int(_at(num_responses, i), "num_responses"),
                best=_as_optional_int(_at(best, i), "best"),
                label=_as_optional_int(_at(label, i), "label"),
                score_range=_as_optional_range(_at(score_range, i)) or (1, 10),
            )
        except InputError as exc:
            raise InputError(f"completion {i}: {exc}") from exc
        verdicts.append(judge_verdict(completion_text(completion), truth))
    if log_metric is not None and verdicts:
        log_metric("judge_rule_reward/unreadable_share", sum(not v.valid for v in verdicts) / len(verdicts))
        log_metric("judge_rule_reward/tie_share", sum(v.tie for v in verdicts) / len(verdicts))
    if log_extra is not None:
        log_extra("judge_rule_reward_valid", [v.valid for v in verdicts])
    return [v.reward for v in verdicts]


# --- verl ---------------------------------------------------------------------------------------
def compute_score(
    data_source: str | None,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """verl ``compute_score``: ``{"score": ±1.0, "valid", "correct", "tie"}`` (the same keys every time).

    ``ground_truth`` is ``reward_model.ground_truth`` in the encoding of :func:`encode_ground_truth`;
    a malformed one raises :class:`~grm_reward.errors.InputError` (a data error, not a reward).

    >>> compute_score("grm_spct", "Scores: \\\\boxed{9, 4}", '{"num_responses": 2, "best": 0, "label": null}')
    {'score': 1.0, 'valid': 1.0, 'correct': 1.0, 'tie': 0.0}
    """
    verdict = judge_verdict(solution_str, parse_ground_truth(ground_truth))
    return {
        "score": verdict.reward,
        "valid": float(verdict.valid),
        "correct": float(verdict.correct),
        "tie": float(verdict.tie),
    }


# --- OpenRLHF -----------------------------------------------------------------------------------
def openrlhf_reward_func(
    queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **kwargs: Any
) -> dict[str, Any]:
    """OpenRLHF's ``reward_func(queries, prompts, labels)``: one ±1 reward per query.

    ``queries`` are prompt + judge output as OpenRLHF decoded them (chat template and special
    tokens included); ``labels`` are the ``--data.label_key`` values in the ground-truth encoding.
    Returns ``{"rewards": [±1.0], "scores": [1.0 correct / 0.0], "extra_logs": {...}}``: ``scores``
    is the 0/1 signal OpenRLHF's dynamic filtering reads (drops groups all right or all wrong).
    A query whose judge output cannot be told from its prompt gets -1 and ``judge_split_failed = 1``.

    >>> openrlhf_reward_func(["<|im_start|>user\\nJudge<|im_end|>\\n<|im_start|>assistant\\nScores: \\\\boxed{3, 7}<|im_end|>"],
    ...                      ["<|im_start|>user\\nJudge<|im_end|>\\n<|im_start|>assistant\\n"],
    ...                      ['{"num_responses": 2, "best": 1, "label": null}'])["rewards"]
    [1.0]
    """
    if not len(queries) == len(prompts) == len(labels):
        raise InputError(f"queries, prompts and labels differ in length ({len(queries)}, {len(prompts)}, {len(labels)})")
    rewards: list[float] = []
    scores: list[float] = []
    logs: dict[str, list[float]] = {"judge_valid": [], "judge_tie": [], "judge_split_failed": []}
    for query, prompt, label in zip(queries, prompts, labels):
        truth = parse_ground_truth(label)
        output = split_judge_output(query, prompt)
        if output is None:
            verdict = Verdict(-1.0, valid=False, correct=False, tie=False)
        else:
            verdict = judge_verdict(output, truth)
        rewards.append(verdict.reward)
        scores.append(float(verdict.correct))
        logs["judge_valid"].append(float(verdict.valid))
        logs["judge_tie"].append(float(verdict.tie))
        logs["judge_split_failed"].append(float(output is None))
    return {"rewards": rewards, "scores": scores, "extra_logs": logs}


def split_judge_output(query: str, prompt: str | None) -> str | None:
    """The judge's output in OpenRLHF's ``query`` (prompt + output), end-of-turn tokens stripped.

    The reward server's splitter (:func:`grm_reward.chat_templates.split_query`): ``prompt`` is
    a prefix of ``query``, or ``query`` starts with a tail of it (OpenRLHF left-truncates long
    prompts), or the output follows the last assistant header of a known chat template. None when
    none applies: the judge prompt itself quotes responses and an example ``\\boxed{x, x}``, so
    reading the whole query could score quoted text.

    >>> split_judge_output("<|im_start|>user\\nQ<|im_end|>\\n<|im_start|>assistant\\nScores: \\\\boxed{1}<|im_end|>",
    ...                    "<|im_start|>user\\nQ<|im_end|>\\n<|im_start|>assistant\\n")
    'Scores: \\\\boxed{1}'
    """
    split = split_query(query, prompt)
    return None if split.method == "whole" else split.response


# --- helpers ------------------------------------------------------------------------------------
def _at(values: Sequence[Any] | None, i: int) -> Any:
    return None if values is None else values[i]


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # NaN: pandas' missing int


def _as_int(value: Any, name: str) -> int:
    if _is_null(value):
        raise InputError(f"{name} is missing")
    if isinstance(value, bool) or (not hasattr(value, "__index__") and not isinstance(value, float)):
        raise InputError(f"{name} must be an integer, got {_short(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise InputError(f"{name} must be an integer, got {value}")
        return int(value)
    return int(value.__index__())


def _as_optional_int(value: Any, name: str) -> int | None:
    return None if _is_null(value) else _as_int(value, name)


def _as_list(value: Any) -> list[Any] | None:
    items = value.tolist() if hasattr(value, "tolist") else value
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        return None
    return list(items)


def _as_optional_range(value: Any) -> tuple[int, int] | None:
    if _is_null(value):
        return None
    items = _as_list(value)
    if items is None or len(items) != 2:
        raise InputError(f"score_range must be [lo, hi], got {_short(value)}")
    return (_as_int(items[0], "score_range[0]"), _as_int(items[1], "score_range[1]"))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
