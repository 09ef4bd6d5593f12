"""`GRMConfig`: the one source of truth for every knob.

Each field is documented once, beside the field; the CLI derives its flags and help text from
these descriptions, and YAML/JSON config files map onto the same names. Rules that span
fields (k > 1 needs temperature > 0, a binary template needs the 0-1 range, ...) are checked
when the config is built, so a bad setting fails at start-up, not in the middle of a run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from grm_reward.errors import ConfigError

__all__ = [
    "BATCHING_DEFAULTS",
    "AdaptiveOptions",
    "BatchingOptions",
    "DefenceOptions",
    "GRMConfig",
    "MetaRMOptions",
    "OpenAIOptions",
    "PrincipleOptions",
    "RayOptions",
    "ReuseOptions",
    "ServerOptions",
    "TransformersOptions",
    "VLLMOptions",
    "load_config_file",
]

#: Temperature the paper uses for inference-time scaling (App. D.1); greedy for k=1.
PAPER_VOTING_TEMPERATURE = 0.5


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransformersOptions(_Section):
    """Settings of the local `transformers` backend."""

    device: str = Field(
        "auto",
        description=(
            "Torch device for the judge: 'auto' (cuda if available, spread over all GPUs when there are several; "
            "else cpu), 'cpu', 'cuda:0', ..."
        ),
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype: 'auto' is bfloat16 on GPU and float32 on CPU."
    )
    batch_size: int = Field(
        16, ge=1, description="Most sequences decoded together in one batch (the k samples of a prompt count k)."
    )
    max_context: int | None = Field(
        None, ge=16, description="Context window of the judge in tokens; default: read from the model config."
    )
    share_prefixes: bool = Field(
        True,
        description=(
            "Prefill the token prefix that the judge prompts of a batch share (instructions, query) once and copy "
            "its KV cache to every shown order, then prefill each order's own tail; same tokens as without. On by "
            "default: the plan is chosen by its cost (padding and cache width counted), and four listwise GRPO "
            "groups in one call prefill 0.46x the tokens in 0.39-0.55x the time on CPU (docs/backends.md)."
        ),
    )


class OpenAIOptions(_Section):
    """Settings of the `openai` backend: any OpenAI-compatible server (see docs/backends.md)."""

    base_url: str = Field(
        "http://127.0.0.1:8000/v1",
        description="Server root including /v1 (vllm serve, SGLang, verl's reward router, a hosted API).",
    )
    api_key: str | None = Field(None, description="API key; default: read from the variable named by api_key_env.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    mode: Literal["chat", "completions"] = Field(
        "chat",
        description=(
            "'chat' sends messages to /chat/completions; 'completions' renders the judge's chat template "
            "locally (see tokenizer) and sends the text to /completions."
        ),
    )
    server: Literal["auto", "vllm", "vllm-legacy", "sglang", "generic"] = Field(
        "auto",
        description=(
            "Server flavour, which decides the extension parameters sent for the format guarantee: 'vllm' "
            "(structured_outputs, vLLM >= 0.10.2), 'vllm-legacy' (guided_regex, older vLLM), 'sglang' (regex), "
            "'generic' (no extensions: forced prefix through /completions). 'auto' asks GET /models who owns "
            "the model (and GET /version for vLLM's version), and only when a score-filling feature is on."
        ),
    )
    tokenizer: str | None = Field(
        None,
        description=(
            "Hugging Face id or folder whose chat template renders prompts for /completions (completions mode, "
            "and the forced prefix on generic servers); default: `model`."
        ),
    )
    use_n: bool = Field(
        True,
        description=(
            "Ask for the k samples of a prompt in one request (OpenAI `n`). The client counts the choices it "
            "gets and fans out distinct-seed requests for the rest, and stops sending `n` to a server that "
            "ignores or refuses it."
        ),
    )
    logprobs: bool | None = Field(
        None,
        description=(
            "Whether the server returns top_logprobs (needed for token-probability scores). None: yes for "
            "vllm/sglang, no for generic servers (transformers serve and llama.cpp's `n`-less peers ignore it)."
        ),
    )
    top_logprobs: int = Field(
        20, ge=1, le=100, description="Alternatives asked per token when reading score probabilities (vLLM allows 20)."
    )
    timeout_s: float = Field(
        300.0,
        gt=0,
        description=(
            "Longest one HTTP request (connect, queue, generate) may take, in seconds: the cap; the "
            "latency-derived timeout and the caller's deadline shorten it."
        ),
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="Timeout for opening a connection, in seconds.")
    max_retries: int = Field(4, ge=0, description="Retries on 429, 5xx and connection errors (exponential backoff).")
    backoff_base_s: float = Field(
        0.5, ge=0, description="First retry delay; it doubles per retry, with jitter, up to backoff_max_s."
    )
    backoff_max_s: float = Field(
        30.0, ge=0, description="Longest delay between retries (a server's Retry-After header is honoured up to timeout_s)."
    )
    max_concurrency: int = Field(
        64,
        ge=1,
        description=(
            "Most HTTP requests in flight at once, hedges not counted (hedge_budget bounds them; the connection pool "
            "is twice this with hedging on, so a hedge never waits for a slot its stuck call holds)."
        ),
    )
    retry_budget: float = Field(
        0.2,
        ge=0.0,
        le=10.0,
        description=(
            "Retries to one server in the last 10 s may be at most this share of its calls in that window (plus "
            "retry_budget_floor), so a failing judge is not hit with retries of retries. Shared by every client of "
            "that URL (judge, meta RM, reward-server forwarder)."
        ),
    )
    retry_budget_floor: int = Field(
        10, ge=0, description="Retries allowed per 10 s whatever the traffic (a quiet client can still retry)."
    )
    breaker_failures: int = Field(
        5,
        ge=1,
        description=(
            "Consecutive failed calls (5xx, 429, timeouts, resets, malformed answers) after which the circuit "
            "opens: calls to that server fail fast with JudgeUnavailableError, or, under a deadline that outlasts "
            "the wait (the server's request_timeout_s), wait for the next probe."
        ),
    )
    breaker_cooldown_s: float = Field(
        0.5,
        gt=0,
        description="While the circuit is open, one probe call goes through after this long; it doubles per failed probe.",
    )
    breaker_cooldown_max_s: float = Field(
        1.0,
        gt=0,
        description="Longest wait between probes of an open circuit: a recovered judge is noticed within about this.",
    )
    n_reprobe_s: float = Field(
        60.0,
        ge=0,
        description=(
            "After a server ignored or refused `n`, fan out for this long, then ask with `n` again (servers get "
            "upgraded, a short answer may have been a glitch). Fan-out draws the same samples, so rewards do not change."
        ),
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra JSON fields merged into every request, e.g. {\"top_k\": 20} (CLI: a JSON object).",
    )
    hedge: bool = Field(
        True,
        description=(
            "Hedged calls: a call still running after hedge_factor x the hedge_percentile of this server's recent "
            "latencies (at least hedge_min_delay_s) gets ONE duplicate with the same body (same seed: the same sample "
            "on a server that honours seeds); the first answer wins, the other is cancelled. Cuts the tail a stuck "
            "call puts on an RL step (docs/backends.md)."
        ),
    )
    hedge_percentile: float = Field(
        95.0, gt=0.0, le=100.0, description="Latency percentile (of the last 512 successful calls) a hedge waits for."
    )
    hedge_factor: float = Field(
        2.0,
        ge=1.0,
        description=(
            "Multiplier on hedge_percentile: p95 x 2 is passed by few calls of a healthy judge, and by a stuck one "
            "soon (1.5 hedged ~2x more calls on a loaded client in benchmarks/bench_tail_latency.py)."
        ),
    )
    hedge_min_delay_s: float = Field(
        0.1, ge=0.0, description="Floor of the hedge delay: jitter of a very fast judge never triggers hedges."
    )
    hedge_tail_factor: float = Field(
        1.25,
        ge=0.0,
        description=(
            "Tail hedge: once every call to the server still out was overtaken (a call sent after it was answered: "
            "the batch waits on stragglers only), a call running longer than this x the median latency (at least "
            "10 ms) is hedged then, not at p95 x hedge_factor. The judge has nothing else of ours to do, and the "
            "median is not lifted by slow first calls as p95 is. Each tail hedge its original beats (a long "
            "generation, repeated at the same length by its same-seed duplicate) doubles this delay, up to 16x; a "
            "winning one resets it. Within hedge_budget; 0 turns it off."
        ),
    )
    hedge_budget: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description=(
            "Hedges to one server in the last 10 s may be at most this share of its calls (plus one), so a slow "
            "judge is never stampeded with duplicates. Not taken while the circuit is open."
        ),
    )
    latency_min_samples: int = Field(
        20, ge=1, description="Successful calls per server observed before hedging and latency-derived timeouts start."
    )
    latency_timeout_factor: float = Field(
        10.0,
        ge=0.0,
        description=(
            "Latency-derived timeout: once latencies are known, one call (attempt) times out after "
            "max(latency_timeout_floor_s, this x p99 latency) instead of timeout_s (which stays the cap); the "
            "caller's deadline cuts it further. 0 turns it off."
        ),
    )
    latency_timeout_floor_s: float = Field(
        30.0, gt=0.0, description="Shortest latency-derived timeout: a long generation is never cut by a fast history."
    )


class VLLMOptions(_Section):
    """Settings of the in-process `vllm` backend (GPU; see docs/backends.md for what was run)."""

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs the judge is sharded over.")
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0, description="Share of GPU memory vLLM may use.")
    max_model_len: int | None = Field(None, ge=16, description="Context length; default: the model's.")
    dtype: str = Field("auto", description="Weights dtype passed to vLLM ('auto', 'bfloat16', ...).")
    enable_prefix_caching: bool = Field(True, description="Share prompt prefixes between samples and requests.")
    max_num_seqs: int | None = Field(None, ge=1, description="Most sequences the engine runs at once; default: vLLM's.")
    top_logprobs: int = Field(
        20, ge=1, le=100, description="Alternatives read per token for token-probability scores (engine max_logprobs)."
    )
    trust_remote_code: bool = Field(False, description="Allow model repositories to run their own code.")
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="Extra vllm AsyncEngineArgs fields (CLI: a JSON object); they win over the above."
    )


#: Keys that moved out of a section: ``section.old`` -> the key to use now (a clear error, not "extra field").
MOVED_KEYS = {
    "server.batch_window_s": "batching.window_s",
    "server.max_batch_requests": "batching.max_batch_requests",
    "server.max_concurrent_batches": "batching.max_concurrent_batches",
    "server.group_by_prompt": "batching.group_by_prompt",
    "server.max_group_size": "batching.max_group_size",
    "server.failure_reward": "failure_reward",
}

#: The defaults of the batching settings left unset (None), per entry point; docs/server.md ("Batching") says why.
BATCHING_DEFAULTS: dict[str, dict[str, Any]] = {
    "server": {"window_s": 0.01, "group_by_prompt": False, "max_group_size": 8},  # also OpenRLHF's file form
    "trl": {"window_s": 0.0, "group_by_prompt": True, "max_group_size": 4},
    "verl": {"window_s": 0.05, "group_by_prompt": True, "max_group_size": 4},
}

BatchingEntry = Literal["server", "trl", "verl"]


def _refuse_moved(values: Any, section: str) -> Any:
    if isinstance(values, dict):
        for key in values:
            new = MOVED_KEYS.get(f"{section}.{key}")
            if new is not None:
                raise ValueError(f"{section}.{key} is now {new} (one setting for every entry point; docs/configuration.md)")
    return values


class BatchingOptions(_Section):
    """Batching and listwise grouping for every entry point (server, OpenRLHF, TRL, verl); unset: its default.

    A setting left unset (None) takes the entry point's default (:data:`BATCHING_DEFAULTS`); docs/server.md,
    "Batching", says why they differ."""

    window_s: float | None = Field(
        None,
        ge=0.0,
        le=10.0,
        description=(
            "How long concurrent requests are collected into one backend batch; default: 0.01 (server, OpenRLHF), "
            "0.05 (verl); TRL scores a whole step at once."
        ),
    )
    max_batch_requests: int = Field(64, ge=1, description="Most requests in one backend batch.")
    max_concurrent_batches: int = Field(4, ge=1, description="Backend batches in flight at once (back-pressure beyond).")
    group_by_prompt: bool | None = Field(
        None,
        description=(
            "Judge single responses to the same prompt (and reference, principles) together, listwise, in groups of "
            "at most max_group_size; default: off for the server (and OpenRLHF), on for TRL and verl."
        ),
    )
    max_group_size: int | None = Field(
        None, ge=1, description="Most responses in one listwise judge prompt; default: 8 for the server, 4 for TRL and verl."
    )
    group_size: int | None = Field(
        None,
        ge=1,
        description=(
            "Responses per prompt in one RL step (GRPO's group: verl's rollout.n, OpenRLHF's n_samples_per_prompt): "
            "with group_by_prompt, a prompt's group is judged as soon as its last response arrives, without waiting "
            "for window_s; default: verl reads rollout.n, otherwise none (groups wait for the window)."
        ),
    )

    def resolved(self, entry: BatchingEntry) -> BatchingOptions:
        """These settings with the unset ones filled in with ``entry``'s defaults."""
        unset = {key: value for key, value in BATCHING_DEFAULTS[entry].items() if getattr(self, key) is None}
        return self.model_copy(update=unset) if unset else self


