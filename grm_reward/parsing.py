"""Judge text -> principles, critique and scores. Tolerant of real output; never raises on it.

Which score block counts:

1. If the text has a ``Scores:`` label (``**Scores:**``, ``Final Scores:``, ``Score:`` ...), the
   first block after the *last* such label: ``\\boxed{8, 9}``, ``\\\\boxed{..}``, ``$\\boxed{..}$``,
   ``[[8, 9]]``, or, on the label's own line, ``[8, 9]`` or bare ``8, 9``. Nothing before the
   label is ever read, so a ``\\boxed{10}`` quoted in the analysis cannot become the scores.
2. Without a label, the last ``\\boxed{..}`` or ``[[..]]`` block of the text.
3. If the last block opener is never closed, the text was cut off: the sample is invalid
   ("truncated"), even when an earlier block exists.

A block is read by splitting on commas (full-width too), semicolons or whitespace; integral
floats such as ``7.0`` count as integers. A wrong count, a value out of range, a non-integer,
an empty block, empty text: the sample is invalid, ``scores`` is None and ``reason`` says why,
as ``"<code>: <detail>"`` with one of the codes in :data:`REASON_CODES`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from grm_reward.types import Judgement, Principle

__all__ = [
    "BOXED_OPEN",
    "DEFAULT_SCORE_RANGE",
    "DOUBLE_BRACKET_OPEN",
    "LATEX_WRAPPERS",
    "REASON_CODES",
    "SCORE_LABEL",
    "ScoreBlock",
    "find_score_block",
    "parse_judgement",
    "parse_principles",
    "score_section_start",
    "score_values",
]

#: The reason codes an invalid sample can carry (the text before ":" in ``Judgement.reason``).
REASON_CODES = (
    "empty",  # no text at all
    "no_score_block",  # nothing that looks like scores
    "truncated",  # a score block was opened and never closed (generation hit its budget)
    "empty_block",  # \boxed{} with nothing inside
    "not_a_number",  # a part of the block is not a number
    "not_an_integer",  # e.g. 7.5
    "wrong_count",  # not one score per response
    "out_of_range",  # outside score_range
)

#: A ``Scores:`` label (``**Final Scores:**``, ``score\n:``): the block after the last one is the sample's scores.
SCORE_LABEL = re.compile(
    r"(?<![A-Za-z])(?:final\s+|overall\s+)?scores?\s*(?:\*\*|__)?\s*[:：]",
    re.IGNORECASE,
)
#: The opener of a boxed block, ``\boxed{`` or ``\\boxed {``; its content runs to the matching brace.
BOXED_OPEN = re.compile(r"\\{1,2}boxed\s*\{")
#: The scores a sample may give unless the config says otherwise (``GRMConfig.score_range``).
DEFAULT_SCORE_RANGE = (1, 10)
#: LaTeX commands whose argument a score block is read through (``\textbf{8}`` reads as 8).
LATEX_WRAPPERS = ("text", "mathrm", "mathbf", "textbf", "bf")
#: The opener of a double-bracket block, ``[[``; its content runs to the first ``]]``.
DOUBLE_BRACKET_OPEN = re.compile(r"\[\[")
_LATEX_WRAPPER = re.compile(r"\\{1,2}(?:" + "|".join(LATEX_WRAPPERS) + r")\s*\{([^{}]*)\}")
_SEPARATORS = re.compile(r"[,，、;；]")
_INT = re.compile(r"[+-]?\d+(?:\.0*)?")
_FLOAT = re.compile(r"[+-]?\d*\.\d+")
_SECTION = {
    "criteria": re.compile(
        r"(?im)^[\s>#*_-]*(?:specific\s+criteria|principles?|criteria)\s*(?:\*\*|__)?\s*[:：]\s*(?:\*\*|__)?"
    ),
    "analysis": re.compile(r"(?im)^[\s>#*_-]*(?:analysis|critique)\s*(?:\*\*|__)?\s*[:：]\s*(?:\*\*|__)?"),
}
_WEIGHT = re.compile(
    r"\(\s*(?:weight\s*[:=]?\s*)?(\d+(?:\.\d+)?)\s*(%)?\s*\)|weight\s*[:=]\s*(\d+(?:\.\d+)?)\s*(%)?",
    re.IGNORECASE,
)
_ITEM_START = re.compile(r"(?m)^\s*(?:\d+[.)]|[-*•])\s+")
_INLINE_ITEM = re.compile(r"(?:^|\s)(\d+)[.)]\s+")


@dataclass(frozen=True, slots=True)
class ScoreBlock:
    """Where the scores were found: ``content`` spans ``start:end`` of the text (None if truncated)."""

    start: int
    end: int
    content: str | None
    label_start: int | None


def parse_judgement(text: str, num_responses: int, score_range: tuple[int, int] = DEFAULT_SCORE_RANGE) -> Judgement:
    """Parse one judge sample whose responses were shown in their given order.

    >>> j = parse_judgement("Analysis: B is better.\\nScores: \\\\boxed{4, 8}", 2)
    >>> j.scores, j.critique
    ([4, 8], 'B is better.')
    >>> parse_judgement("Scores: \\\\boxed{4, 8, 9}", 2).reason
    'wrong_count: expected 2 scores, found 3'
    """
    if not isinstance(text, str):  # defensive: backends hand us str, but never crash on data
        text = "" if text is None else str(text)
    order = list(range(num_responses))
    spans = _section_spans(text)  # read once: principles and critique both need them
    principles = _principles(text, spans)
    block = find_score_block(text)
    critique = _critique(text, block, spans)
    if not text.strip():
        return Judgement(text=text, scores=None, order=order, reason="empty: the judge returned no text")
    if block is None:
        return Judgement(
            text=text,
            scores=None,
            order=order,
            principles=principles,
            critique=critique,
            reason="no_score_block: no \\boxed{...} or [[...]] score block found",
        )
    if block.content is None:
        return Judgement(
            text=text,
            scores=None,
            order=order,
            principles=principles,
            critique=critique,
            reason="truncated: the score block is never closed",
        )
    scores, reason = read_scores(block.content, num_responses, score_range)
    return Judgement(
        text=text, scores=scores, order=order, principles=principles, critique=critique, reason=reason
    )


def read_scores(content: str, num_responses: int, score_range: tuple[int, int]) -> tuple[list[int] | None, str | None]:
    """Read the integers of a score block's content; (scores, None) or (None, reason)."""
    scores, reason = _read_values(content)
    if scores is None:
        return None, reason
    if len(scores) != num_responses:
        noun = "score" if num_responses == 1 else "scores"
        return None, f"wrong_count: expected {num_responses} {noun}, found {len(scores)}"
    lo, hi = score_range
    for value in scores:
        if not lo <= value <= hi:
            return None, f"out_of_range: {value} is outside [{lo}, {hi}]"
    return scores, None


