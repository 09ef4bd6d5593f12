"""Training a meta RM: a sequence classifier with one logit, binary cross-entropy on Eq. 10 labels.

The paper trains its meta RM "with the binary cross-entropy loss, where the label is identified
based on Equation 10", learning rate 1e-5, batch size 512 (App. C.1). TRL's ``RewardTrainer``
is pairwise (Bradley-Terry), so this is a small loop of its own: ``AutoModelForSequenceClassification``
(``num_labels=1``) on the rows of ``spct meta-data``, AdamW, gradient accumulation for large
effective batches, on CPU or GPU.

Inputs are tokenized exactly as :class:`~grm_reward.meta_rm.TransformersMetaRM` tokenizes them
when it rates samples: each row's ``messages`` rendered by :func:`~grm_reward.meta_rm.meta_text`
with the tokenizer of the model being trained (``text`` for rows without ``messages``), no extra
special tokens, truncated on the left to ``max_length``. The checkpoint (model and tokenizer,
pad token set) loads with ``GRMConfig(meta_rm=OUTPUT_DIR)``.

torch and transformers are imported only when training starts.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from grm_reward.config import _format_validation_error
from grm_reward.errors import BackendUnavailableError, ConfigError, DataError, InputError
from grm_reward.eval.metrics import roc_auc
from grm_reward.jsonl import LoadIssue, jsonl_rows

__all__ = ["MetaExample", "MetaTrainReport", "MetaTrainSettings", "read_meta_rows", "split_examples", "train_meta_rm"]

#: The paper's meta RM learning rate and batch size (App. C.1).
PAPER_META_LR = 1e-5
PAPER_META_BATCH = 512
#: Name of the training report written beside the checkpoint.
REPORT_FILE = "meta_rm_training.json"


@dataclass(frozen=True, slots=True)
class MetaExample:
    """One training row: the meta RM's input (``messages``, else ``text``) and its 0/1 label."""

    id: str
    label: int
    text: str
    messages: tuple[dict[str, Any], ...] | None = None


class MetaTrainSettings(BaseModel):
    """How to train. Each field's description is its ``grm-reward spct train-meta`` flag's help."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    output_dir: Path = Field(description="Checkpoint folder to write.")
    base_model: str | None = Field(
        None, description="Model to start from (default: the embedded SmolLM2-135M-Instruct)."
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the data (default 1).")
    lr: float = Field(PAPER_META_LR, gt=0, description="Learning rate (paper: 1e-5).")
    batch_size: int = Field(8, ge=1, description="Rows per forward pass (default 8).")
    grad_accum: int = Field(
        1, ge=1, description="Forward passes per optimizer step (paper batch 512 = batch size x this)."
    )
    max_length: int = Field(
        4096, ge=16, description="Longest input in tokens, cut on the left like the meta RM at inference (default 4096)."
    )
    max_steps: int | None = Field(
        None, ge=1, description="Train for exactly this many optimizer steps (overrides --epochs, as in transformers)."
    )
    eval_split: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of items held out; loss, accuracy and ROC-AUC reported before and after."
    )
    seed: int = Field(0, description="Seed of the split, the order and the new head.")
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda:0', ...")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Weights dtype.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay (default 0).")
    log_every: int = Field(10, ge=1, description="Log the loss every N steps.")

    @classmethod
    def build(cls, **values: Any) -> MetaTrainSettings:
        """The settings, with a pydantic validation error turned into :class:`~grm_reward.errors.ConfigError`."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(exc)) from exc


