"""Chat examples from JSONL: the `messages` shape (system/user/assistant turns, the long-QA JSONL among them) and
the `instruction` (+ optional `input`) + `output` shape of short instruction sets.

Every line is checked before anything is tokenized, and a bad line is a one-line error naming its file and line:
a conversation the loss mask cannot be placed on (no assistant turn, not ending with one, an empty answer) would
otherwise fail or, worse, train on nothing. Fields beside the conversation (id, provenance, ...) are kept aside.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longmix.core.errors import UserError

ROLES = ("system", "user", "assistant")
CHAT_SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class ChatExample:
    """One conversation and where it came from; ``extra`` holds the line's other fields (provenance, ...)."""

    messages: list[dict[str, str]]
    source: str
    where: str  # file:line
    id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def chat_files(paths: Sequence[str | Path], base: Path | None = None) -> list[Path]:
    """The JSONL files named by ``paths``: files, folders (their *.jsonl / *.json, recursively) or glob patterns,
    relative to ``base``; sorted within each entry, so the order never depends on the file system."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if base is not None and not p.is_absolute():
            p = Path(os.path.normpath(base / p))
        if any(ch in str(raw) for ch in "*?["):
            found = sorted(Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in CHAT_SUFFIXES)
        elif p.is_file():
            found = [p]
        else:
            raise UserError(f"chat data '{p}' not found")
        if not found:
            raise UserError(f"chat data '{p}' holds no .jsonl files")
        out.extend(found)
    return out


def read_chat_files(files: Sequence[Path], source: str) -> list[ChatExample]:
    """Every line of ``files`` as a checked ChatExample (blank lines skipped)."""
    examples = []
    for path in files:
        with open(path, encoding="utf-8", errors="strict") as fh:
            try:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        examples.append(parse_line(line, source, f"{path}:{n}"))
            except UnicodeDecodeError:
                raise UserError(f"{path}: not UTF-8 text; chat data is JSONL") from None
    return examples


def parse_line(line: str, source: str, where: str) -> ChatExample:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not JSON ({exc.msg}); chat data is one JSON object per line") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: a JSON {type(obj).__name__}, expected an object with 'messages' or "
                        "'instruction' and 'output'")
    if "messages" in obj:
        messages = obj.pop("messages")
        if not isinstance(messages, list) or not messages:
            raise UserError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    elif "instruction" in obj and "output" in obj:
        messages = instruction_messages(obj.pop("instruction"), obj.pop("input", None), obj.pop("output"), where)
    else:
        raise UserError(f"{where}: neither 'messages' nor 'instruction' + 'output'; keys: "
                        f"{', '.join(sorted(obj)) or 'none'}")
    messages = check_messages(messages, where)
    ex_id = obj.pop("id", None)
    return ChatExample(messages, source, where, None if ex_id is None else str(ex_id), obj)


def instruction_messages(instruction: Any, inp: Any, output: Any, where: str) -> list[dict[str, str]]:
    """user = instruction (+ "\\n\\n" + input when there is one), assistant = output."""
    for name, value in (("instruction", instruction), ("output", output)):
        if not isinstance(value, str):
            raise UserError(f"{where}: '{name}' must be a string, got {type(value).__name__}")
    if inp is not None and not isinstance(inp, str):
        raise UserError(f"{where}: 'input' must be a string, got {type(inp).__name__}")
    user = f"{instruction}\n\n{inp}" if inp else instruction
    return [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def check_messages(messages: list[Any], where: str) -> list[dict[str, str]]:
    """The conversation as plain {role, content} dicts, or a UserError saying what stops it being trained on."""
    out = []
    for k, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise UserError(f"{where}: message {k} is a {type(msg).__name__}, expected {{role, content}}")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise UserError(f"{where}: message {k} has role {role!r}; roles are {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise UserError(f"{where}: message {k} ({role}) content must be a string, got {type(content).__name__}")
        if role == "assistant" and not content.strip():
            raise UserError(f"{where}: message {k} is an assistant turn with empty content; nothing to learn")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise UserError(f"{where}: no assistant turn; an SFT example needs an answer to learn")
    if out[-1]["role"] != "assistant":
        raise UserError(f"{where}: the conversation ends with a {out[-1]['role']} turn, not an assistant turn")
    return out
