"""No code from a model folder runs unless the user asks: a folder whose config names its own classes
(``auto_map`` in ``config.json`` or ``tokenizer_config.json``, pointing at ``*.py`` files beside it) is refused
in one line naming the option that allows it. Every transformers call is also made with an explicit
``trust_remote_code`` (never left to transformers' interactive prompt, which a piped ``yes`` answers)."""

from __future__ import annotations

import json
from pathlib import Path

from longmix.core.errors import UserError

_FILES = ("config.json", "tokenizer_config.json")


def custom_code(folder: Path) -> dict[str, str]:
    """{file: classes it maps} for each of the folder's configs that maps classes to its own code."""
    found = {}
    for name in _FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # transformers reports an unreadable config itself
        auto = data.get("auto_map") if isinstance(data, dict) else None
        if auto:
            found[name] = ", ".join(f"{k} -> {v}" for k, v in sorted(auto.items()) if isinstance(k, str))
    return found


def check_custom_code(folder: Path, trusted: bool, option: str) -> bool:
    """The ``trust_remote_code`` to pass for ``folder``: False unless it has custom code and ``trusted``;
    a folder with custom code that is not trusted is refused, naming ``option``."""
    found = custom_code(folder)
    if not found:
        return False
    if not trusted:
        where, classes = next(iter(found.items()))
        raise UserError(f"'{folder}' ships its own model code ({where}: auto_map {classes}); longmix runs no code "
                        f"from model folders unless you pass {option}")
    return True
