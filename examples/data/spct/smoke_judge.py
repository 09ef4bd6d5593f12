"""A scripted judge for building the recipes' smoke data (``--backend smoke_judge:backend``).

It writes the paper's output format. It follows a hint ("The best response is: Response i")
when there is one; otherwise it rates the response shown first highest (right only when the
best happens to be shown first), and rates a single response 8. So plain samples are sometimes
right and sometimes wrong, as rejective sampling needs. Not a judge: a deterministic stand-in.
"""

from __future__ import annotations

import re

from grm_reward.backends.scripted import JudgeCall, ScriptedBackend

_HINT = re.compile(r"The best response is: Response (\d+)\s*$")


def judge(call: JudgeCall) -> str:
    n = len(call.responses)
    hint = _HINT.search(call.prompt)
    top = int(hint.group(1)) - 1 if hint else 0
    scores = [8] if n == 1 else [9 if p == top else 4 for p in range(n)]
    return (
        "Specific Criteria: Factual accuracy (weight 60%), directness (weight 40%).\n"
        f"Analysis: Response {top + 1} is the most accurate and direct.\n"
        f"Scores: \\boxed{{{', '.join(map(str, scores))}}}"
    )


def backend(config: object) -> ScriptedBackend:
    return ScriptedBackend(judge)