def score_values(content: str) -> list[int] | None:
    """The whole numbers a score block holding ``content`` reads as, before their count and range are
    checked; None if it reads as none (empty, or a part that is not a whole number).

    >>> score_values("\\\\textbf{8},\\\\,9."), score_values("8.5, 9"), score_values("x")
    ([8, 9], None, None)
    """
    return _read_values(content)[0]


def _read_values(content: str) -> tuple[list[int] | None, str | None]:
    cleaned = _LATEX_WRAPPER.sub(r"\1", content)
    cleaned = cleaned.replace("$", "").replace("\\,", " ").strip().strip(".").strip()
    if not cleaned:
        return None, "empty_block: the score block is empty"
    parts = [p.strip() for p in _SEPARATORS.split(cleaned)]
    if len(parts) == 1 and len(parts[0].split()) > 1:
        parts = parts[0].split()
    values: list[int] = []
    for part in parts:
        part = part.strip("*_` ")
        shown = part if len(part) <= 40 else part[:37] + "..."
        if _INT.fullmatch(part):
            whole = part.split(".")[0]
            if len(whole.lstrip("+-0")) > 18:  # float() overflows past 308 digits, int() refuses past 4,300
                return None, f"out_of_range: {shown!r} is outside any score range"
            values.append(int(whole))
        elif _FLOAT.fullmatch(part):
            return None, f"not_an_integer: {part!r} is not a whole score"
        else:
            return None, f"not_a_number: {shown!r} in the score block"
    return values, None


def find_score_block(text: str) -> ScoreBlock | None:
    """Locate the block that holds the scores (see the module docstring for the rules)."""
    if not isinstance(text, str) or not text:
        return None
    labels = list(SCORE_LABEL.finditer(text))
    if labels:
        label = labels[-1]
        return _block_after_label(text, label.start(), label.end())
    blocks = _all_blocks(text, 0)
    return blocks[-1] if blocks else None


def score_section_start(text: str) -> int | None:
    """Where the scores part of the text begins: the last ``Scores:`` label, else the last block."""
    if not isinstance(text, str) or not text:
        return None
    labels = list(SCORE_LABEL.finditer(text))
    if labels:
        return labels[-1].start()
    blocks = _all_blocks(text, 0)
    return blocks[-1].start if blocks else None


def _block_after_label(text: str, label_start: int, after: int) -> ScoreBlock | None:
    blocks = _all_blocks(text, after)
    if blocks:
        return ScoreBlock(blocks[0].start, blocks[0].end, blocks[0].content, label_start)
    # No boxed/[[..]] block: accept "[8, 9]" or bare "8, 9" on the label's own line.
    line_end = text.find("\n", after)
    line = text[after : len(text) if line_end < 0 else line_end]
    stripped = line.strip().strip("*_`").strip()
    single = re.fullmatch(r"\[([^\[\]]*)\]\.?", stripped)
    if single:
        inner = single.group(1)
        start = after + line.find(inner)
        return ScoreBlock(start, start + len(inner), inner, label_start)
    if re.fullmatch(r"[+-]?\d+(?:\.\d+)?(?:\s*[,，、;；]\s*[+-]?\d+(?:\.\d+)?)*\s*\.?", stripped):
        start = after + line.find(stripped)
        return ScoreBlock(start, start + len(stripped), stripped, label_start)
    return None


