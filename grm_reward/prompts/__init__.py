"""Judge prompt templates: versioned text files with named placeholders.

Templates hold ``\\boxed{x, x}``-style text whose braces would break ``str.format``, and user
text must never be interpreted, so :func:`fill` makes one pass over the *template* and replaces
only known ``{{name}}`` placeholders; values are inserted verbatim and never scanned again.

Built-in templates (``templates/*.txt``, App. G of the DeepSeek-GRM paper):

- ``default``: the paper's pointwise template for 1..n responses (scores 1-10), verbatim.
- ``single``: the same for one response, with the single-response output line.
- ``single_binary``: the paper's "training on rating single response" template (scores 0/1).
- ``rubric``: user-supplied principles replace the ones the judge would write.

Any template gets an optional reference-answer section (``{{reference_section}}``). The meta RM's
input (``meta_rm.txt``) is rendered by :func:`render_meta_prompt`; the shared principles' prompt
(``principles.txt``, the query alone) by :func:`render_principles_prompt`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from grm_reward.errors import TemplateError
from grm_reward.types import Message, Request, message_text

__all__ = [
    "PROMPT_VERSION",
    "JudgeTemplate",
    "fill",
    "format_conversation",
    "format_principles",
    "get_template",
    "principles_template_text",
    "render_judge_prompt",
    "render_meta_prompt",
    "render_principles_prompt",
    "select_template",
]

#: Bumped whenever the text of a built-in template changes.
PROMPT_VERSION = "1"

_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")

#: Placeholders a template may use; filled by :func:`render_judge_prompt`.
KNOWN_PLACEHOLDERS = frozenset(
    {
        "context",
        "responses",
        "reference_section",
        "principles",
        "score_min",
        "score_max",
        "num_responses",
        "responses_noun",
        "scores_instruction",
    }
)


@dataclass(frozen=True)
class JudgeTemplate:
    """A judge prompt template.

    ``score_range`` is the range its text promises (None: it uses ``{{score_min}}``/``{{score_max}}``
    and works with any range); ``numbered`` says whether responses are labelled "Response i".
    """

    name: str
    text: str
    score_range: tuple[int, int] | None
    numbered: bool
    single_only: bool = False

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(_PLACEHOLDER.findall(self.text))

    @property
    def takes_principles(self) -> bool:
        return "principles" in self.placeholders

    @property
    def takes_reference(self) -> bool:
        return "reference_section" in self.placeholders


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace each ``{{name}}`` in ``template`` by ``values[name]``, in one pass.

    >>> fill("Q: {{context}} -> \\\\boxed{x}", {"context": "{{context}} is {not} code"})
    'Q: {{context}} is {not} code -> \\\\boxed{x}'
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise TemplateError(f"no value for placeholder {{{{{name}}}}}")
        return values[name]

    return _PLACEHOLDER.sub(substitute, template)


def _read_builtin(filename: str) -> str:
    return resources.files("grm_reward.prompts").joinpath("templates", filename).read_text(encoding="utf-8")


_BUILTIN = {
    "default": ("default.txt", (1, 10), True, False),
    "single": ("single.txt", (1, 10), False, True),
    "single_binary": ("single_binary.txt", (0, 1), False, True),
    "rubric": ("rubric.txt", None, True, False),
}


@cache
def get_template(name_or_path: str) -> JudgeTemplate:
    """A built-in template by name, or a user template from a ``.txt`` path."""
    if name_or_path in _BUILTIN:
        filename, score_range, numbered, single_only = _BUILTIN[name_or_path]
        return JudgeTemplate(name_or_path, _read_builtin(filename), score_range, numbered, single_only)
    path = Path(name_or_path)
    if not path.is_file():
        raise TemplateError(
            f"unknown template {name_or_path!r}: use one of {sorted(_BUILTIN)} or a path to a text file"
        )
    text = path.read_text(encoding="utf-8")
    template = JudgeTemplate(str(path), text, None, True)
    unknown = template.placeholders - KNOWN_PLACEHOLDERS
    if unknown:
        raise TemplateError(
            f"template {path} uses unknown placeholders {sorted(unknown)}; known: {sorted(KNOWN_PLACEHOLDERS)}"
        )
    missing = {"context", "responses"} - template.placeholders
    if missing:
        raise TemplateError(f"template {path} lacks required placeholders {sorted(missing)}")
    return template


def select_template(setting: str, *, num_responses: int, has_principles: bool) -> JudgeTemplate:
    """Resolve ``GRMConfig.template`` for one request ('auto' picks by the request's shape)."""
    if setting == "auto":
        if has_principles:
            name = "rubric"
        elif num_responses == 1:
            name = "single"
        else:
            name = "default"
        return get_template(name)
    template = get_template(setting)
    if template.single_only and num_responses != 1:
        raise TemplateError(f"template {template.name!r} scores one response; this request has {num_responses}")
    return template


def format_conversation(prompt: str | Sequence[Message]) -> str:
    """The conversation context shown to the judge.

    A string, or a single user message, is shown as is; a longer conversation is shown turn by
    turn with role labels, so the judge sees that the last User turn is the query.
    """
    if isinstance(prompt, str):
        return prompt
    messages = list(prompt)
    if len(messages) == 1 and messages[0]["role"] == "user":
        return message_text(messages[0])
    turns = []
    for message in messages:
        role = str(message["role"]).strip().capitalize() or "User"
        turns.append(f"{role}: {message_text(message)}")
    return "\n\n".join(turns)


def format_principles(principles: str | Sequence[str]) -> str:
    """User principles as a numbered list (a single string is shown as written)."""
    if isinstance(principles, str):
        return principles.strip()
    items = [p.strip() for p in principles if p.strip()]
    return "\n".join(f"{i}. {p}" for i, p in enumerate(items, start=1))


def _scores_instruction(num_responses: int) -> str:
    if num_responses == 1:
        return "the overall comprehensive score of the response, e.g., \\boxed{x}"
    example = ", ".join(["x"] * num_responses)
    return (
        "the overall comprehensive score of all responses in order, separate by comma in the boxed, "
        f"e.g., \\boxed{{{example}}} for {num_responses} responses"
    )


def render_judge_prompt(
    request: Request,
    order: Sequence[int],
    template: JudgeTemplate,
    score_range: tuple[int, int],
    *,
    injection_notice: bool = False,
) -> str:
    """The judge's user message for ``request`` with its responses shown in ``order``.

    ``order[p]`` is the original index of the response shown at position ``p`` (1-based label p+1).
    ``injection_notice`` adds, after the responses, the note telling the judge that text in them
    addressed to it is part of the response (``templates/injection_notice.txt``).
    """
    if template.score_range is not None and template.score_range != score_range:
        raise TemplateError(
            f"template {template.name!r} asks for scores in {template.score_range}, "
            f"but score_range is {score_range}"
        )
    if request.principles is not None and not template.takes_principles:
        raise TemplateError(
            f"template {template.name!r} has no {{{{principles}}}} placeholder, so the given principles would be "
            "dropped; use template 'auto' or 'rubric'"
        )
    if request.reference is not None and not template.takes_reference:
        raise TemplateError(
            f"template {template.name!r} has no {{{{reference_section}}}} placeholder, so the reference would be dropped"
        )
    if template.takes_principles and request.principles is None:
        raise TemplateError(f"template {template.name!r} needs principles; this request has none")

    n = len(order)
    values = {
        "context": format_conversation(request.prompt),
        "responses": _render_responses(request, order, numbered=template.numbered)
        + (_read_block("injection_notice.txt") if injection_notice else ""),
        "reference_section": (
            fill(_read_block("reference_section.txt"), {"reference": request.reference})
            if request.reference is not None
            else ""
        ),
        "principles": format_principles(request.principles) if request.principles is not None else "",
        "score_min": str(score_range[0]),
        "score_max": str(score_range[1]),
        "num_responses": str(n),
        "responses_noun": "a response" if n == 1 else "multiple responses",
        "scores_instruction": _scores_instruction(n),
    }
    return fill(template.text, values)


def render_meta_prompt(request: Request, order: Sequence[int]) -> str:
    """The meta RM's prompt (paper App. G): the query and the responses in the order a sample saw them.

    The sample's own text (principles and critique) is the answer that follows it.
    """
    values = {
        "context": format_conversation(request.prompt),
        "responses": _render_responses(request, order, numbered=True),
    }
    return fill(_read_block("meta_rm.txt"), values)


def render_principles_prompt(prompt: str | Sequence[Message]) -> str:
    """The judge's prompt for writing the principles of a query alone (``templates/principles.txt``),
    shared by every response to it when ``GRMConfig.principles.shared`` is on."""
    return fill(principles_template_text(), {"context": format_conversation(prompt)})


def principles_template_text() -> str:
    """The text of the shared-principles template (its identity in the principle cache's key)."""
    return _read_block("principles.txt")


def _render_responses(request: Request, order: Sequence[int], *, numbered: bool) -> str:
    block = _read_block("response_numbered.txt" if numbered else "response_single.txt")
    return "".join(
        fill(block, {"index": str(position + 1), "response": request.responses[original]})
        for position, original in enumerate(order)
    )


@cache
def _read_block(filename: str) -> str:
    return _read_builtin(filename)
