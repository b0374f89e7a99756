"""A checkpoint's chat template, for evaluating an instruction-tuned model as it is used: the conversation
rendered by transformers' ``apply_chat_template`` (generation prompt added) and tokenized without added special
tokens, exactly as ``apply_chat_template(..., tokenize=True)`` does. The long-QA evaluation and RULER in chat
form share it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from longmix.core.errors import UserError


def has_chat_template(folder: Path) -> bool:
    """Whether a model folder carries a chat template where transformers looks for one (chat_template.jinja,
    chat_template.json, or tokenizer_config.json's ``chat_template``), read without loading anything."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
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
        raise UserError(f"'{folder}' has no chat template (chat_template.jinja or tokenizer_config.json's "
                        f"chat_template); {what} needs an instruction-tuned model's template")


class ChatPrompt:
    """Renders conversations with one model folder's chat template (transformers' own renderer)."""

    def __init__(self, folder: Path):
        require_chat_template(Path(folder), "a chat-form evaluation")
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        self._hf: Any = AutoTokenizer.from_pretrained(str(folder))

    def render(self, messages: list[dict[str, str]]) -> str:
        """The conversation's text, ending with the assistant's generation prompt."""
        return self._hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def user_prompt(self, content: str) -> str:
        return self.render([{"role": "user", "content": content}])


def chat_of_loaded(loaded: Any) -> ChatPrompt:
    """The chat template of a loaded checkpoint (its folder is the model's ``name_or_path``): for a suite's
    evaluation, which gets the loaded model and not its folder."""
    folder = getattr(loaded.model, "name_or_path", None)
    if not folder:
        raise UserError("the loaded model does not record its folder; cannot find its chat template")
    return ChatPrompt(Path(folder))
