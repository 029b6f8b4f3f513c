"""Rendering chats to token ids with the model's own chat template.

Generation, teacher-forced scoring and distillation all render through these helpers, so the
response tokens a divergence trains on are the tokens the model would have produced after the same
prompt (loss masks cover exactly those).
"""

from __future__ import annotations

from typing import Sequence

from dsc.backends.base import Chat


def prompt_ids(tokenizer, chat: Chat) -> list[int]:
    """Ids of the chat followed by the assistant header (what generation starts from)."""
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def prompt_and_response_ids(tokenizer, chat: Chat, response: str) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids); the response ids end with the end-of-turn token so the model also
    learns where to stop."""
    prefix = prompt_ids(tokenizer, chat)
    body = tokenizer(response, add_special_tokens=False)["input_ids"]
    end = end_of_turn_ids(tokenizer)
    return prefix, list(body) + end


def end_of_turn_ids(tokenizer) -> list[int]:
    eos = tokenizer.eos_token_id
    return [eos] if eos is not None else []


def user_chat(text: str) -> Chat:
    return [{"role": "user", "content": text}]


def extend(chat: Chat, *turns: tuple[str, str]) -> Chat:
    return list(chat) + [{"role": role, "content": content} for role, content in turns]


def batched(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]
