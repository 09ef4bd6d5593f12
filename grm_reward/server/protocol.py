"""Request and response models of the reward server (pydantic; no web framework here).

- ``POST /get_reward`` speaks OpenRLHF's protocol: :class:`GetRewardRequest` in,
  :class:`GetRewardResponse` out (``docs/openrlhf.md``).
- ``POST /v1/rewards`` is the native API: :class:`RewardsRequest` (or a bare list of
  :class:`RewardItem`) in, :class:`RewardsResponse` out, with the judgements.
- Errors come back as :class:`ErrorResponse`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from grm_reward.types import find_lone_surrogate

__all__ = [
    "ChatMessage",
    "ErrorDetail",
    "ErrorResponse",
    "GetRewardRequest",
    "GetRewardResponse",
    "ItemError",
    "PrincipleOut",
    "RewardItem",
    "RewardOut",
    "RewardsRequest",
    "RewardsResponse",
    "SampleOut",
    "UsageOut",
    "find_lone_surrogate",
]


def _check_text(value: str) -> str:
    # JSON allows lone surrogates ("\ud800"), which no encoder downstream accepts.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text is not valid Unicode (lone surrogate at position {exc.start})") from None
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GetRewardRequest(BaseModel):
    """OpenRLHF's body: ``query`` (prompt + response, templated), ``prompts``, ``labels``; equal lengths.

    Unknown keys are ignored (future OpenRLHF versions may add some); ``prompts`` and ``labels``
    may be omitted (then the prompt is found from the chat template's markers).
    """

    model_config = ConfigDict(extra="ignore")

    query: list[str]
    prompts: list[str] | None = None
    labels: list[Any] | None = None

    @field_validator("query", "prompts")
    @classmethod
    def _valid_text(cls, values: list[str] | None) -> list[str] | None:
        for value in values or ():
            _check_text(value)
        return values

    @model_validator(mode="after")
    def _same_lengths(self) -> GetRewardRequest:
        n = len(self.query)
        for name in ("prompts", "labels"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"'{name}' has {len(values)} items but 'query' has {n}: they must match")
        return self


class GetRewardResponse(BaseModel):
    """One number per query in ``rewards`` and ``scores`` (0-1); ``extra_logs`` has the same keys every time."""

    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None


class RewardItem(_Model):
    """One query and the 1..n responses to score together."""

    prompt: str | list[ChatMessage]
    responses: list[str] = Field(min_length=1)
    principles: str | list[str] | None = None
    reference: str | None = None

    @field_validator("responses")
    @classmethod
    def _valid_responses(cls, values: list[str]) -> list[str]:
        for value in values:
            _check_text(value)
        return values

    @field_validator("prompt")
    @classmethod
    def _valid_prompt(cls, value: str | list[ChatMessage]) -> str | list[ChatMessage]:
        if isinstance(value, str):
            _check_text(value)
        return value

    def to_request_dict(self) -> dict[str, Any]:
        prompt = self.prompt if isinstance(self.prompt, str) else [m.model_dump() for m in self.prompt]
        return {"prompt": prompt, "responses": self.responses, "principles": self.principles, "reference": self.reference}


class RewardsRequest(_Model):
    """The native body: ``{"requests": [...]}`` (a bare JSON list of items is accepted too)."""

    requests: list[RewardItem]
    include_samples: StrictBool = Field(True, description="Return every judge sample (text, principles, critique, scores).")


class PrincipleOut(BaseModel):
    text: str
    weight: float | None = None


class SampleOut(BaseModel):
    text: str
    valid: bool
    scores: list[int] | None
    reason: str | None
    forced: bool
    order: list[int]
    principles: list[PrincipleOut]
    critique: str
    token_scores: list[float] | None = None
    seed: int | None = None
    completion_tokens: int = 0
    finish_reason: str | None = None


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class RewardOut(BaseModel):
    rewards: list[float | None]
    votes: list[float]
    best: int | None
    tie: bool
    num_valid: int
    num_forced: int
    num_voted: int
    samples_drawn: int = Field(description="Judge samples drawn: k, or fewer under adaptive k.")
    usage: UsageOut
    samples: list[SampleOut] | None = None
    cached: bool = False  # answered from the result cache (GRMConfig.reuse): usage is zero


class ErrorDetail(BaseModel):
    type: str
    message: str


class ItemError(BaseModel):
    """A request of the batch that could not be scored (the others were)."""

    error: ErrorDetail


class RewardsResponse(BaseModel):
    results: list[RewardOut | ItemError]


class ErrorResponse(BaseModel):
    error: ErrorDetail
    status: int
    object: Literal["error"] = "error"
