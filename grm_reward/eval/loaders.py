"""Readers for each benchmark's files, all producing :class:`~grm_reward.eval.items.EvalItem`.

Every reader takes a path (a file, or the benchmark's folder) and returns a :class:`Loaded`:
the items, the rows it could not use (:class:`LoadIssue`, naming the file and the line or
JSON entry, with the reason), and notes on rows left out on purpose. A malformed row never
stops a run; a missing or unreadable file raises :class:`~grm_reward.errors.DataError`.

Formats (see ``docs/evaluation.md`` for the full description):

- RewardBench v1 rows ``{id, subset, prompt, chosen, rejected}`` (JSONL);
- RMB best-of-N ``{bon_uid, category_path, conversation_input, bon_best, loser_list}`` and
  pairwise ``{pair_uid, category_path, conversation_input, chosen, reject}`` (JSONL, gzipped or not);
- RM-Bench ``{id, prompt, subset, chosen[3], rejected[3]}`` (JSON list per domain file);
- LLMBar ``{input, output_1, output_2, label}`` (JSON list per set);
- XSTest: ``xstest_prompts.csv`` plus ``xstest_v2_completions_<model>.csv``;
- ReaLMistake ``{input, llm_response, error_label}`` in ``<task>/<model>.jsonl``, read from its
  password-protected zip through a temporary folder that is deleted afterwards;
- generic pairwise ``{prompt, chosen, rejected}`` and best-of-N ``{prompt, responses, best}`` JSONL;
- HH-RLHF ``{chosen, rejected}`` full ``Human:``/``Assistant:`` transcripts sharing their prefix
  (not an evaluation benchmark here; the SPCT data builders read it).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from grm_reward.errors import DataError, InputError
from grm_reward.eval.items import STYLE_LEVELS, EvalItem
from grm_reward.jsonl import LoadIssue, jsonl_rows, not_object
from grm_reward.types import Message

__all__ = [
    "REWARDBENCH_EXAMPLE_COUNTS",
    "REWARDBENCH_SECTIONS",
    "Loaded",
    "load_bon",
    "load_hh_rlhf",
    "load_llmbar",
    "load_pairwise",
    "load_realmistake",
    "load_rewardbench",
    "load_rmb",
    "load_rmbench",
    "load_xstest",
]


@dataclass
class Loaded:
    """What a reader produced: the items, the unusable rows, and notes on rows left out on purpose."""

    items: list[EvalItem] = field(default_factory=list)
    issues: list[LoadIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def extend(self, other: Loaded) -> None:
        self.items.extend(other.items)
        self.issues.extend(other.issues)
        self.notes.extend(other.notes)


class _RowError(Exception):
    """A row is malformed (caught per row and turned into a LoadIssue)."""


# --- RewardBench's section rules (allenai/reward-bench, rewardbench/constants.py) ---------------

#: Subsets of each RewardBench v1 section; any other subset is a prior set, left out of the score.
REWARDBENCH_SECTIONS: Mapping[str, tuple[str, ...]] = {
    "Chat": ("alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"),
    "Chat Hard": (
        "mt-bench-hard",
        "llmbar-natural",
        "llmbar-adver-neighbor",
        "llmbar-adver-GPTInst",
        "llmbar-adver-GPTOut",
        "llmbar-adver-manual",
    ),
    "Safety": ("refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond", "donotanswer"),
    "Reasoning": ("math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"),
}

#: Weights of the subsets inside a section (the full set's sizes; math-prm has 447 rows but is
#: weighted 984 so that math counts as much as the six code subsets together).
REWARDBENCH_EXAMPLE_COUNTS: Mapping[str, int] = {
    "alpacaeval-easy": 100,
    "alpacaeval-length": 95,
    "alpacaeval-hard": 95,
    "mt-bench-easy": 28,
    "mt-bench-med": 40,
    "mt-bench-hard": 37,
    "math-prm": 984,
    "refusals-dangerous": 100,
    "refusals-offensive": 100,
    "llmbar-natural": 100,
    "llmbar-adver-neighbor": 134,
    "llmbar-adver-GPTInst": 92,
    "llmbar-adver-GPTOut": 47,
    "llmbar-adver-manual": 46,
    "xstest-should-refuse": 154,
    "xstest-should-respond": 250,
    "donotanswer": 136,
    "hep-cpp": 164,
    "hep-go": 164,
    "hep-java": 164,
    "hep-js": 164,
    "hep-python": 164,
    "hep-rust": 164,
}

_REWARDBENCH_SECTION_OF = {subset: section for section, subsets in REWARDBENCH_SECTIONS.items() for subset in subsets}
PRIOR_SETS_SECTION = "Prior Sets"

#: The password the ReaLMistake authors publish with their zip (it keeps the examples out of
#: plain-text crawls; it is not a secret). The plain text must never be committed anywhere.
REALMISTAKE_PASSWORD = b"open-realmistake"


# --- readers ----------------------------------------------------------------------------------


def load_rewardbench(path: Path) -> Loaded:
    """RewardBench v1 rows; sections from RewardBench's subset mapping (other subsets: prior sets)."""

    def build(row: Mapping[str, Any], where: str) -> EvalItem:
        subset = _text(row, "subset")
        return _pair_row(row, where, subset, _REWARDBENCH_SECTION_OF.get(subset, PRIOR_SETS_SECTION))

    return _from_rows(_files(path, (".jsonl", ".jsonl.gz")), build)


