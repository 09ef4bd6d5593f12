"""Local judge with Hugging Face transformers, on CPU or GPU.

Our own decoding loop (rather than ``model.generate``) because a reward model needs three
things ``generate`` does not give together:

- **shared prefill**: the prompt of a request is run through the model once (all but its last
  token) and its KV cache is copied to the request's n sample rows, and the prefix that prompts
  share (instructions, query: every shown order of a listwise request) is run once for all of
  them (``_prefix.cheapest_plan``); ``generate`` repeats the prompt n times before prefill;
- **per-sample seeds**: each row samples from its own ``torch.Generator``, so a sample depends
  on its seed only, not on what else shares the batch;
- **constrained score filling** with exact number probabilities (``10`` may be two tokens).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from grm_reward.backends._prefix import PrefillLevel, cheapest_plan
from grm_reward.backends._shared import render_chat_prompt, torch_placement
from grm_reward.backends.base import (
    Backend,
    Generation,
    GenerationOutput,
    GenerationRequest,
    ScoreFill,
    ScoreFillRequest,
    score_number_strings,
)
from grm_reward.errors import BackendUnavailableError, GenerationError, GRMError, PromptTooLongError
from grm_reward.types import Message

if TYPE_CHECKING:
    import torch

    from grm_reward.config import GRMConfig

__all__ = ["TransformersBackend"]

_INSTALL_HINT = "pip install 'grm-reward[transformers]'"


def _import_torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(f"the transformers backend needs torch and transformers: {_INSTALL_HINT}") from exc
    return torch


class TransformersBackend(Backend):
    """A causal LM judge run in-process with transformers."""

    name = "transformers"
    capabilities = frozenset({"score_fill", "token_prob"})
    foreign_errors = (RuntimeError, ValueError, IndexError)  # torch / tokenizer failures

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = 16,
        max_context: int | None = None,
        share_prefixes: bool = True,
    ) -> None:
        super().__init__()
        torch = _import_torch()
        self.torch = torch
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = model.get_input_embeddings().weight.device  # where inputs go, also when spread
        self.batch_size = batch_size
        self.max_context = max_context or _context_window(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            self.pad_id = 0
        self.stop_ids = _stop_token_ids(model, tokenizer)
        self.share_prefixes = share_prefixes
        self.sliding_window = _sliding_window(model)
        self.token_cost = _token_cost(model)
        self._lock = threading.Lock()  # one forward pass at a time; thread-safe across event loops
        self._number_tokens: dict[tuple[int, int], dict[str, list[int]]] = {}

    @classmethod
    def from_config(cls, config: GRMConfig) -> TransformersBackend:
        torch = _import_torch()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        options = config.transformers
        if config.model is None:
            from grm_reward.embedded import embedded_model_path

            path = str(embedded_model_path())
        else:
            path = config.model
        device, dtype = torch_placement(torch, options.device, options.dtype)
        # A judge too large for one GPU (27B in bf16 on smaller cards) is spread over all visible GPUs.
        spread = options.device == "auto" and torch.cuda.device_count() > 1
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, **({"device_map": "auto"} if spread else {})
            )
        except OSError as exc:
            raise BackendUnavailableError(f"cannot load judge model {path!r}: {exc}") from exc
        if not spread:
            model.to(device)  # type: ignore[arg-type]
        return cls(
            model,
            tokenizer,
            batch_size=options.batch_size,
            max_context=options.max_context,
            share_prefixes=options.share_prefixes,
        )

    # --- protocol ---------------------------------------------------------------------------
    async def _generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        return await asyncio.to_thread(self._locked, self.generate_sync, requests)

    async def _fill_scores(self, requests: list[ScoreFillRequest]) -> list[ScoreFill]:
        return await asyncio.to_thread(self._locked, self.fill_scores_sync, requests)

    async def aclose(self) -> None:
        self.model = None
        if self.torch.cuda.is_available():
            self.torch.cuda.empty_cache()

    def _locked(self, fn: Any, *args: Any) -> Any:
        with self._lock:
            if self.model is None:
                raise GenerationError("the transformers backend is closed")
            with self.torch.inference_mode():
                return fn(*args)

    def _map_error(self, exc: Exception) -> GRMError:
        return GenerationError(f"transformers generation failed: {exc}")

    # --- encoding ---------------------------------------------------------------------------
    def encode(self, messages: Sequence[Message], assistant_prefix: str | None = None) -> list[int]:
        """Token ids of the chat-templated prompt (continuing ``assistant_prefix`` when given)."""
        text = render_chat_prompt(self.tokenizer, messages, assistant_prefix)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # --- sampling -------------------------------------------------------------------------------
    def generate_sync(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        """The samples of ``requests``, in this thread (counts only ``prefill_tokens``: see Backend.generate)."""
        encoded = []
        for i, request in enumerate(requests):
            ids = self.encode(request.messages, request.assistant_prefix)
            if len(ids) + request.max_tokens > self.max_context:
                raise PromptTooLongError(
                    f"judge prompt of {len(ids)} tokens + max_new_tokens={request.max_tokens} exceeds the "
                    f"judge's context of {self.max_context} tokens (generation request {i})"
                )
            encoded.append(ids)
        results: list[list[Generation | None]] = [[None] * r.n for r in requests]
        # Rows: (request, sample); chunks keep each request's samples together where they fit.
        rows = [(i, j) for i, r in enumerate(requests) for j in range(r.n)]
        for chunk in _chunks(rows, self.batch_size):
            settings = {(requests[i].max_tokens, requests[i].temperature, requests[i].top_p) for i, _ in chunk}
            for max_tokens, temperature, top_p in sorted(settings):
                part = [
                    (i, j)
                    for i, j in chunk
                    if (requests[i].max_tokens, requests[i].temperature, requests[i].top_p)
                    == (max_tokens, temperature, top_p)
                ]
                generations = self._decode(
                    [encoded[i] for i, _ in part],
                    [requests[i].seeds[j] for i, j in part],
                    max_tokens,
                    temperature,
                    top_p,
                )
                for (i, j), generation in zip(part, generations):
                    results[i][j] = generation
        return [
            GenerationOutput(samples=[s for s in samples if s is not None], prompt_tokens=len(ids))
            for ids, samples in zip(encoded, results)
        ]

    def _decode(
        self, prompts: list[list[int]], seeds: list[int], max_tokens: int, temperature: float, top_p: float
    ) -> list[Generation]:
        """Sample one continuation per row; rows with the same prompt share its prefill."""
        torch = self.torch
        # Unique prompts in first-seen order, and each row's index into them.
        unique: dict[tuple[int, ...], int] = {}
        row_prompt = [unique.setdefault(tuple(p), len(unique)) for p in prompts]
        uniques = [list(p) for p in unique]
        index = torch.tensor(row_prompt, device=self.device)
        cache, mask = self._prefill([p[:-1] for p in uniques], max_tokens, index)
        current = torch.tensor([uniques[r][-1] for r in row_prompt], device=self.device)
        self.stats.prefill_tokens += len(prompts)  # each row runs the prompt's last token itself

        generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]
        alive = list(range(len(prompts)))  # row ids still decoding, aligned with the batch
        tokens: list[list[int]] = [[] for _ in prompts]
        finish = ["length"] * len(prompts)
        stop = torch.tensor(sorted(self.stop_ids), device=self.device)
        finished_since_prune = 0
        for _step in range(max_tokens):
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            positions = (mask.sum(dim=1, keepdim=True) - 1).clamp(min=0)
            out = self.model(
                input_ids=current[:, None],
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            chosen = _sample(torch, out.logits[:, -1, :], temperature, top_p, [generators[r] for r in alive])
            is_stop = torch.isin(chosen, stop).tolist()
            chosen_list = chosen.tolist()
            keep = []
            for b, row in enumerate(alive):
                if finish[row] == "stop":
                    continue  # finished at an earlier step, waiting to be pruned
                if is_stop[b]:
                    finish[row] = "stop"
                    finished_since_prune += 1
                else:
                    tokens[row].append(chosen_list[b])
                    keep.append(b)
            if not keep:
                break
            current = chosen
            # Drop finished rows from the batch once enough of them have accumulated.
            if finished_since_prune and finished_since_prune * 4 >= len(alive):
                keep_index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(keep_index)
                mask = mask[keep_index]
                current = current[keep_index]
                alive = [alive[b] for b in keep]
                finished_since_prune = 0
            else:
                # Finished rows keep decoding pad tokens until the next prune; their output is ignored.
                for b, row in enumerate(alive):
                    if finish[row] == "stop":
                        current[b] = self.pad_id
        generations = []
        for row in range(len(prompts)):
            text = self.tokenizer.decode(tokens[row], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            generations.append(Generation(text=text, completion_tokens=len(tokens[row]), finish_reason=finish[row]))
        return generations

    def _prefill(self, prompts: list[list[int]], decode_tokens: int, rows: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """Run the distinct ``prompts`` through the model; returns (cache or None, attention mask) of
        the decode ``rows`` (``rows[r]``: the prompt row ``r`` continues).

        With ``share_prefixes`` the prefixes they share (instructions, query) are run once per level
        of :func:`cheapest_plan` and their KV cache rows copied to the prompts that continue them;
        the gaps this leaves between segments are masked, and positions skip them, so each row
        attends to exactly its own prompt; the gaps are then dropped (:meth:`_compact`). Without it,
        each prompt is run whole, left-padded.
        """
        torch = self.torch
        from transformers import DynamicCache

        levels = self._prefill_plan(prompts, decode_tokens)
        mask = torch.zeros((1, 0), dtype=torch.long, device=self.device)
        cache = None
        for level in levels:
            index = torch.tensor(level.parents, device=self.device)
            mask = mask[index]
            if cache is not None:
                cache.batch_select_indices(index)  # copies a shared row to every prompt continuing it
            width = max(len(s) for s in level.segments)
            if width == 0:
                continue
            ids = torch.full((len(level.segments), width), self.pad_id, dtype=torch.long, device=self.device)
            added = torch.zeros((len(level.segments), width), dtype=torch.long, device=self.device)
            for b, segment in enumerate(level.segments):
                if segment:
                    ids[b, width - len(segment) :] = torch.tensor(segment, device=self.device)
                    added[b, width - len(segment) :] = 1
            mask = torch.cat([mask, added], dim=1)
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)[:, -width:]
            if cache is None:
                cache = DynamicCache(config=self.model.config)
            self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                logits_to_keep=1,
            )
            self.stats.prefill_tokens += sum(len(s) for s in level.segments)
        if len(levels) > 1 and cache is not None:
            return cache, self._compact(cache, mask, rows)
        if cache is not None:
            cache.batch_select_indices(rows)
        return cache, mask[rows]

    def _compact(self, cache: Any, mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Select ``rows`` of the cache without the gaps the levels left between segments: each row's
        own columns, in order, left-padded to the longest prompt, as a whole prefill leaves them (keys
        keep the positions they were run at). Every decode step attends over, and ``DynamicCache``
        copies, the whole width. Returns the rows' mask; one gather per layer."""
        from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

        layers = getattr(cache, "layers", None)
        if not layers or not all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers):
            cache.batch_select_indices(rows)  # a cache we cannot rearrange: keep the gaps (still exact)
            return mask[rows]
        width = int(mask.sum(dim=1).max())
        # Per prompt: its gap columns first, then its own columns in order (a stable sort of the 0/1 mask).
        columns = self.torch.sort(mask, dim=1, stable=True).indices[:, mask.shape[1] - width :][rows]
        for layer in layers:
            if not layer.is_initialized:
                continue
            # [rows, width, heads, dim] -> [rows, heads, width, dim]: a view; the next update copies it anyway.
            layer.keys = layer.keys[rows[:, None], :, columns].transpose(1, 2)
            layer.values = layer.values[rows[:, None], :, columns].transpose(1, 2)
            if isinstance(layer, DynamicSlidingWindowLayer):
                layer.cumulative_length = width  # nothing was cut: the plan fits the window (_prefill_plan)
        return mask[rows].gather(1, columns)

    def _prefill_plan(self, prompts: list[list[int]], decode_tokens: int) -> list[PrefillLevel]:
        """Shared-prefix levels when they pay and are exact; else one level, each prompt whole."""
        whole = [PrefillLevel([0] * len(prompts), prompts)]
        if not self.share_prefixes or len(prompts) < 2:
            return whole
        try:
            levels = cheapest_plan(prompts, token_cost=self.token_cost)
        except RecursionError:  # a tree as deep as the batch is wide (nested prompts): not worth sharing
            return whole
        if len(levels) < 2:
            return whole
        # A sliding-window layer counts the gaps between segments as distance: share only while every
        # row, gaps included, stays inside the window (then the window never cuts anything).
        width = sum(max(len(s) for s in level.segments) for level in levels)
        if self.sliding_window is not None and width + decode_tokens + 1 > self.sliding_window:
            return whole
        return levels

    # --- constrained score filling ---------------------------------------------------------------
    def fill_scores_sync(self, requests: Sequence[ScoreFillRequest]) -> list[ScoreFill]:
        """The fills of ``requests``, in this thread (counts only ``prefill_tokens``: see Backend.fill_scores)."""
        return [self._fill_one(r) for r in requests]

    def _fill_one(self, request: ScoreFillRequest) -> ScoreFill:
        """Fill ``v1, ..., vn}`` after the prefix: at each position the most likely in-range number.

        The distribution over numbers is exact under the constraint: the probability of a number
        is the product, over its tokens, of the model's probabilities renormalised over the tokens
        the constraint allows at that point; "1" vs "10" is settled by one more forward pass.
        """
        torch = self.torch
        from transformers import DynamicCache

        ids = self.encode(request.messages, request.assistant_prefix)
        budget = 4 * request.num_scores + 4
        if len(ids) + budget > self.max_context:
            raise PromptTooLongError(f"forced-score prompt of {len(ids)} tokens exceeds the judge's context of {self.max_context}")
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=torch.tensor([ids], device=self.device), past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[0, -1, :].float()
        length = len(ids)
        spellings = self._number_spellings(request.score_range)
        sep_ids = self._token_ids(", ", anchor="\\boxed{1")
        close_ids = self._token_ids("}", anchor="\\boxed{1")
        values: list[int] = []
        expected: list[float] = []
        generated = 0
        for position in range(request.num_scores):
            last = position == request.num_scores - 1
            end_ids = close_ids if last else sep_ids
            probs = self._number_distribution(cache, length, logits, spellings, end_ids[0])
            value = max(probs, key=lambda v: (probs[v], -v))
            values.append(value)
            total = sum(probs.values())
            expected.append(sum(v * p for v, p in probs.items()) / total)
            if last:
                generated += len(spellings[value]) + len(end_ids)
                break
            step = spellings[value] + end_ids
            out = self.model(
                input_ids=torch.tensor([step], device=self.device), past_key_values=cache, use_cache=True, logits_to_keep=1
            )
            logits = out.logits[0, -1, :].float()
            length += len(step)
            generated += len(step)
        self.stats.prefill_tokens += len(ids)
        return ScoreFill(
            values=values,
            expected=expected if request.expectation else None,
            prompt_tokens=len(ids),
            completion_tokens=generated,
        )

    def _number_distribution(
        self, cache: Any, length: int, logits: torch.Tensor, spellings: dict[int, list[int]], end_id: int
    ) -> dict[int, float]:
        """P(number) under the constraint, exploring the token trie of the valid numbers."""
        torch = self.torch
        probs: dict[int, float] = {}
        # frontier: (token path so far, probability of the path, logits after the path)
        frontier: list[tuple[tuple[int, ...], float, Any]] = [((), 1.0, logits)]
        while frontier:
            path, mass, node_logits = frontier.pop()
            depth = len(path)
            complete = [v for v, s in spellings.items() if tuple(s) == path]
            children = sorted({s[depth] for s in spellings.values() if len(s) > depth and tuple(s[:depth]) == path})
            allowed = children + ([end_id] if complete else [])
            if not allowed:
                continue
            if len(allowed) == 1:
                local = torch.ones(1)
            else:
                local = torch.softmax(node_logits[torch.tensor(allowed, device=node_logits.device)], dim=0).cpu()
            for token, p in zip(allowed, local.tolist()):
                if complete and token == end_id and token not in children:
                    probs[complete[0]] = probs.get(complete[0], 0.0) + mass * p
                    continue
                child = (*path, token)
                child_complete = any(tuple(s) == child for s in spellings.values())
                child_extends = any(len(s) > len(child) and tuple(s[: len(child)]) == child for s in spellings.values())
                if child_complete and not child_extends:
                    v = next(v for v, s in spellings.items() if tuple(s) == child)
                    probs[v] = probs.get(v, 0.0) + mass * p
                elif mass * p > 0:
                    # Ambiguous prefix (e.g. "1" of "1" and "10"): one forward pass, then roll back.
                    out = self.model(
                        input_ids=torch.tensor([list(child)], device=self.device),
                        past_key_values=cache,
                        use_cache=True,
                        logits_to_keep=1,
                    )
                    child_logits = out.logits[0, -1, :].float()
                    cache.crop(length)
                    frontier.append((child, mass * p, child_logits))
        return probs

    def _number_spellings(self, score_range: tuple[int, int]) -> dict[int, list[int]]:
        key = score_range
        if key not in self._number_tokens:
            self._number_tokens[key] = {
                s: self._token_ids(s, anchor="\\boxed{") for s in score_number_strings(score_range)
            }
        return {int(s): ids for s, ids in self._number_tokens[key].items()}

    def _token_ids(self, text: str, anchor: str) -> list[int]:
        """Token ids of ``text`` as it is spelled after ``anchor`` (tokenizers that add a leading
        space marker to a bare string, like SentencePiece ones, would otherwise spell it wrongly)."""
        encode = self.tokenizer
        base = list(encode(anchor, add_special_tokens=False)["input_ids"])
        full = list(encode(anchor + text, add_special_tokens=False)["input_ids"])
        ids = full[len(base) :] if full[: len(base)] == base else list(encode(text, add_special_tokens=False)["input_ids"])
        if not ids:
            raise GenerationError(f"the tokenizer produced no tokens for {text!r}")
        return ids


