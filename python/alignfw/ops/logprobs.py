"""Per-token log-probabilities (placeholder reference until the Triton kernel lands; same API)."""

from __future__ import annotations

import torch

__all__ = ["logprobs_from_hidden", "logprobs_from_logits"]


def logprobs_from_logits(logits, targets, *, temperature=1.0, ignore_index=-100, return_entropy=False):
    logits = logits.float() / temperature
    logp = logits.log_softmax(-1)
    valid = targets != ignore_index
    lp = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
    if return_entropy:
        ent = -(logp.exp() * logp).sum(-1) * valid
        return lp, ent
    return lp


def logprobs_from_hidden(hidden, weight, targets, *, bias=None, temperature=1.0, ignore_index=-100, return_entropy=False, chunk_size=4096):
    shape = targets.shape
    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1)
    lps, ents = [], []
    for i in range(0, h.shape[0], chunk_size):
        logits = torch.nn.functional.linear(h[i : i + chunk_size], weight, bias)
        r = logprobs_from_logits(logits, t[i : i + chunk_size], temperature=temperature, ignore_index=ignore_index, return_entropy=return_entropy)
        if return_entropy:
            lps.append(r[0]); ents.append(r[1])
        else:
            lps.append(r)
    lp = torch.cat(lps).reshape(shape)
    return (lp, torch.cat(ents).reshape(shape)) if return_entropy else lp
