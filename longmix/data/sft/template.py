"""Chat examples as token ids with a per-token loss mask, rendered by the model folder's own chat template.

The ids are exactly those of transformers' ``apply_chat_template(messages, tokenize=True)``: the same template
renders the text, which is then encoded as that method encodes it (``add_special_tokens=False``: the template
writes its own control tokens). The loss mask marks the tokens whose prediction is trained, per loss mode:

- ``output``: the assistant turns' content, plus the end-of-turn token that closes each assistant turn (the first
  special token after its content: ``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``), so the model learns to stop.
- ``input_and_output`` (the paper's): the content of every message (system, user, assistant) plus the assistant's
  end-of-turn tokens; never the template's scaffolding (role headers, separators, a default system prompt the
  template injects), which is the same in every example and would only dilute the loss.
- ``all``: every token.

Content spans are found in the rendered text: the conversation is rendered once more with each content replaced
by a marker, so the text around the markers is the scaffolding and the spans are exact. A template that changes
contents (``| trim``) breaks that; the spans are then searched for in order, each after the previous one. A token
is content when its character span (the fast tokenizer's offsets) lies inside a content span. The mask is set on
the predicted token, never on an example's first token (nothing predicts it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from longmix.core.errors import UserError
from longmix.models.chat_template import TEMPLATE_FILE, ChatTemplate, load_chat_template

__all__ = ["TEMPLATE_FILE", "ChatTemplate", "load_chat_template", "encode_chats", "LOSS_MODES", "LossMode"]

LossMode = Literal["output", "input_and_output", "all"]
LOSS_MODES: tuple[str, ...] = ("output", "input_and_output", "all")


@dataclass(frozen=True)
class Encoded:
    ids: np.ndarray  # uint32
    loss_mask: np.ndarray  # uint8, aligned with ids; 0 at position 0


def encode_chats(tpl: ChatTemplate, conversations: Sequence[list[dict[str, str]]], mode: LossMode,
                 batch: int = 256) -> list[Encoded]:
    """Ids and loss mask of each conversation (rendered one by one, encoded in batches)."""
    if mode not in LOSS_MODES:
        raise UserError(f"loss mode {mode!r}; choose one of {', '.join(LOSS_MODES)}")
    out: list[Encoded] = []
    special = set(tpl.tokenizer.all_special_ids) | set(tpl.tokenizer.added_tokens_decoder)
    for lo in range(0, len(conversations), batch):
        chunk = conversations[lo: lo + batch]
        texts = [tpl.render(m) for m in chunk]
        enc = tpl.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        for messages, text, ids, offsets in zip(chunk, texts, enc["input_ids"], enc["offset_mapping"], strict=True):
            ids = np.asarray(ids, dtype=np.uint32)
            spans = content_spans(tpl, messages, text)
            mask = loss_mask(ids, np.asarray(offsets, dtype=np.int64).reshape(-1, 2), messages, spans, mode, special)
            out.append(Encoded(ids, mask))
    return out


def content_spans(tpl: ChatTemplate, messages: list[dict[str, str]], text: str) -> list[tuple[int, int]]:
    """(start, end) of each message's content in the rendered ``text``."""
    markers = [f"\u2063LMXC{k}\u2063" for k in range(len(messages))]
    marked = tpl.render([{**m, "content": mk} for m, mk in zip(messages, markers, strict=True)])
    pieces, rest = [], marked
    for mk in markers:
        head, sep, rest = rest.partition(mk)
        if not sep:
            break
        pieces.append(head)
    if len(pieces) == len(messages):
        spans, pos = [], 0
        for piece, m in zip(pieces, messages, strict=True):
            pos += len(piece)
            spans.append((pos, pos + len(m["content"])))
            pos += len(m["content"])
        if "".join(p + m["content"] for p, m in zip(pieces, messages, strict=True)) + rest == text:
            return spans
    return _searched_spans(tpl, messages, text)


def _searched_spans(tpl: ChatTemplate, messages: list[dict[str, str]], text: str) -> list[tuple[int, int]]:
    """Fallback for templates that change contents: each content (or its stripped form) after the previous."""
    spans, pos = [], 0
    for k, m in enumerate(messages):
        for needle in (m["content"], m["content"].strip()):
            at = text.find(needle, pos)
            if at >= 0:
                spans.append((at, at + len(needle)))
                pos = at + len(needle)
                break
        else:
            raise UserError(f"the chat template of {tpl.folder} rewrites message {k}'s content beyond trimming; "
                            "its tokens cannot be told from the template's")
    return spans


def loss_mask(ids: np.ndarray, offsets: np.ndarray, messages: list[dict[str, str]], spans: list[tuple[int, int]],
              mode: LossMode, special: set[int]) -> np.ndarray:
    """The mask of one encoded conversation (see the module docstring for what each mode counts)."""
    mask = np.zeros(len(ids), dtype=np.uint8)
    if mode == "all":
        mask[1:] = 1
        return mask
    starts, ends = offsets[:, 0], offsets[:, 1]
    for k, (m, (a, b)) in enumerate(zip(messages, spans, strict=True)):
        if m["role"] != "assistant" and mode == "output":
            continue
        mask[(starts >= a) & (ends <= b) & (ends > starts)] = 1
        if m["role"] == "assistant":
            limit = spans[k + 1][0] if k + 1 < len(spans) else np.iinfo(np.int64).max
            after = np.flatnonzero((starts >= b) & (starts < limit))
            closing = [t for t in after.tolist() if int(ids[t]) in special]
            if closing:
                mask[closing[0]] = 1
    mask[0] = 0
    return mask