@dataclass
class MetaTrainReport:
    """What training did: steps, losses, and held-out metrics before and after."""

    base_model: str
    output_dir: str
    train_rows: int
    eval_rows: int
    train_positive_share: float
    steps: int
    epochs_run: float
    train_loss: float | None  # mean loss over the batches of the last (possibly partial) epoch
    losses: list[tuple[int, float]] = field(default_factory=list)
    eval_before: dict[str, float | None] | None = None
    eval_after: dict[str, float | None] | None = None
    mismatched_texts: int = 0
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_meta_rows(path: str | Path) -> tuple[list[MetaExample], list[LoadIssue]]:
    """The rows of a ``spct meta-data`` file; malformed rows become issues (file and line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"meta-RM data file {path} does not exist")
    examples: list[MetaExample] = []
    issues: list[LoadIssue] = []
    for number, row in jsonl_rows(path):
        if isinstance(row, LoadIssue):
            issues.append(row)
            continue
        try:
            examples.append(_example(row, f"{path.name}:{number}"))
        except InputError as exc:
            issues.append(LoadIssue(str(path), f"line {number}", str(exc)))
    return examples, issues


def _example(row: Mapping[str, Any], default_id: str) -> MetaExample:
    label = row.get("label")
    if isinstance(label, bool) or label not in (0, 1):
        raise InputError(f"'label' must be 0 or 1, got {label!r}")
    text = row.get("text")
    messages = row.get("messages")
    if messages is not None:
        if (
            not isinstance(messages, list)
            or len(messages) != 2
            or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
        ):
            raise InputError("'messages' must be the meta RM's [user, assistant] conversation")
        messages = tuple(dict(m) for m in messages)
    elif not isinstance(text, str) or not text:
        raise InputError("a row needs 'text' (or 'messages')")
    return MetaExample(str(row.get("id", default_id)), int(label), text if isinstance(text, str) else "", messages)


def split_examples(
    examples: Sequence[MetaExample], eval_split: float, seed: int
) -> tuple[list[MetaExample], list[MetaExample]]:
    """(train, held out): whole items (ids) go to one side, so no judged item leaks into the held-out set.

    >>> rows = [MetaExample(str(i // 2), i % 2, "t") for i in range(20)]
    >>> train, held = split_examples(rows, 0.2, 0)
    >>> len(train), len(held), {e.id for e in train} & {e.id for e in held}
    (16, 4, set())
    """
    if eval_split <= 0:
        return list(examples), []
    ids = sorted({e.id for e in examples})
    random.Random(f"grm-reward-meta-split|{seed}").shuffle(ids)
    held_ids = set(ids[: max(1, round(len(ids) * eval_split))]) if len(ids) > 1 else set()
    return [e for e in examples if e.id not in held_ids], [e for e in examples if e.id in held_ids]


def _imports() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise BackendUnavailableError(
            "training a meta RM needs torch and transformers: pip install 'grm-reward[transformers]'"
        ) from exc
    return torch, transformers


def train_meta_rm(
    examples: Sequence[MetaExample],
    settings: MetaTrainSettings,
    *,
    log: Callable[[str], None] = print,
) -> MetaTrainReport:
    """Train and save a one-logit meta RM on ``examples``; returns (and writes) the report."""
    torch, transformers = _imports()
    from grm_reward.meta_rm import meta_text

    if not examples:
        raise InputError("no training rows")
    started = time.perf_counter()
    base = settings.base_model
    if base is None:
        from grm_reward.embedded import embedded_model_path

        base = str(embedded_model_path())
    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)

    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    tokenizer.truncation_side = "left"  # as TransformersMetaRM: the critique and scores are at the end
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=1, dtype=getattr(torch, settings.dtype)
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot load {base!r} as a one-logit sequence classifier: {exc}") from exc
    if getattr(model.config, "num_labels", 1) != 1:
        raise ConfigError(f"{base!r} has {model.config.num_labels} labels; the meta RM needs one logit")
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device)

    train, held = split_examples(examples, settings.eval_split, settings.seed)
    if not train:
        raise InputError("the held-out split left no training rows")
    mismatched = 0

    def render(example: MetaExample) -> str:
        nonlocal mismatched
        if example.messages is None:
            return example.text
        text = meta_text(example.messages, tokenizer)
        mismatched += bool(example.text) and text != example.text
        return text

    train_texts = [render(e) for e in train]
    held_texts = [render(e) for e in held]
    if mismatched:
        log(
            f"note: {mismatched} rows' 'text' differs from their 'messages' rendered with {base}'s tokenizer; "
            "training uses the latter, as the meta RM will see it"
        )

    def encode(texts: Sequence[str]) -> Any:
        return tokenizer(
            list(texts), return_tensors="pt", padding=True, truncation=True, max_length=settings.max_length,
            add_special_tokens=False,
        ).to(device)

    loss_fn = torch.nn.BCEWithLogitsLoss()

    def evaluate() -> dict[str, float | None]:
        model.eval()
        logits: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(held_texts), settings.batch_size):
                out = model(**encode(held_texts[start : start + settings.batch_size])).logits[:, 0].float().cpu()
                logits.extend(float(v) for v in out)
        labels = [e.label for e in held]
        target = torch.tensor(labels, dtype=torch.float32)
        loss = float(loss_fn(torch.tensor(logits), target)) if logits else None
        accuracy = sum((v > 0) == (y == 1) for v, y in zip(logits, labels)) / len(labels) if labels else None
        model.train()
        return {"loss": loss, "accuracy": accuracy, "roc_auc": roc_auc(logits, labels), "rows": float(len(labels))}

    report = MetaTrainReport(
        base_model=base,
        output_dir=str(settings.output_dir),
        train_rows=len(train),
        eval_rows=len(held),
        train_positive_share=sum(e.label for e in train) / len(train),
        steps=0,
        epochs_run=0.0,
        train_loss=None,
        mismatched_texts=mismatched,
        settings=settings.model_dump(mode="json"),
    )
    if held:
        report.eval_before = evaluate()
        log(f"held-out before training: {_metrics(report.eval_before)}")

    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    micro_per_epoch = math.ceil(len(train) / settings.batch_size)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / settings.grad_accum))
    # As in transformers' Trainer, max_steps (when given) overrides epochs.
    total_steps = settings.max_steps if settings.max_steps is not None else math.ceil(settings.epochs * steps_per_epoch)
    log(
        f"training {base} -> {settings.output_dir}: {len(train)} rows ({100 * report.train_positive_share:.1f}% "
        f"positive), {total_steps} steps of {settings.batch_size}x{settings.grad_accum} rows, lr {settings.lr:g}, "
        f"device {device}"
    )
    model.train()
    rng = random.Random(f"grm-reward-meta-train|{settings.seed}")
    step, micro, window = 0, 0, []
    epoch_losses: list[float] = []
    while step < total_steps:
        indices = list(range(len(train)))
        rng.shuffle(indices)
        epoch_losses = []
        for start in range(0, len(indices), settings.batch_size):
            batch = indices[start : start + settings.batch_size]
            inputs = encode([train_texts[i] for i in batch])
            target = torch.tensor([float(train[i].label) for i in batch], device=device)
            logits = model(**inputs).logits[:, 0].float()
            loss = loss_fn(logits, target)
            (loss / settings.grad_accum).backward()
            window.append(float(loss.detach()))
            epoch_losses.append(float(loss.detach()))
            micro += 1
            last_micro = start + settings.batch_size >= len(indices)
            if micro % settings.grad_accum and not last_micro:
                continue
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            mean = sum(window) / len(window)
            window = []
            report.losses.append((step, mean))
            if step % settings.log_every == 0 or step == total_steps or step == 1:
                log(f"step {step}/{total_steps}  loss {mean:.4f}")
            if step >= total_steps:
                break
    report.steps = step
    report.epochs_run = round(step / steps_per_epoch, 3)
    report.train_loss = sum(epoch_losses) / len(epoch_losses) if epoch_losses else None
    if held:
        report.eval_after = evaluate()
        log(f"held-out after training: {_metrics(report.eval_after)}")

    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    report.seconds = round(time.perf_counter() - started, 2)
    (out / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    log(f"saved the meta RM to {out} (load it with GRMConfig(meta_rm={str(out)!r})); report in {REPORT_FILE}")
    return report


def _metrics(metrics: dict[str, float | None]) -> str:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    return (
        f"loss {fmt(metrics['loss'])}, accuracy {fmt(metrics['accuracy'])}, ROC-AUC {fmt(metrics['roc_auc'])} "
        f"on {int(metrics['rows'] or 0)} rows"
    )
