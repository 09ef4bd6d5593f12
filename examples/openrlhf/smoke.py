"""CPU smoke run of the OpenRLHF SPCT recipe: the reward file inside OpenRLHF's own rollout executor.

OpenRLHF cannot train here (it needs GPUs, vLLM, DeepSpeed, flash-attn), so this runs the part of
a rollout that touches the reward, with OpenRLHF 0.11's own code (installed ``--no-deps``):

1. ``prepare_data.py`` turns the shipped smoke rl-data into OpenRLHF's prompt JSONL;
2. OpenRLHF's ``preprocess_data`` builds each prompt with the policy's chat template
   (``--data.input_key prompt --data.label_key ground_truth --data.apply_chat_template``);
3. ``openrlhf/utils/agent.py`` is loaded by file path (its logging module stubbed, as OpenRLHF's own
   tests do) and its ``SingleTurnAgentExecutor`` loads ``judge_rule_reward.py`` exactly as
   ``--reward.remote_url <file>.py`` makes it;
4. ``executor.execute(...)`` runs each rollout: it tokenizes the prompt, left-truncates it to
   ``max_length - max_new_tokens`` (with the smoke ``max_length`` of 900 tokens the pairwise and
   listwise judge prompts are truncated, the single-response ones are not), asks an engine for tokens — a stand-in for vLLM that samples from a tiny
   random policy (1-layer Llama, SmolLM2's tokenizer) or returns a hand-written judge output — decodes
   prompt + output with special tokens and calls ``reward_func`` through its thread offload;
5. each reward is checked against the rule applied to the output alone, and converted to tensors
   as OpenRLHF's experience maker does.

    python examples/openrlhf/smoke.py --output-dir /tmp/openrlhf-smoke
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
SMOKE_RL = HERE.parent / "data" / "spct" / "rl.jsonl"


def openrlhf_root() -> Path:
    spec = importlib.util.find_spec("openrlhf")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs openrlhf: pip install --no-deps openrlhf==0.11.2")
    return Path(spec.submodule_search_locations[0])


def load_openrlhf_agent(root: Path) -> ModuleType:
    """OpenRLHF's ``openrlhf/utils/agent.py``, loaded by path with ``openrlhf.utils.logging_utils`` stubbed."""
    for name in ("openrlhf", "openrlhf.utils"):
        sys.modules.setdefault(name, ModuleType(name))
    sys.modules["openrlhf.utils.logging_utils"] = SimpleNamespace(init_logger=logging.getLogger)  # type: ignore[assignment]
    agent_spec = importlib.util.spec_from_file_location("openrlhf_agent", root / "utils" / "agent.py")
    assert agent_spec is not None and agent_spec.loader is not None
    module = importlib.util.module_from_spec(agent_spec)
    agent_spec.loader.exec_module(module)
    return module