def _all_blocks(text: str, pos: int) -> list[ScoreBlock]:
    """Every \\boxed{...} and [[...]] block starting at or after ``pos``, in order."""
    openers: list[tuple[int, int, str]] = []
    for m in BOXED_OPEN.finditer(text, pos):
        openers.append((m.start(), m.end(), "boxed"))
    for m in DOUBLE_BRACKET_OPEN.finditer(text, pos):
        openers.append((m.start(), m.end(), "brackets"))
    openers.sort()
    blocks: list[ScoreBlock] = []
    for start, body_start, kind in openers:
        if blocks and start < blocks[-1].end:
            continue  # nested inside the previous block
        if kind == "boxed":
            close = _matching_brace(text, body_start)
            if close is None:
                blocks.append(ScoreBlock(start, len(text), None, None))
                break
            blocks.append(ScoreBlock(start, close + 1, text[body_start:close], None))
        else:
            close = text.find("]]", body_start)
            if close < 0:
                blocks.append(ScoreBlock(start, len(text), None, None))
                break
            blocks.append(ScoreBlock(start, close + 2, text[body_start:close], None))
    return blocks


def _matching_brace(text: str, body_start: int) -> int | None:
    depth = 1
    for i in range(body_start, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _section_spans(text: str) -> dict[str, tuple[int, int]]:
    """Start of each labelled section's body and the start of its label."""
    spans: dict[str, tuple[int, int]] = {}
    for name, pattern in _SECTION.items():
        m = pattern.search(text)
        if m:
            spans[name] = (m.start(), m.end())
    return spans


def parse_principles(text: str) -> list[Principle]:
    """The judge's principles from its "Specific Criteria:" section, with weights when written."""
    if not isinstance(text, str):
        return []
    return _principles(text, _section_spans(text))


def _principles(text: str, spans: dict[str, tuple[int, int]]) -> list[Principle]:
    if "criteria" not in spans:
        return []
    body_start = spans["criteria"][1]
    ends = [s for name, (s, _) in spans.items() if name != "criteria" and s > body_start]
    label = SCORE_LABEL.search(text, body_start)
    end = min([*ends, len(text) if label is None else label.start()])
    body = text[body_start:end].strip()
    if not body:
        return []
    starts = [m.start() for m in _ITEM_START.finditer(body)]
    inline = list(_INLINE_ITEM.finditer(body))
    if len(starts) >= 2 or (starts and len(inline) < 2):
        items = [body[a:b] for a, b in zip(starts, [*starts[1:], len(body)])]
        if starts[0] > 0 and body[: starts[0]].strip():
            items.insert(0, body[: starts[0]])
    elif len(inline) >= 2:  # "1. Accuracy (4) 2. Brevity (2)" on one line
        cuts = [m.start(1) for m in inline]
        items = [body[a:b] for a, b in zip(cuts, [*cuts[1:], len(body)])]
    else:
        items = [p for p in re.split(r";\s+", body) if p.strip()]
    principles = []
    for item in items:
        weight = None
        wm = _WEIGHT.search(item)
        if wm:
            number = wm.group(1) or wm.group(3)
            percent = wm.group(2) or wm.group(4)
            weight = float(number) / 100.0 if percent else float(number)
            item = item[: wm.start()] + item[wm.end() :]
        cleaned = _ITEM_START.sub("", item, count=1)
        cleaned = re.sub(r"^\s*\d+[.)]\s+", "", cleaned)
        cleaned = cleaned.replace("**", "").strip().strip(":-–").strip()
        cleaned = re.sub(r"\s+", " ", cleaned)
        cleaned = re.sub(r"\s+([:;,.])", r"\1", cleaned)
        if cleaned:
            principles.append(Principle(cleaned, weight))
    return principles


def _critique(text: str, block: ScoreBlock | None, spans: dict[str, tuple[int, int]]) -> str:
    """The analysis: the "Analysis:" section (or the text before the scores) up to the scores."""
    if not text:
        return ""
    end = len(text)
    if block is not None:
        end = block.label_start if block.label_start is not None else block.start
    if "analysis" in spans and spans["analysis"][1] <= end:
        start = spans["analysis"][1]
    elif "criteria" in spans:
        # No analysis label: whatever follows the criteria section's first paragraph.
        start = spans["criteria"][1]
        paragraph_end = text.find("\n\n", start)
        start = paragraph_end if 0 <= paragraph_end < end else start
    else:
        start = 0
    return text[start:end].strip().strip("*_").strip()