def _sample(torch: Any, logits: Any, temperature: float, top_p: float, generators: list[Any]) -> Any:
    """One token per row: greedy at temperature 0, else top-p sampling with each row's generator."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_p < 1.0:
        sorted_logits, sorted_index = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        remove = cumulative - torch.softmax(sorted_logits, dim=-1) > top_p  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, sorted_index, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    picks = [torch.multinomial(probs[b], 1, generator=g) for b, g in enumerate(generators)]
    return torch.cat(picks)


def _chunks(rows: list[tuple[int, int]], size: int) -> list[list[tuple[int, int]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _context_window(model: Any, tokenizer: Any) -> int:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**7 else 4096


def _sliding_window(model: Any) -> int | None:
    """The smallest attention window of the model's layers, if any layer has one."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text_config, "sliding_window", None)
    return window if isinstance(window, int) and window > 0 else None


def _token_cost(model: Any) -> float:
    """The work of one token position's linear layers in query-key products of attention (about
    3,000 on the embedded judge): the exchange rate of padding against cache width in the prefill plan."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = getattr(text_config, "num_hidden_layers", None)
    heads = getattr(text_config, "num_attention_heads", None)
    hidden = getattr(text_config, "hidden_size", None)
    head_dim = getattr(text_config, "head_dim", None) or (hidden // heads if hidden and heads else None)
    if not (isinstance(layers, int) and isinstance(heads, int) and isinstance(head_dim, int)) or not layers * heads * head_dim:
        return 3000.0
    parameters = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    return max(float(parameters) / (2 * layers * heads * head_dim), 1.0)


def _stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids
