"""RoPE changes on a transformers config: ABF, position interpolation, YaRN and dynamic NTK, written through
``config.rope_parameters`` (transformers 5 ignores a plain ``config.rope_theta = x``).

Most families keep one parameter set for every layer. Gemma 3 keys ``rope_parameters`` by layer type
(``full_attention``: base 1,000,000; ``sliding_attention``: base 10,000): its local layers only ever see a
window of a few hundred tokens, so a context extension changes the global layers alone, as Gemma 3's own
long-context recipe and OLMo 3's YaRN on its full-attention layers do. A change therefore applies to the
``full_attention`` entry by default, and to the layer types a caller names otherwise. Keys a change does not
own (``partial_rotary_factor`` of Phi-3) are kept.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from longmix.core.errors import UserError

# The RoPE kinds, listed once: the training recipe's field, the checks and the changes all read these.
RopeKind = Literal["keep", "abf", "linear", "yarn", "dynamic"]
KINDS: tuple[str, ...] = get_args(RopeKind)
SCALED_KINDS = ("linear", "yarn", "dynamic")  # the kinds that stretch positions by a factor
DEFAULT_LAYER_TYPES = ("full_attention",)
# Keys that belong to one scaling kind; a new kind drops the old kind's keys (ABF after YaRN is plain RoPE).
_SCALING_KEYS = ("factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow",
                 "short_factor", "long_factor", "low_freq_factor", "high_freq_factor", "mscale", "mscale_all_dim",
                 "truncate")


def is_per_layer_type(params: dict[str, Any]) -> bool:
    """True for ``{layer_type: {rope_type, rope_theta, ...}}`` (Gemma 3), False for one flat parameter set."""
    return bool(params) and all(isinstance(v, dict) for v in params.values())


def changed(current: dict[str, Any], kind: str, theta: float | None = None, factor: float | None = None,
            original_max: int | None = None) -> dict[str, Any]:
    """One flat parameter set with the change applied on top of ``current``."""
    if kind == "keep":
        return dict(current)
    kept = {k: v for k, v in current.items() if k not in _SCALING_KEYS and k not in ("rope_type", "rope_theta")}
    new_theta = theta if theta is not None else float(current.get("rope_theta", 10000.0))
    if kind == "abf":
        return {"rope_type": "default", "rope_theta": new_theta, **kept}
    params: dict[str, Any] = {"rope_type": kind, "rope_theta": new_theta, "factor": float(factor), **kept}
    if kind == "yarn":
        params["original_max_position_embeddings"] = original_max
    return params


def apply_change(current: dict[str, Any], kind: str, *, max_positions: int, theta: float | None = None,
                 factor: float | None = None, original_max: int | None = None,
                 layer_types: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """New ``rope_parameters``: the change on the named layer types of a per-layer-type config (default
    ``full_attention``), or on the single set of a flat one. YaRN's original length defaults to the model's
    current ``max_positions``."""
    if kind not in KINDS:
        raise UserError(f"rope kind must be one of {', '.join(KINDS)}, not {kind!r}")
    orig = original_max or max_positions
    if not is_per_layer_type(current):
        if layer_types is not None:
            raise UserError(f"rope.layer_types {list(layer_types)}: this model keeps one RoPE for every layer "
                            "(rope_parameters is not keyed by layer type); leave rope.layer_types out")
        return changed(current, kind, theta, factor, orig)
    targets = list(layer_types) if layer_types is not None else list(DEFAULT_LAYER_TYPES)
    unknown = [t for t in targets if t not in current]
    if unknown:
        raise UserError(f"rope.layer_types: {', '.join(unknown)} not among this model's layer types "
                        f"({', '.join(sorted(current))})")
    return {t: changed(p, kind, theta, factor, orig) if t in targets else dict(p) for t, p in current.items()}


def base_of(params: dict[str, Any], layer_type: str = "full_attention") -> float:
    """The RoPE base of a layer type (or of every layer, for a flat set)."""
    p = params.get(layer_type, {}) if is_per_layer_type(params) else params
    return float(p.get("rope_theta", 10000.0))
