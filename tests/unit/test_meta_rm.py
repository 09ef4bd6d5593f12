"""Meta RM guided voting: ratings on samples, top-k_meta vote, inputs, engines' seams."""

from __future__ import annotations

import asyncio
import json

import pytest

from grm_reward import ConfigError, GenerativeRewardModel, GRMConfig, Request
from grm_reward.backends import ScriptedBackend
from grm_reward.backends.scripted import JudgeCall
from grm_reward.meta_rm import HTTPMetaRM, ScriptedMetaRM, create_meta_rm, meta_conversation, meta_text
from tests.helpers import judge_text

GOOD = {"right": 9, "wrong": 2}


def judge(call: JudgeCall) -> str:
    """Half the samples judge well ("careful"), half get it backwards ("sloppy"); one in four is unreadable."""
    kind = call.seed % 4
    if kind == 0:
        return "sloppy and unreadable"
    if kind == 1:
        return judge_text([11 - GOOD[r] for r in call.responses], analysis="sloppy")
    return judge_text([GOOD[r] for r in call.responses], analysis="careful")


def rating(text: str) -> float:
    return 2.0 if "careful" in text else -15.8


def test_top_k_meta_samples_vote() -> None:
    meta = ScriptedMetaRM(rating)
    rm = GenerativeRewardModel(backend=ScriptedBackend(judge), meta_rm=meta, k=16, k_meta=4)
    result = rm.score("q", ["right", "wrong"])
    valid = [s for s in result.samples if s.valid]
    assert all(s.meta_score is not None for s in valid)
    assert all(s.meta_score is None for s in result.samples if not s.valid)
    careful = [s for s in valid if s.meta_score == 2.0]
    assert len(careful) >= 4, "the seeds should give enough careful samples"
    assert result.num_voted == 4
    assert result.votes == [36.0, 8.0]  # only careful samples voted
    assert meta.calls == [len(valid)]  # one call, readable samples only
    # Without the meta RM the sloppy samples drag the vote.
    plain = GenerativeRewardModel(backend=ScriptedBackend(judge), k=16).score("q", ["right", "wrong"])
    assert plain.num_voted == len(valid) and plain.votes != result.votes


def test_k_meta_defaults_to_half_of_k() -> None:
    rm = GenerativeRewardModel(backend=ScriptedBackend(judge), meta_rm=ScriptedMetaRM(rating), k=8)
    result = rm.score("q", ["right", "wrong"])
    assert result.num_voted == min(4, sum(s.valid for s in result.samples))
    assert GRMConfig(k=8).effective_k_meta == 4 and GRMConfig(k=1).effective_k_meta == 1


def test_k_meta_cannot_exceed_k() -> None:
    with pytest.raises(ConfigError, match="cannot exceed"):
        GRMConfig.build(k=2, k_meta=3, meta_rm="x")


def test_meta_input_shows_responses_in_the_samples_order() -> None:
    rm = GenerativeRewardModel(backend=ScriptedBackend(judge), k=4)
    request = Request("Which is right?", ["right", "wrong"])
    result = rm.score(request.prompt, list(request.responses))
    sample = next(s for s in result.samples if s.order == [1, 0])
    user, answer = meta_conversation(request, sample)
    assert user["content"] == (
        "Please score the responses.\n#### Conversation Context ####\nWhich is right?\n"
        "#### Responses to be Scored ####\n[The Begin of Response 1]\nwrong\n[The End of Response 1]\n"
        "[The Begin of Response 2]\nright\n[The End of Response 2]\n"
    )
    assert answer == {"role": "assistant", "content": sample.text}
    assert meta_text((user, answer)).startswith("Prompt: Please score the responses.")
    assert meta_text((user, answer)).endswith("\nResponse: " + sample.text)


def test_http_meta_rm_speaks_the_classify_protocol() -> None:
    from grm_reward._http import HTTPRequest, HTTPResponse

    seen = []

    def handler(request: HTTPRequest) -> HTTPResponse:
        body = json.loads(request.content)
        seen.append((request.headers.get("authorization"), body))
        data = [{"index": i, "probs": [0.1 * (i + 1)]} for i in reversed(range(len(body["input"])))]
        return HTTPResponse.of(200, json_body={"data": data})

    meta = HTTPMetaRM("http://judge/classify", model="m", api_key="s3cret", transport=handler)
    conversation = ({"role": "user", "content": "u"}, {"role": "assistant", "content": "a"})
    ratings = asyncio.run(meta.rate([conversation, conversation]))
    assert ratings == pytest.approx([0.1, 0.2])  # matched by index, not position
    assert seen[0][0] == "Bearer s3cret" and seen[0][1]["model"] == "m" and len(seen[0][1]["input"]) == 2

    def broken(request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse.of(500, text="boom")

    from grm_reward import GenerationError
    from grm_reward._http import HTTPPolicy

    calls = []
    meta = HTTPMetaRM(
        "http://judge/classify",
        transport=lambda r: calls.append(r) or broken(r),
        policy=HTTPPolicy(max_retries=2, backoff_base_s=0.001),
    )
    with pytest.raises(GenerationError, match="classify answered HTTP 500 after 3 attempts"):
        asyncio.run(meta.rate([conversation]))
    assert len(calls) == 3  # retried like any other judge call


def test_factory_picks_the_engine() -> None:
    assert isinstance(create_meta_rm(GRMConfig(meta_rm="http://host:8000/classify")), HTTPMetaRM)
    with pytest.raises(ConfigError):
        create_meta_rm(GRMConfig())