def load_rmb(path: Path) -> Loaded:
    """RMB best-of-N and/or pairwise rows (a folder holding both files, or one file)."""

    def build(row: Mapping[str, Any], where: str) -> EvalItem:
        if "bon_uid" in row:
            kind, uid, best, others = "BoN", row["bon_uid"], row.get("bon_best"), row.get("loser_list")
            if not isinstance(others, list) or not others:
                raise _RowError("'loser_list' must be a non-empty list")
        elif "pair_uid" in row:
            kind, uid, best, others = "Pair", row["pair_uid"], row.get("chosen"), [row.get("reject")]
        else:
            raise _RowError("neither 'bon_uid' (best-of-N row) nor 'pair_uid' (pairwise row)")
        category = _text(row, "category_path")
        parts = category.split("/")
        goal = next((p for p in parts if p in ("Helpfulness", "Harmlessness")), None)
        if goal is None:
            raise _RowError(f"category_path {category!r} names neither Helpfulness nor Harmlessness")
        answers = [_answer(best, "bon_best" if kind == "BoN" else "chosen")]
        answers += [_answer(o, "loser_list" if kind == "BoN" else "reject") for o in others]
        return _chosen_rejected_item(
            uid=f"{kind.lower()}:{uid}",
            prompt=_messages(row, "conversation_input"),
            chosen=answers[0],
            rejected=answers[1:],
            subset=f"{kind}/" + "/".join(parts[1:]),
            section=f"{goal[:4]}-{kind}",
        )

    return _from_rows(_files(path, (".jsonl", ".jsonl.gz"), prefer=("rmb_bon", "rmb_pairwise")), build)


_RMBENCH_DOMAINS = {"chat": "Chat", "code": "Code", "math": "Math", "safety-refuse": "Safety", "safety-response": "Safety"}


def load_rmbench(path: Path) -> Loaded:
    """RM-Bench domain files ``rmbench_<domain>.json``: 3 chosen x 3 rejected style variants."""
    loaded = Loaded()
    for file in _files(path, (".json",)):
        domain = file.name.removesuffix(".json").removeprefix("rmbench_")
        section = _RMBENCH_DOMAINS.get(domain, domain.title())

        def build(row: Mapping[str, Any], where: str, domain: str = domain, section: str = section) -> EvalItem:
            chosen, rejected = row.get("chosen"), row.get("rejected")
            k = len(STYLE_LEVELS)
            for key, value in (("chosen", chosen), ("rejected", rejected)):
                if not isinstance(value, list) or len(value) != k or not all(isinstance(v, str) for v in value):
                    raise _RowError(f"{key!r} must be a list of {k} strings (concise, detailed, markdown)")
            return EvalItem(
                uid=f"{domain}:{row.get('id', where)}",
                prompt=_prompt(row, "prompt"),
                responses=(*chosen, *rejected),  # type: ignore[misc]
                task="style",
                subset=str(row.get("subset") or domain),
                section=section,
            )

        loaded.extend(_from_rows([file], build))
    return loaded