class ServerOptions(_Section):
    """Settings of `grm-reward serve` (the reward server; see docs/server.md)."""

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, values: Any) -> Any:
        return _refuse_moved(values, "server")

    host: str = Field("127.0.0.1", description="Address to bind; use 0.0.0.0 only behind a firewall or with api_key.")
    port: int = Field(5000, ge=0, le=65535, description="Port to listen on (0: any free port).")
    api_key: str | None = Field(
        None,
        description=(
            "Bearer token clients of this server must send (Authorization: Bearer KEY, or ?token=KEY in the URL "
            "for clients that send no headers, like OpenRLHF); default: $GRM_REWARD_SERVER_API_KEY, else no auth."
        ),
    )
    label_as_reference: bool = Field(
        True,
        description=(
            "/get_reward: use a string label as the reference answer; an object label may carry "
            "'reference' and 'principles'."
        ),
    )
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond).")
    max_queries: int = Field(4096, ge=1, description="Most queries (or requests) in one HTTP request body (422 beyond).")
    max_messages: int = Field(
        4096,
        ge=1,
        description=(
            "Most chat messages in one request's prompt (422 beyond). Checked with max_queries on the decoded "
            "JSON before anything else: every message costs CPU however short it is."
        ),
    )
    request_timeout_s: float = Field(
        170.0, gt=0, description="Longest time one HTTP request may take, queueing included (504 beyond; OpenRLHF waits 180 s)."
    )
    shutdown_timeout_s: int = Field(
        30,
        ge=0,
        description=(
            "On SIGTERM/Ctrl-C, how long requests in flight may still finish; then queued ones are answered with "
            "an error (OpenRLHF retries them) and the server exits."
        ),
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="Server log level.")
    access_log: bool = Field(False, description="Log every HTTP request (noisy: OpenRLHF sends one per rollout sample).")
    max_prompt_chars: int = Field(
        262_144,
        ge=1,
        description=(
            "Most characters in one prompt (the conversation as the judge reads it, role labels included; also a "
            "reference or the principles, numbered); a longer one gets "
            "a 422 naming this limit. /get_reward's query may hold max_prompt_chars + max_response_chars."
        ),
    )
    max_response_chars: int = Field(
        262_144, ge=1, description="Most characters in one response to score (422 naming this limit beyond)."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description=(
            "Close a connection whose request line and headers are not complete this long after it opened (or after "
            "its previous answer): half-sent requests cannot pile up and exhaust file descriptors."
        ),
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description=(
            "Longest time a request body may take to arrive once its headers have (408 beyond, and the connection "
            "is closed): a body sent slowly, or cut off and left open, cannot hold a connection for request_timeout_s."
        ),
    )
    keep_alive_s: int = Field(
        5, ge=1, description="Close a kept-alive connection that sends no new request for this many seconds (uvicorn)."
    )
    max_connections: int | None = Field(
        4096,
        ge=1,
        description=(
            "Most open connections and requests in progress at once; beyond, new requests get a 503 at once "
            "(uvicorn's limit_concurrency; keep `ulimit -n` above it). None: no limit."
        ),
    )
    backlog: int = Field(2048, ge=1, description="Connections the OS queues before the server accepts them.")
    ready_timeout_s: float = Field(
        5.0, gt=0, description="Longest time GET /ready waits for the judge's readiness probe (503 beyond)."
    )


