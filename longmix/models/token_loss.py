"""Per-token losses of a causal LM, and the context gain of one document (short-context minus full-context
loss): shared by evaluation (context loss, context gain) and the longdep data stage.

For the token at position j (j tokens of context), the full-context loss comes from one forward over the
document; the short-context loss from sliding windows: windows of W + S tokens start every S tokens, and a
token is scored in the window that gives it between W and W + S - 1 tokens of context (``stride`` S = 1 is
exact truncation at W, at L forwards per document; the default S = W / 2 costs about 3 full forwards). A
token with j <= W has the same context either way, so its gain is 0 by definition.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Config fields of models whose logits are not just lm_head(hidden) (a head applied in pieces would skip them).
LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
HEAD_TOKENS = 1024  # tokens per piece of the output projection: Gemma 3's 262K vocabulary is 1 GiB per 1K tokens


def plain_head(config: Any) -> bool:
    """Whether the logits are the output embedding of the last hidden state and nothing more."""
    return all(getattr(config, f, None) in (None, 0, 1, 1.0, False) for f in LOGIT_POSTPROCESSING)


def token_losses(model: Any, batch: np.ndarray, device: str, pad_mask: np.ndarray | None = None) -> np.ndarray:
    """NLL (nats) of tokens 1..T-1 of each row given the tokens before it: shape (B, T-1); NaN at padding.

    The output projection runs in pieces of ``HEAD_TOKENS`` tokens when the model's head is plain, so the
    [tokens, vocabulary] logits never exist at once (8K tokens x 262K ids would be 8.6 GB in fp32)."""
    import torch

    ids = torch.as_tensor(batch, device=device)
    att = torch.as_tensor(pad_mask, device=device) if pad_mask is not None else None
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        # use_cache=False: nothing to reuse, and a cache would only cost memory.
        if plain_head(model.config) and ids.shape[1] > HEAD_TOKENS:
            hidden = model.base_model(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state
            head = model.get_output_embeddings()
            last = ids.shape[1] - 1  # position T-1 predicts nothing
            nll = torch.cat([ce(head(hidden[:, s:e]).float().transpose(1, 2), ids[:, s + 1 : e + 1], reduction="none")
                             for s in range(0, last, HEAD_TOKENS) for e in [min(s + HEAD_TOKENS, last)]], dim=1)
        else:
            logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits
            nll = ce(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
    out = nll.cpu().numpy().astype(np.float64)
    if pad_mask is not None:
        out[pad_mask[:, 1:] == 0] = np.nan
    return out


def short_context_losses(model: Any, ids: np.ndarray, window: int, stride: int, device: str,
                         batch_size: int = 8) -> np.ndarray:
    """NLL of tokens 1..n-1 given only W to W + S - 1 tokens of context (NaN for tokens with j <= W: their full
    context is already that short)."""
    n = len(ids)
    out = np.full(n - 1, np.nan)
    starts = list(range(0, max(n - window, 0), stride))
    span = window + stride
    for i in range(0, len(starts), batch_size):
        group = starts[i:i + batch_size]
        width = min(span, n - group[0])
        rows = np.stack([np.pad(ids[s:s + width], (0, max(0, width - (n - s))), constant_values=ids[0])[:width]
                         for s in group])  # right padding: causal attention keeps it out of earlier tokens
        nll = token_losses(model, rows, device)  # (B, width - 1): column k predicts token s + k + 1
        for r, s in enumerate(group):
            # targets j = s + W .. s + W + S - 1 (context j - s in [W, W + S)), column j - s - 1
            for j in range(max(s + window, window + 1), min(s + span, n)):
                out[j - 1] = nll[r, j - s - 1]
    return out


def document_gain(model: Any, ids: np.ndarray, window: int, stride: int | None = None, device: str = "cpu",
                  batch_size: int = 8) -> dict[str, np.ndarray]:
    """Per predicted token (positions 1..n-1) of one document: full-context loss, short-context loss, gain."""
    stride = stride or max(1, window // 2)
    full = token_losses(model, ids[None], device)[0]
    short = short_context_losses(model, ids, window, stride, device, batch_size)
    short = np.where(np.isnan(short), full, short)  # j <= W: the same context, so the same loss
    return {"full": full, "short": short, "gain": short - full}