def load_llmbar(path: Path) -> Loaded:
    """LLMBar sets ``{input, output_1, output_2, label}``; ``label`` (1 or 2) names the better output."""
    loaded = Loaded()
    for file in _files(path, (".json",)):
        subset = file.name.removesuffix(".json")
        section = subset.split("_")[0] if subset.startswith(("Adversarial_", "Processed_")) else subset

        def build(row: Mapping[str, Any], where: str, subset: str = subset, section: str = section) -> EvalItem:
            label = row.get("label")
            if label not in (1, 2):
                raise _RowError(f"'label' must be 1 or 2, got {label!r}")
            return EvalItem(
                uid=f"{subset}:{where.split()[-1]}",
                prompt=_prompt(row, "input"),
                responses=(_text(row, "output_1"), _text(row, "output_2")),
                task="best",
                good=frozenset({label - 1}),
                subset=subset,
                section=section,
            )

        loaded.extend(_from_rows([file], build))
    return loaded


_XSTEST_COMPLY = "1_full_compliance"
_XSTEST_LABELS = {"1_full_compliance", "2_full_refusal", "3_partial_refusal"}


def load_xstest(path: Path) -> Loaded:
    """XSTest as multi-response items: each prompt with the completions of every model.

    The desired behaviour is to comply with safe prompts and refuse unsafe (``contrast_*``)
    ones: on a safe prompt a full compliance is acceptable, on an unsafe one a full or
    partial refusal is. A prompt whose completions all behave alike ranks nothing and is
    left out (counted in the notes).
    """
    folder = _folder(path)
    prompts_file = folder / "xstest_prompts.csv"
    safe_by_id: dict[str, bool] = {}
    loaded = Loaded()
    if prompts_file.is_file():
        for line, row in _csv_rows(prompts_file):
            if row.get("label") in ("safe", "unsafe") and row.get("id"):
                safe_by_id[row["id"]] = row["label"] == "safe"
            else:
                loaded.issues.append(LoadIssue(str(prompts_file), f"line {line}", "needs 'id' and a 'label' of safe/unsafe"))
    completion_files = sorted(folder.glob("xstest_v2_completions_*.csv"))
    if not completion_files:
        raise DataError(f"{folder}: no xstest_v2_completions_<model>.csv files")
    groups: dict[str, dict[str, Any]] = {}
    for file in completion_files:
        model = file.name.removeprefix("xstest_v2_completions_").removesuffix(".csv")
        for line, row in _csv_rows(file):
            prompt_id, label, completion = row.get("id") or "", row.get("final_label"), row.get("completion")
            problem = None
            if not prompt_id or not (row.get("prompt") or "").strip() or not row.get("type"):
                problem = "needs 'id', 'prompt' and 'type'"
            elif label not in _XSTEST_LABELS:
                problem = f"'final_label' must be one of {sorted(_XSTEST_LABELS)}, got {label!r}"
            elif not (completion or "").strip():
                problem = "empty 'completion'"
            if problem:
                loaded.issues.append(LoadIssue(str(file), f"line {line}", problem))
                continue
            group = groups.setdefault(prompt_id, {"prompt": row["prompt"], "type": row["type"], "responses": []})
            group["responses"].append((model, completion, label))
    uninformative = 0
    for prompt_id, group in groups.items():
        number = prompt_id.removeprefix("v2-")
        safe = safe_by_id.get(number, not group["type"].startswith("contrast_"))
        responses = [c for _, c, _ in group["responses"]]
        good = frozenset(
            i for i, (_, _, label) in enumerate(group["responses"]) if (label == _XSTEST_COMPLY) == safe
        )
        if not good or len(good) == len(responses):
            uninformative += 1
            continue
        loaded.items.append(
            EvalItem(
                uid=f"xstest:{number}",
                prompt=group["prompt"],
                responses=tuple(responses),
                task="best",
                good=good,
                subset=group["type"],
                section="should-respond" if safe else "should-refuse",
            )
        )
    if uninformative:
        loaded.notes.append(
            f"{uninformative} of {len(groups)} XSTest prompts left out: all their completions behave alike"
        )
    return loaded


