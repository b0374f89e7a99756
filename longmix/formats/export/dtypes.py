"""Which integer type holds the token ids, per format: chosen from the vocabulary like each format's own tools
do, or named by the user and refused (one line, before anything is written) when it cannot hold every id."""

from __future__ import annotations

import numpy as np

from longmix.core.errors import UserError


def token_dtype(fmt: str, allowed: tuple[str, ...], requested: str, vocab_size: int) -> np.dtype:
    """`allowed` lists the format's types, smallest first; "auto" takes the first that holds every id."""
    if requested != "auto" and requested not in allowed:
        raise UserError(f"{fmt} stores tokens as {', '.join(allowed)}; --dtype {requested} is not one of them")
    for name in (allowed if requested == "auto" else (requested,)):
        dtype = np.dtype(name)
        if vocab_size - 1 <= np.iinfo(dtype).max - _reserved(fmt, dtype):
            return dtype
        if requested != "auto":
            raise UserError(f"--dtype {name} cannot hold token ids up to {vocab_size - 1:,} (vocabulary "
                            f"{vocab_size:,}) for {fmt}: use a wider type or auto")
    raise UserError(f"no {fmt} token type holds a vocabulary of {vocab_size:,}")


def _reserved(fmt: str, dtype: np.dtype) -> int:
    # Megatron's own rule: uint16 only for a vocabulary under 65,500 (it keeps the top of the range free).
    return 37 if fmt == "megatron" and dtype == np.uint16 else 0