class MetaRMOptions(_Section):
    """Settings of the meta reward model that rates judge samples (`meta_rm`)."""

    backend: Literal["auto", "transformers", "vllm", "http"] = Field(
        "auto", description="'auto': http for an http(s) URL, else transformers."
    )
    device: str = Field("auto", description="Torch device of a transformers meta RM ('auto': cuda if available).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype of a transformers meta RM ('auto': bfloat16 on GPU, float32 on CPU)."
    )
    batch_size: int = Field(8, ge=1, description="Samples rated together in one forward pass.")
    max_length: int = Field(4096, ge=16, description="Longest meta RM input in tokens; longer ones keep their end.")
    api_key_env: str = Field("META_RM_API_KEY", description="Environment variable with a bearer token for http.")
    timeout_s: float = Field(
        120.0,
        gt=0,
        description=(
            "Timeout of one http request, in seconds; retries, retry budget and circuit breaker follow the openai "
            "section's settings (docs/backends.md)."
        ),
    )


class RayOptions(_Section):
    """Settings of the Ray Serve fleet (`grm-reward serve --ray`; see docs/scaling.md)."""

    enabled: bool = Field(
        False, description="Serve through Ray Serve: one HTTP ingress in front of judge replicas (one engine each)."
    )
    address: str | None = Field(
        None,
        description=(
            "Ray cluster to join ('auto': the cluster on this machine, or ray://HOST:PORT); default: start a "
            "local one."
        ),
    )
    replicas: int = Field(1, ge=1, description="Judge replicas (engines) when autoscaling is off.")
    min_replicas: int | None = Field(
        None, ge=0, description="Autoscaling lower bound; set it (with max_replicas) to let Ray Serve scale the judges."
    )
    max_replicas: int | None = Field(None, ge=1, description="Autoscaling upper bound of judge replicas.")
    target_ongoing_requests: float = Field(
        32.0, gt=0, description="Autoscaling target: requests in flight per judge replica."
    )
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved per judge replica (vLLM: tensor_parallel_size).")
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per judge replica.")
    max_ongoing_requests: int = Field(
        256, ge=1, description="Requests a judge replica accepts at once (its micro-batcher queues them)."
    )
    ingress_replicas: int = Field(1, ge=1, description="HTTP ingress replicas (they share the prompt-to-judge map).")
    ingress_num_cpus: float = Field(0.5, ge=0, description="CPUs reserved per ingress replica.")
    retries: int = Field(
        3, ge=0, description="Times a request is resent to another judge replica when its replica dies mid-request."
    )
    app_name: str = Field("grm-reward", description="Ray Serve application name.")

    @model_validator(mode="after")
    def _check_bounds(self) -> RayOptions:
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("ray.min_replicas and ray.max_replicas go together (both set enables autoscaling)")
        if self.min_replicas is not None and self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(f"ray.min_replicas={self.min_replicas} exceeds ray.max_replicas={self.max_replicas}")
        return self


