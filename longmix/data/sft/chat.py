"""A model folder's chat template (``chat_template.jinja``, or ``chat_template`` in ``tokenizer_config.json``),
rendered the way transformers renders it (sandboxed Jinja, trim_blocks and lstrip_blocks) without loading a
transformers tokenizer: conversations become the exact prompt text the model was tuned on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longmix.core.errors import UserError


@dataclass(frozen=True)
class ChatTemplate:
    source: str
    bos_token: str
    eos_token: str

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        try:
            return env.from_string(self.source).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                        bos_token=self.bos_token, eos_token=self.eos_token)
        except TemplateError as err:
            raise UserError(f"the chat template failed on a conversation: {err}") from None


def _token(value: Any) -> str:
    if isinstance(value, dict):  # the older AddedToken form {"content": ...}
        value = value.get("content")
    return value if isinstance(value, str) else ""


def load_chat_template(folder: Path) -> ChatTemplate:
    """The folder's chat template; a one-line UserError when it has none (a base model is no instruction
    generator)."""
    config_path = folder / "tokenizer_config.json"
    config: dict[str, Any] = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"'{config_path}' is not valid JSON") from None
    jinja = folder / "chat_template.jinja"
    source = jinja.read_text() if jinja.is_file() else config.get("chat_template")
    if isinstance(source, list):  # named templates: [{"name": "default", "template": ...}, ...]
        source = next((t.get("template") for t in source if isinstance(t, dict) and t.get("name") == "default"), None)
    if not isinstance(source, str) or not source.strip():
        raise UserError(f"generator '{folder}' has no chat template (chat_template.jinja or tokenizer_config.json); "
                        "give an instruction-tuned model folder")
    return ChatTemplate(source, _token(config.get("bos_token")), _token(config.get("eos_token")))
