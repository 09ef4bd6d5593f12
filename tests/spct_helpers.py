"""Scripted judges for the SPCT tests (and `--backend tests.spct_helpers:...` factories for the CLI)."""

from __future__ import annotations

import re

from grm_reward.backends.scripted import JudgeCall, ScriptedBackend
from tests.helpers import judge_text

_HINT = re.compile(r"The best response is: Response (\d+)\s*$")


def quality(response: str) -> int:
    """Hidden quality: 9 for a response containing GOOD, 2 for BAD, else 5."""
    return 9 if "GOOD" in response else 2 if "BAD" in response else 5


def quality_judge(call: JudgeCall) -> str:
    """Always right (when the data mark the best response GOOD)."""
    return judge_text([quality(r) for r in call.responses])


def first_or_hint_judge(call: JudgeCall) -> str:
    """Follows a hint when there is one; otherwise prefers whatever is shown first (right only by luck).

    Writes nothing readable when the prompt says UNREADABLE.
    """
    if "UNREADABLE" in call.prompt:
        return "Both responses are fine."
    n = len(call.responses)
    hint = _HINT.search(call.prompt)
    top = int(hint.group(1)) - 1 if hint else 0
    return judge_text([9 if p == top else 3 for p in range(n)], analysis="hinted" if hint else "first is best")


def quality_backend(config: object) -> ScriptedBackend:
    return ScriptedBackend(quality_judge)


def first_or_hint_backend(config: object) -> ScriptedBackend:
    return ScriptedBackend(first_or_hint_judge)


def exploding_judge(call: JudgeCall) -> str:
    """Fails (as an engine would after its retries) on prompts containing EXPLODE; else always right."""
    if "EXPLODE" in call.prompt:
        from grm_reward.errors import GenerationError

        raise GenerationError("the engine gave up on this prompt")
    return quality_judge(call)


def exploding_backend(config: object) -> ScriptedBackend:
    return ScriptedBackend(exploding_judge)