def openrlhf_preprocess(root: Path) -> Any:
    """OpenRLHF's ``preprocess_data`` (from ``openrlhf/datasets/prompts_dataset.py``, loaded by path)."""
    path = root / "datasets" / "prompts_dataset.py"
    module_spec = importlib.util.spec_from_file_location("openrlhf_prompts_dataset", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.preprocess_data


def build_tiny_policy() -> tuple[Any, Any]:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from grm_reward.embedded import embedded_model_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tokenizer


class Engine:
    """A stand-in for OpenRLHF's vLLM engine: ``await generate(prompt_token_ids, params)`` -> vLLM-like output."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.scripted: list[str | None] = []  # per call: a hand-written output, or None to sample

    async def generate(self, prompt_token_ids: list[int], sampling_params: Any, multi_modal_data: Any = None) -> Any:
        import torch

        text = self.scripted.pop(0)
        eos = self.tokenizer.eos_token_id
        if text is not None:
            ids = [*self.tokenizer(text, add_special_tokens=False)["input_ids"], eos]
        else:
            inputs = torch.tensor([prompt_token_ids])
            with torch.no_grad():
                out = self.model.generate(inputs, attention_mask=torch.ones_like(inputs), do_sample=True,
                                          max_new_tokens=sampling_params.max_tokens, pad_token_id=eos)
            ids = out[0, len(prompt_token_ids):].tolist()
            ids = ids[: ids.index(eos) + 1] if eos in ids else ids
        finish = "stop" if ids and ids[-1] == eos else "length"
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids, finish_reason=finish, logprobs=None)])


def hand_written_output(truth: Any, *, correct: bool) -> str:
    if truth.num_responses == 1:
        lo, hi = truth.score_range
        score = (hi if truth.label == 1 else lo) if correct else (lo if truth.label == 1 else hi)
        return f"Analysis: Checked.\nScores: \\boxed{{{score}}}"
    scores = [2] * truth.num_responses
    scores[truth.best] = 8
    if not correct:
        scores[(truth.best + 1) % truth.num_responses] = 8  # a tie at the top
    return f"Analysis: Compared.\nScores: \\boxed{{{', '.join(map(str, scores))}}}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--rl-data", type=Path, default=SMOKE_RL)
    p.add_argument("--max-length", type=int, default=900, help="OpenRLHF's --data.max_len (prompt + output)")
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--samples", type=int, default=2, help="policy samples per prompt")
    args = p.parse_args(argv)
    start = time.perf_counter()

    import torch

    from grm_reward.spct.reward_funcs import judge_verdict, parse_ground_truth

    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    prompts_file = out / "prompts.jsonl"
    subprocess.run([sys.executable, str(HERE / "prepare_data.py"), str(args.rl_data), "-o", str(prompts_file)],
                   check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in prompts_file.read_text(encoding="utf-8").splitlines()]

    root = openrlhf_root()
    preprocess_data = openrlhf_preprocess(root)
    agent = load_openrlhf_agent(root)
    # As train_ppo_ray passes it: the --reward.remote_url value split on commas.
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=[str(HERE / "judge_rule_reward.py")])
    assert executor.reward_func is not None and executor.reward_func.__module__ == "reward_func"
    model, tokenizer = build_tiny_policy()
    engine = Engine(model, tokenizer)
    params = SimpleNamespace(max_tokens=args.max_new_tokens, logprobs=None)

    jobs: list[tuple[str, Any, str]] = []  # (prompt, label, source)
    for i, row in enumerate(rows):
        prompt, label = preprocess_data(row, input_key="prompt", label_key="ground_truth",
                                        apply_chat_template=tokenizer.apply_chat_template)
        for _ in range(args.samples):
            jobs.append((prompt, label, "policy"))
        jobs.append((prompt, label, "hand-written correct" if i % 2 == 0 else "hand-written tie/wrong"))

    torch.manual_seed(0)
    outputs = []
    for prompt, label, source in jobs:  # one at a time: the engine stand-in is not concurrent
        truth = parse_ground_truth(label)
        engine.scripted.append(None if source == "policy" else hand_written_output(truth, correct="correct" in source))
        outputs.append(asyncio.run(executor.execute(prompt, label, params, args.max_length, tokenizer, engine)))

    records = []
    for (prompt, label, source), output in zip(jobs, outputs):
        assert output["reward"] is not None, "OpenRLHF logged a reward failure (see the INFO log)"
        start_of_output = output["action_ranges"][0][0]
        action = output["observation_tokens"][start_of_output:]
        text = tokenizer.decode(action, skip_special_tokens=True)
        expected = judge_verdict(text, parse_ground_truth(label)).reward
        query = tokenizer.decode(output["observation_tokens"], skip_special_tokens=False)
        assert output["reward"] == [expected], (source, text, output["reward"])
        assert output["scores"] == [1.0 if expected == 1.0 else 0.0]
        if source == "hand-written correct":
            assert expected == 1.0, text
        if source == "hand-written tie/wrong":
            assert expected == -1.0, text
        # What OpenRLHF's experience maker does with them (samples_generator._process_response_into_experience).
        tensors = [torch.tensor([output["reward"]]), torch.tensor([output["scores"]])]
        tensors += [torch.tensor([value]) for value in output["extra_logs"].values()]
        assert all(t.numel() == 1 for t in tensors)
        records.append({
            "source": source,
            "prompt": prompt,
            "label": label,
            "text": text,  # what the policy wrote, decoded from OpenRLHF's own observation tokens
            "query": query,  # what OpenRLHF sent to the reward (prompt possibly left-truncated)
            "reward": output["reward"][0],
            "truncated_prompt": not query.startswith(prompt),
            "extra_logs": {k: v[0] for k, v in output["extra_logs"].items()},
        })
    keys = {tuple(sorted(o["extra_logs"])) for o in outputs}
    assert keys == {("judge_split_failed", "judge_tie", "judge_valid")}, keys
    assert all(r["extra_logs"]["judge_split_failed"] == 0.0 for r in records)

    summary = {
        "rollouts": len(records),
        "prompts": len(rows),
        "truncated_prompts": sum(r["truncated_prompt"] for r in records),
        "plus_one": sum(r["reward"] == 1.0 for r in records),
        "minus_one": sum(r["reward"] == -1.0 for r in records),
        "extra_log_keys": sorted(keys.pop()),
        "records": records,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(json.dumps({k: v for k, v in summary.items() if k != "records"}))
    return summary


if __name__ == "__main__":
    main()
