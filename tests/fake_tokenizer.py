"""A chat template and tokenizer small enough to read in a failing assertion (one id per character)."""

from __future__ import annotations


class CharTokenizer:
    """``<role>content</>`` turns; ids are code points; an open last turn with ``continue_final_message``."""

    eos_token_id = 0

    def apply_chat_template(self, conversation, tokenize=False, add_generation_prompt=False, continue_final_message=False):
        last = len(conversation) - 1
        text = "".join(
            f"<{m['role']}>{m['content']}" + ("" if continue_final_message and i == last else "</>")
            for i, m in enumerate(conversation)
        )
        return text + ("<assistant>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(map(chr, ids))
