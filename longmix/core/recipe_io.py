"""Recipe plumbing shared by every recipe kind (data, training, ablation suites): the strict pydantic base,
YAML loading with `extends`, deep merge, one settings hash, and pydantic errors as one clear line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from longmix.core.errors import UserError


class Strict(BaseModel):
    """Unknown keys are errors; recipes are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def unique_names(items: list[Any], what: str = "source") -> list[Any]:
    """``items`` (each with a ``name``), or a ValueError naming the repeated names: a recipe's sources are
    addressed by name (weights, shares, doc_sources), so two with one name would be silently merged."""
    names = [i.name for i in items]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what} names must be unique; repeated: {', '.join(dupes)}")
    return items


def settings_hash(*parts: Any) -> str:
    """A short, stable hash of settings (pydantic models or JSON-able values): what decides whether a
    finished stage can be reused."""
    blob = json.dumps([p.model_dump() if isinstance(p, BaseModel) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _format_error(where: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key '{loc}'")
        elif e["type"] == "missing":
            lines.append(f"{where}: missing required key '{loc}'")
        else:
            lines.append(f"{where}: {loc}: {e['msg']}" if loc else f"{where}: {e['msg']}")
    return "; ".join(lines)


def parse_model(model: type[BaseModel], data: Any, where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise UserError(_format_error(where, err)) from None


MAX_RECIPE_BYTES = 8 << 20
MAX_RECIPE_NODES = 1_000_000  # values after aliases are expanded: a "billion laughs" bomb stops here
MAX_RECIPE_DEPTH = 64


def _check_size(node: yaml.Node, where: str) -> None:
    """Refuse a YAML graph whose expanded tree (aliases counted every time they are used) or nesting is too
    big: validation and merging walk the expanded tree, so an alias bomb would otherwise take all memory."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(node, 1, False)]
    while stack:
        n, depth, done = stack.pop()
        if depth > MAX_RECIPE_DEPTH:
            raise UserError(f"{where}: nested deeper than {MAX_RECIPE_DEPTH} levels; a recipe is a shallow mapping")
        if id(n) in size and not done:
            continue
        if isinstance(n, yaml.ScalarNode):
            size[id(n)] = 1
            continue
        kids = [x for pair in n.value for x in pair] if isinstance(n, yaml.MappingNode) else list(n.value)
        if not done:
            stack.append((n, depth, True))
            stack.extend((k, depth + 1, False) for k in kids if id(k) not in size)
            continue
        size[id(n)] = 1 + sum(size.get(id(k), 1) for k in kids)
        if size[id(n)] > MAX_RECIPE_NODES:
            raise UserError(f"{where}: expands to more than {MAX_RECIPE_NODES:,} values (YAML aliases used over and "
                            "over); write the recipe out instead")


def load_yaml(path: str | Path) -> Any:
    """A recipe file (of any kind) as plain data: safe YAML only, bounded in size, expansion and depth."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe '{path}' not found")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise UserError(f"{path}: {path.stat().st_size / 2**20:.0f} MiB; a recipe is at most "
                        f"{MAX_RECIPE_BYTES >> 20} MiB")
    loader = yaml.SafeLoader(path.read_text())
    try:
        node = loader.get_single_node()
        if node is None:
            data = None
        else:
            _check_size(node, str(path))
            data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise UserError(f"{path}: nested deeper than {MAX_RECIPE_DEPTH} levels; a recipe is a shallow mapping") \
            from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe is a YAML mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else (lists included) in `override` replaces the base's."""
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def load_with_extends(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe may start from another: `extends: base.yaml` (relative to it), then override keys."""
    path = Path(path).resolve()
    if path in seen:
        raise UserError(f"{path}: `extends` loops back to itself")
    data = load_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise UserError(f"{path}: `extends` takes one file name")
    return deep_merge(load_with_extends(path.parent / parent, (*seen, path)), data)
