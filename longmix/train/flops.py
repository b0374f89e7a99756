"""Model FLOPs and MFU. The attention term counts Σ doc_len² of the real documents, not seq_len²:
with document masking a packed 32K row of short documents does far less attention work than one
32K document, and counting seq_len² would overstate the utilisation.
"""

from __future__ import annotations

from typing import Any

import torch

# Dense bf16 peak per device, TFLOP/s (vendor datasheets, no sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that take part in matmuls: all but the input embedding (a lookup, no FLOPs).

    Under ZeRO-3 a parameter is partitioned and ``numel()`` is 0; ``ds_numel`` holds its full size.
    """
    embed = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else None
    total = 0
    for p in model.parameters():
        if p is embed:
            continue
        total += int(getattr(p, "ds_numel", p.numel()))
    return total


def step_flops(n_matmul_params: int, config: Any, tokens: int, attn_pairs: int) -> float:
    """Training FLOPs of one step: 6·N per token plus causal attention 6·layers·(heads·head_dim)·Σ len².

    Forward QKᵀ and AV each cost 2·d·L² for full attention, halved by causality: 2·d·L² per layer;
    backward doubles it again, so ×3.
    """
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    d_attn = config.num_attention_heads * head_dim
    return 6.0 * n_matmul_params * tokens + 6.0 * config.num_hidden_layers * d_attn * attn_pairs


def peak_flops_per_device(override_tflops: float | None, dtype: torch.dtype = torch.float32) -> tuple[float, str]:
    """(peak FLOP/s of this device, where the figure comes from): the recipe's value, else a known GPU's
    datasheet, else a measured one (an unknown GPU, any CPU), so MFU is reported everywhere."""
    if override_tflops:
        return override_tflops * 1e12, "logging.peak_tflops"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, tflops in PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"{key} datasheet"
    return measured_matmul_flops(dtype), "measured"


def measured_matmul_flops(dtype: torch.dtype, n: int = 1024, seconds: float = 0.3) -> float:
    """The best FLOP/s of square n x n matmuls on this device over about `seconds`, with the threads this process
    has (one OpenMP thread per rank on a CPU shared by two ranks): the attainable peak that a CPU's MFU divides
    by, since a CPU has no datasheet figure a training step could reach."""
    import time

    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    best, deadline = 0.0, time.perf_counter() + seconds
    while True:
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t))
        if time.perf_counter() > deadline:
            return best