class DefenceOptions(_Section):
    """Reward-hacking defences on the responses the judge is shown (docs/reward-hacking.md)."""

    neutralise: bool = Field(
        True,
        description=(
            "Rewrite verdict look-alikes (what the parser would read as scores: a Scores: label before "
            "scores, [[n]], a box of several valid scores) and the template's delimiters in responses so "
            "neither the parser nor a copying judge reads them; a single \\boxed{x} passes unchanged."
        ),
    )
    flag_injections: bool = Field(
        True, description="Count instruction-like injections addressed to the judge (the text is not changed)."
    )
    injection_notice: bool = Field(
        False,
        description=(
            "When a shown response carries a flagged injection or a neutralised verdict, add a note in the "
            "template's voice telling the judge to treat such text as part of the response being judged."
        ),
    )


class PrincipleOptions(_Section):
    """Shared principles: query-only principles written once per prompt and reused (docs/scoring.md)."""

    shared: bool = Field(
        False,
        description=(
            "Write the principles of a prompt once (one greedy judge call on the principles template, reading "
            "the query only) and judge every response to it against them (the rubric template), for all k "
            "samples, all completions of a group and later calls repeating the prompt. Off = the paper: each "
            "sample writes its own principles, a diversity its voting uses. Requests with given principles "
            "keep them."
        ),
    )
    cache_size: int = Field(
        4096, ge=1, description="Prompts whose shared principles are kept (least recently used dropped beyond)."
    )


