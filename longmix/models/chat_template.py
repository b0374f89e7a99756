"""A model folder's chat template: the one owner of finding it, loading it and rendering conversations with it.

SFT packing (its loss masks), the self-instruct generator (its prompts) and the chat-form evaluations (long QA,
RULER --chat) all render through here, with transformers' own ``apply_chat_template`` on the folder's tokenizer
(no remote code), so the text a model is tuned on, prompted with and evaluated on is the same. The template is
``chat_template.jinja`` when the folder has one (a transformers 5 save), else the tokenizer config's
``chat_template``; its sha256 is that of the bytes it was read from."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longmix.core.errors import UserError

TEMPLATE_FILE = "chat_template.jinja"


def has_chat_template(folder: Path) -> bool:
    """Whether a model folder carries a chat template where transformers looks for one (chat_template.jinja,
    chat_template.json, or tokenizer_config.json's ``chat_template``), read without loading anything."""
    folder = Path(folder)
    if (folder / TEMPLATE_FILE).is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return False
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError):
        return False


def require_chat_template(folder: Path, what: str) -> None:
    """A one-line UserError, before any model is loaded, for a folder without a chat template."""
    if not has_chat_template(folder):
        raise UserError(f"'{folder}' has no chat template ({TEMPLATE_FILE} or tokenizer_config.json's "
                        f"chat_template); {what} needs an instruction-tuned model's template")


@dataclass(frozen=True)
class ChatTemplate:
    """A model folder's fast tokenizer and chat template; ``sha256`` is that of the template's bytes."""

    folder: Path
    tokenizer: Any  # a transformers fast tokenizer
    text: str
    sha256: str

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        """The conversation's text, as ``apply_chat_template(tokenize=False)`` renders it."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, chat_template=self.text,
                                                  add_generation_prompt=add_generation_prompt)

    def prompt(self, messages: list[dict[str, str]]) -> str:
        """The conversation's text ending with the assistant's generation prompt: what a model answers."""
        return self.render(messages, add_generation_prompt=True)

    def user_prompt(self, content: str) -> str:
        return self.prompt([{"role": "user", "content": content}])

    def encode(self, text: str) -> list[int]:
        """Ids of rendered text, as ``apply_chat_template(tokenize=True)`` makes them (the template writes its
        own control tokens, so none are added)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def template_bytes(self) -> bytes:
        """The bytes whose sha256 is ``sha256`` (what sft-pack copies beside its manifest)."""
        file = self.folder / TEMPLATE_FILE
        return file.read_bytes() if file.is_file() else self.text.encode("utf-8")


def load_chat_template(folder: str | Path, what: str = "SFT") -> ChatTemplate:
    """The folder's tokenizer (no remote code) and chat template. A folder without one, or without a fast
    tokenizer (the loss masks need its character offsets), is a one-line UserError."""
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise UserError(f"model folder '{folder}' has no tokenizer.json (import one with `longmix model import`)")
    require_chat_template(folder, what)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"model folder '{folder}': cannot load its tokenizer ({str(exc).splitlines()[0]})") from None
    if not getattr(tok, "is_fast", False):
        raise UserError(f"model folder '{folder}': the tokenizer is not a fast tokenizer; the loss mask needs its "
                        "character offsets")
    file = folder / TEMPLATE_FILE
    if file.is_file():
        raw = file.read_bytes()
        text = raw.decode("utf-8")
    elif isinstance(tok.chat_template, str) and tok.chat_template:
        text = tok.chat_template
        raw = text.encode("utf-8")
    elif isinstance(tok.chat_template, dict):
        raise UserError(f"model folder '{folder}' has several named chat templates; keep one in {TEMPLATE_FILE}")
    else:
        raise UserError(f"model folder '{folder}' has no chat template ({TEMPLATE_FILE} or tokenizer_config.json "
                        f"chat_template); {what} needs the model's own")
    return ChatTemplate(folder, tok, text, hashlib.sha256(raw).hexdigest())


def template_of_loaded(loaded: Any, what: str) -> ChatTemplate:
    """The chat template of a loaded checkpoint (its folder is the model's ``name_or_path``): for a suite's
    evaluation, which gets the loaded model and not its folder."""
    folder = getattr(loaded.model, "name_or_path", None)
    if not folder:
        raise UserError("the loaded model does not record its folder; cannot find its chat template")
    return load_chat_template(Path(folder), what)