def load_realmistake(path: Path) -> Loaded:
    """ReaLMistake single responses with a binary error label (1 = ``no_error``).

    ``path`` is the authors' password-protected zip (extracted to a temporary folder that is
    deleted as soon as the rows are read) or a folder already holding ``<task>/<model>.jsonl``.
    """
    if path.is_dir():
        return _read_realmistake_folder(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    with tempfile.TemporaryDirectory(prefix="grm-realmistake-") as tmp:
        _extract_zip(path, Path(tmp), REALMISTAKE_PASSWORD)
        loaded = _read_realmistake_folder(Path(tmp))
    # Name the zip, not the deleted temporary folder, in the issues.
    loaded.issues = [LoadIssue(f"{path}:{Path(i.source).relative_to(tmp)}", i.where, i.message) for i in loaded.issues]
    return loaded


def _read_realmistake_folder(folder: Path) -> Loaded:
    files = sorted(p for p in folder.rglob("*.jsonl") if p.parent != folder and p.name != "example.jsonl")
    if not files:
        raise DataError(f"{folder}: no <task>/<model>.jsonl files")
    loaded = Loaded()
    for file in files:
        task, model = file.parent.name, file.name.removesuffix(".jsonl")

        def build(row: Mapping[str, Any], where: str, task: str = task, model: str = model) -> EvalItem:
            label = row.get("error_label")
            if label not in ("error", "no_error"):
                raise _RowError(f"'error_label' must be 'error' or 'no_error', got {label!r}")
            return EvalItem(
                uid=f"{task}/{model}:{where.split()[-1]}",
                prompt=_prompt(row, "input"),
                responses=(_text(row, "llm_response"),),
                task="label",
                label=1 if label == "no_error" else 0,
                subset=f"{task}/{model}",
                section=task,
            )

        loaded.extend(_from_rows([file], build))
    return loaded


def load_pairwise(path: Path) -> Loaded:
    """Generic pairwise JSONL: ``{prompt, chosen, rejected}`` plus optional ``id``, ``subset``, ``section``."""

    def build(row: Mapping[str, Any], where: str) -> EvalItem:
        return _pair_row(row, where, *_groups(row, path))

    return _from_rows(_files(path, (".jsonl", ".jsonl.gz")), build)


def load_bon(path: Path) -> Loaded:
    """Generic best-of-N JSONL: ``{prompt, responses, best}``; ``best`` is an index or a list of indices."""

    def build(row: Mapping[str, Any], where: str) -> EvalItem:
        responses = row.get("responses")
        if not isinstance(responses, list) or len(responses) < 2 or not all(isinstance(r, str) for r in responses):
            raise _RowError("'responses' must be a list of at least 2 strings")
        best = row.get("best")
        given: list[Any] = best if isinstance(best, list) else [best]
        indices = [i for i in given if isinstance(i, int) and not isinstance(i, bool)]
        if not given or len(indices) != len(given):
            raise _RowError(f"'best' must be an index or a list of indices, got {best!r}")
        if not all(0 <= i < len(responses) for i in indices):
            raise _RowError(f"'best' {best!r} is out of range for {len(responses)} responses")
        subset, section = _groups(row, path)
        return EvalItem(
            uid=str(row.get("id", where)),
            prompt=_prompt(row, "prompt"),
            responses=tuple(responses),
            task="best",
            good=frozenset(indices),
            subset=subset,
            section=section,
        )

    return _from_rows(_files(path, (".jsonl", ".jsonl.gz")), build)


_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")


def load_hh_rlhf(path: Path) -> Loaded:
    """HH-RLHF pairs: ``{chosen, rejected}``, each a whole transcript ending in an Assistant turn.

    The shared turns become the prompt (chat messages), the two last Assistant turns the
    responses (the chosen one first); a pair whose transcripts differ before their last turn is
    an issue.
    """

    def build(row: Mapping[str, Any], where: str) -> EvalItem:
        chosen_turns = _hh_turns(_text(row, "chosen"), "chosen")
        rejected_turns = _hh_turns(_text(row, "rejected"), "rejected")
        if chosen_turns[:-1] != rejected_turns[:-1]:
            raise _RowError("'chosen' and 'rejected' differ before their last Assistant turn")
        prompt = tuple({"role": role, "content": text} for role, text in chosen_turns[:-1])
        subset, section = _groups(row, path)
        return _chosen_rejected_item(
            uid=str(row.get("id", where)),
            prompt=prompt,
            chosen=chosen_turns[-1][1],
            rejected=[rejected_turns[-1][1]],
            subset=subset,
            section=section,
        )

    return _from_rows(_files(path, (".jsonl", ".jsonl.gz")), build)


def _hh_turns(transcript: str, key: str) -> list[tuple[str, str]]:
    """``[(role, text), ...]`` of a ``\\n\\nHuman: ... \\n\\nAssistant: ...`` transcript."""
    parts = _HH_TURN.split(transcript)
    if parts[0].strip() or len(parts) < 5:
        raise _RowError(f"{key!r} is not a Human/Assistant transcript with a query and an answer")
    turns = [("user" if role == "Human" else "assistant", text.strip()) for role, text in zip(parts[1::2], parts[2::2])]
    if turns[-1][0] != "assistant" or turns[-2][0] != "user":
        raise _RowError(f"{key!r} must end with a Human turn followed by an Assistant turn")
    return turns


# --- row plumbing -----------------------------------------------------------------------------

RowBuilder = Callable[[Mapping[str, Any], str], EvalItem]


def _from_rows(files: Sequence[Path], build: RowBuilder) -> Loaded:
    """Build items from every row of every file; bad rows become issues, duplicate uids get a suffix."""
    loaded = Loaded()
    seen: dict[str, int] = {}
    for file in files:
        for where, row in _rows(file):
            if isinstance(row, LoadIssue):
                loaded.issues.append(row)
                continue
            try:
                item = build(row, where)
            except (_RowError, InputError) as exc:
                loaded.issues.append(LoadIssue(str(file), where, str(exc)))
                continue
            count = seen.get(item.uid, 0)
            seen[item.uid] = count + 1
            if count:
                item = _with_uid(item, f"{item.uid}#{count + 1}")
            loaded.items.append(item)
    return loaded


def _rows(file: Path) -> Iterator[tuple[str, Mapping[str, Any] | LoadIssue]]:
    """(where, row) for each JSON object of a JSONL (optionally gzipped) or JSON-list file."""
    if not file.name.lower().endswith(".json"):
        for number, row in jsonl_rows(file):
            yield f"line {number}", row
        return
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {file}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
    if not isinstance(data, list):
        raise DataError(f"{file}: expected a JSON list of rows, got {type(data).__name__}")
    for index, row in enumerate(data):
        where = f"entry {index}"
        yield where, row if isinstance(row, dict) else not_object(file, where, row)


def _csv_rows(file: Path) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        with open(file, encoding="utf-8", newline="") as stream:
            reader = csv.DictReader(stream)
            if reader.fieldnames is None:  # reads the header
                raise DataError(f"{file}: empty CSV file")
            start = reader.line_num + 1
            for row in reader:  # a quoted field may span lines: report the row's first line
                yield start, row
                start = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {file}: {exc}") from exc


def _files(path: Path, suffixes: tuple[str, ...], prefer: tuple[str, ...] = ()) -> list[Path]:
    """The data files at ``path``: the file itself, or the matching files of a folder (sorted)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path} does not exist")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))
    if prefer:
        files = [p for p in files if p.name.startswith(prefer)] or files
    if not files:
        raise DataError(f"{path}: no {' or '.join(suffixes)} files")
    return files


def _folder(path: Path) -> Path:
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    raise DataError(f"{path} does not exist")


def _extract_zip(archive: Path, target: Path, password: bytes) -> None:
    """Extract a (possibly ZipCrypto/AES-protected) zip; falls back to ``unzip`` for AES."""
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(target, pwd=password)
        return
    except NotImplementedError:
        pass  # AES encryption: Python's zipfile cannot decrypt it
    except (zipfile.BadZipFile, RuntimeError, OSError) as exc:
        raise DataError(f"cannot extract {archive}: {exc}") from exc
    unzip = shutil.which("unzip")
    if unzip is None:
        raise DataError(f"{archive} uses an encryption Python cannot read and `unzip` is not installed")
    done = subprocess.run(
        [unzip, "-q", "-o", "-P", password.decode(), str(archive), "-d", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise DataError(f"cannot extract {archive}: {done.stderr.strip() or done.returncode}")


def _text(row: Mapping[str, Any], key: str) -> str:
    if key not in row:
        raise _RowError(f"missing key {key!r}")
    value = row[key]
    if not isinstance(value, str):
        raise _RowError(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _prompt(row: Mapping[str, Any], key: str) -> str | tuple[Message, ...]:
    """A prompt given as a string or as chat messages."""
    if key not in row:
        raise _RowError(f"missing key {key!r}")
    if isinstance(row[key], list):
        return _messages(row, key)
    return _text(row, key)


def _messages(row: Mapping[str, Any], key: str) -> tuple[Message, ...]:
    value = row.get(key)
    if not isinstance(value, list) or not value:
        raise _RowError(f"{key!r} must be a non-empty list of chat messages")
    messages = []
    for j, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
            raise _RowError(f"{key!r} message {j} needs 'role' and 'content'")
        messages.append({"role": message["role"], "content": message["content"]})
    return tuple(messages)


def _answer(value: Any, key: str) -> str:
    if isinstance(value, dict) and isinstance(value.get("answer"), str):
        return str(value["answer"])
    raise _RowError(f"{key!r} entries must be objects with a string 'answer'")


def _groups(row: Mapping[str, Any], path: Path) -> tuple[str, str]:
    default = path.name.split(".")[0] if path.is_file() else "all"
    subset = row.get("subset", default)
    section = row.get("section", subset)
    if not isinstance(subset, str) or not isinstance(section, str):
        raise _RowError("'subset' and 'section' must be strings")
    return subset, section


def _pair_row(row: Mapping[str, Any], where: str, subset: str, section: str) -> EvalItem:
    """A ``{id?, prompt, chosen, rejected}`` row (RewardBench's and the generic pairwise format)."""
    return _chosen_rejected_item(
        uid=str(row.get("id", where)),
        prompt=_prompt(row, "prompt"),
        chosen=_text(row, "chosen"),
        rejected=[_text(row, "rejected")],
        subset=subset,
        section=section,
    )


def _chosen_rejected_item(
    *, uid: str, prompt: str | tuple[Message, ...], chosen: str, rejected: Sequence[str], subset: str, section: str
) -> EvalItem:
    return EvalItem(
        uid=uid,
        prompt=prompt,
        responses=(chosen, *rejected),
        task="best",
        good=frozenset({0}),
        subset=subset,
        section=section,
    )


def _with_uid(item: EvalItem, uid: str) -> EvalItem:
    return replace(item, uid=uid)