class ReuseOptions(_Section):
    """Judge each distinct thing once: deduplication and the result cache (docs/scoring.md)."""

    dedup: bool = Field(
        False,
        description=(
            "Judge identical responses of one request once (the request without its duplicates, rewards mapped "
            "back) and identical requests of one batch once; duplicates get the same reward."
        ),
    )
    result_cache: int = Field(
        0,
        ge=0,
        description=(
            "Results kept for repeated requests (same prompt, responses, principles, reference, config): a repeat "
            "is answered from the cache, marked cached, with zero usage. 0 = off."
        ),
    )


class AdaptiveOptions(_Section):
    """Adaptive k: `k` is the most samples; they are drawn in rounds until more could not change the
    use of the reward (docs/scoring.md, "Adaptive k"). Off by default: the paper's fixed k."""

    enabled: bool = Field(
        False,
        description=(
            "Draw the k samples in rounds (min_k, then round_k more) and stop a request once its reward is "
            "settled for `target`; the samples drawn are a prefix of the fixed-k samples. Needs normalize "
            "'unit' or 'mean' (votes actually cast are averaged)."
        ),
    )
    target: Literal["values", "best"] = Field(
        "values",
        description=(
            "What the reward is used for: 'values' (GRPO: stop when every normalised reward is within `tolerance` "
            "of its fixed-k value) or 'best' (evaluation, best-of-N, pairwise: stop when the leader can no longer "
            "be overtaken by the fixed-k vote)."
        ),
    )
    min_k: int = Field(4, ge=1, description="Samples of the first round (at most k).")
    round_k: int = Field(4, ge=1, description="Samples added per later round.")
    tolerance: float = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="target 'values': how far (on the unit reward scale) a reward may still move at fixed k.",
    )
    error: float = Field(
        0.05,
        gt=0.0,
        lt=0.5,
        description=(
            "Error level of the stopping test, per look: the chance, under the normal model of the scores, that "
            "the fixed-k reward would leave the tolerance ('values') or crown another leader ('best')."
        ),
    )
    prior_sd: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description=(
            "Spread assumed for one sample's score before data, as a share of the score range; it counts as one "
            "pseudo-sample, so a few identical samples do not look certain."
        ),
    )


#: Sections that decide how requests are served (HTTP, batching, the fleet, caches), never what a judge
#: samples for a request or what its reward is: left out of the result cache's and the eval store's keys.
SERVING_SECTIONS = frozenset({"server", "batching", "ray", "reuse"})


class GRMConfig(BaseModel):
    """Configuration of a :class:`~grm_reward.GenerativeRewardModel`.

    >>> GRMConfig(k=8).effective_temperature   # the paper's 0.5 when k > 1 and none is given
    0.5
    >>> GRMConfig(k=1).effective_temperature   # greedy decoding for a single sample
    0.0

    Configs are immutable; :meth:`updated` returns a validated copy with some fields changed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- judge -----------------------------------------------------------------------------
    model: str | None = Field(
        None,
        description=(
            "Judge model: a Hugging Face id or local folder (e.g. BBQGOD/DeepSeek-GRM-27B). "
            "Default: the embedded SmolLM2-135M-Instruct, which shows the machinery, not judging quality."
        ),
    )
    backend: str = Field(
        "transformers",
        description="Generation engine: 'transformers', 'vllm', 'openai', or 'package.module:factory' for your own.",
    )
    system_prompt: str | None = Field(None, description="Optional system message sent before the judge prompt.")

    # --- sampling --------------------------------------------------------------------------
    k: int = Field(1, ge=1, le=1024, description="Judge samples per request; their scores are summed (voting).")
    temperature: float | None = Field(
        None,
        ge=0.0,
        le=5.0,
        description="Sampling temperature; default 0 (greedy) for k=1 and the paper's 0.5 for k>1.",
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(1024, ge=1, description="Generation budget of each judge sample, in tokens.")
    seed: int = Field(0, ge=0, description="Base seed: same input + seed + backend gives the same result.")
    shuffle: Literal["random", "balanced", "none"] = Field(
        "random",
        description=(
            "Order responses are shown in, per sample: 'random' (seeded, as in the paper), 'balanced' "
            "(rotations of one seeded order, so each response visits each position equally often), 'none'."
        ),
    )

    # --- prompt ----------------------------------------------------------------------------
    template: str = Field(
        "auto",
        description=(
            "Judge prompt: 'auto' (paper default; its single-response form for one response; the rubric form "
            "when principles are given), 'default', 'single', 'rubric', 'single_binary', or a path to a .txt file."
        ),
    )
    score_range: tuple[int, int] = Field((1, 10), description="Smallest and largest valid score (inclusive).")
    max_responses: int = Field(32, ge=1, description="Most responses accepted in one request.")

    # --- reading and voting ----------------------------------------------------------------
    format_guarantee: bool = Field(
        False,
        description=(
            "When a sample has no readable score block, continue it with a forced 'Scores: \\boxed{' and let the "
            "judge fill in-range integers under a constraint. Such samples are marked forced. Off = strict paper "
            "reading (they are invalid)."
        ),
    )
    token_prob: bool = Field(
        False,
        description=(
            "Vote on token-probability scores: the expected value over the score range at each score position "
            "(the paper's TokenProb baseline). Needs a backend that exposes logits."
        ),
    )
    normalize: Literal["unit", "mean", "sum"] = Field(
        "unit",
        description=(
            "Scale of `rewards`: 'unit' = mean voted score mapped to [0, 1]; 'mean' = mean score on the score range; "
            "'sum' = the paper's raw vote (sum over voting samples)."
        ),
    )
    tie_break: Literal["random", "first", "none"] = Field(
        "random",
        description="How `best` is chosen among tied top votes: seeded 'random' (paper), 'first', or 'none' (no best).",
    )
    failure_reward: float | None = Field(
        None,
        allow_inf_nan=False,
        description=(
            "Reward of a response none of whose judge samples could be read (flagged grm_failed=1 in verl and "
            "OpenRLHF; TRL's on_failure='group_mean' gives it its group's mean first). None: no number where the "
            "caller accepts that (Python API, /score, TRL), 0.0 where the framework needs one (verl, OpenRLHF)."
        ),
    )
    on_all_invalid: Literal["failure_reward", "raise"] = Field(
        "failure_reward", description="When every sample is unreadable: use failure_reward, or raise an error."
    )

    # --- meta RM ---------------------------------------------------------------------------------
    meta_rm: str | None = Field(
        None,
        description=(
            "Meta reward model rating each sample (a sequence classifier with one logit: a Hugging Face id, a "
            "local folder, or the http(s) URL of a /classify endpoint). The vote keeps the top k_meta samples."
        ),
    )
    k_meta: int | None = Field(
        None, ge=1, description="Samples kept by the meta RM for the vote; default k/2 (the paper's), at least 1."
    )

    # --- backend sections -------------------------------------------------------------------
    transformers: TransformersOptions = Field(default_factory=TransformersOptions)
    openai: OpenAIOptions = Field(default_factory=OpenAIOptions)
    vllm: VLLMOptions = Field(default_factory=VLLMOptions)
    server: ServerOptions = Field(default_factory=ServerOptions)
    batching: BatchingOptions = Field(default_factory=BatchingOptions)
    meta: MetaRMOptions = Field(default_factory=MetaRMOptions)
    ray: RayOptions = Field(default_factory=RayOptions)
    defences: DefenceOptions = Field(default_factory=DefenceOptions)
    principles: PrincipleOptions = Field(default_factory=PrincipleOptions)
    reuse: ReuseOptions = Field(default_factory=ReuseOptions)
    adaptive: AdaptiveOptions = Field(default_factory=AdaptiveOptions)

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, value: str) -> str:
        if value in {"transformers", "vllm", "openai"}:
            return value
        module, sep, attr = value.partition(":")
        if not sep or not module or not attr:
            raise ValueError(
                f"unknown backend {value!r}: use 'transformers', 'vllm', 'openai' or 'package.module:factory'"
            )
        return value

    @field_validator("score_range")
    @classmethod
    def _check_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        lo, hi = value
        if lo < 0 or hi <= lo:
            raise ValueError(f"score_range must be (lo, hi) with 0 <= lo < hi, got {value}")
        if hi > 1000:
            raise ValueError(f"score_range upper bound {hi} is unreasonably large (max 1000)")
        return value

    @model_validator(mode="after")
    def _check_cross_field(self) -> GRMConfig:
        if self.k > 1 and self.temperature == 0.0:
            raise ValueError(
                f"k={self.k} samples with temperature=0 would be identical; set temperature > 0 "
                f"(the paper uses {PAPER_VOTING_TEMPERATURE}) or k=1"
            )
        if self.batching.max_group_size is not None and self.batching.max_group_size > self.max_responses:
            raise ValueError(
                f"batching.max_group_size={self.batching.max_group_size} exceeds max_responses={self.max_responses}"
            )
        if self.k_meta is not None and self.k_meta > self.k:
            raise ValueError(f"k_meta={self.k_meta} cannot exceed k={self.k}")
        if self.adaptive.enabled and self.normalize == "sum":
            raise ValueError(
                "adaptive.enabled draws a different number of samples per request, so a summed reward would change "
                "scale with it: use normalize='unit' or 'mean' (the paper's sum voting needs a fixed k)"
            )
        if self.template == "single_binary" and self.score_range != (0, 1):
            raise ValueError("template 'single_binary' scores 0 or 1: set score_range=(0, 1)")
        if self.principles.shared and self.template in {"default", "single", "single_binary"}:
            raise ValueError(
                f"principles.shared judges against the shared principles, which template {self.template!r} cannot "
                "show: use template 'auto' or 'rubric' (or a file with a {{principles}} placeholder)"
            )
        if self.openai.mode == "completions" and not (self.openai.tokenizer or self.model):
            raise ValueError(
                "openai.mode='completions' renders the judge's chat template locally: set openai.tokenizer "
                "(or model) to its Hugging Face id or folder"
            )
        return self

    # --- construction helpers ----------------------------------------------------------------
    @property
    def effective_temperature(self) -> float:
        """The temperature actually used: the configured one, else 0 for k=1 and 0.5 for k>1."""
        if self.temperature is not None:
            return self.temperature
        return 0.0 if self.k == 1 else PAPER_VOTING_TEMPERATURE

    @property
    def effective_k_meta(self) -> int:
        """Samples a meta RM keeps for the vote: the configured k_meta, else k/2 (at least 1)."""
        return self.k_meta if self.k_meta is not None else max(1, self.k // 2)

    @property
    def numeric_failure_reward(self) -> float:
        """``failure_reward`` for a framework that needs a number (verl, OpenRLHF): 0.0 when it is None."""
        return 0.0 if self.failure_reward is None else self.failure_reward

    def batching_for(self, entry: BatchingEntry) -> BatchingOptions:
        """The ``batching`` settings ``entry`` (server, trl, verl) uses: unset ones take its defaults."""
        options = self.batching.resolved(entry)
        if options.group_by_prompt and (options.max_group_size or 0) > self.max_responses:
            raise ConfigError(
                f"batching.max_group_size={options.max_group_size} (the {entry} default) exceeds "
                f"max_responses={self.max_responses}: set batching.max_group_size"
            )
        return options

    def __init__(self, **values: Any) -> None:
        # The one exception tree: a bad setting is a ConfigError, not pydantic's ValidationError.
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(exc)) from exc

    @classmethod
    def build(cls, **values: Any) -> GRMConfig:
        """Build a config (the same as ``GRMConfig(**values)``: a bad value raises :class:`ConfigError`)."""
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> GRMConfig:
        """Load a YAML or JSON config file; keyword overrides win over the file."""
        values = load_config_file(path)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.build(**values)

    def updated(self, **changes: Any) -> GRMConfig:
        """A validated copy with some fields changed (nested sections as dicts are merged)."""
        values = self.model_dump()
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(values.get(key), dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
        return GRMConfig.build(**values)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or JSON config file into a dict of GRMConfig fields."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1})") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError / json.JSONDecodeError
        raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def _format_validation_error(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)
