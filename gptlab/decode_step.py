"""One decoding step, one new token per sequence, in as few PyTorch calls as the model allows.

A small model's generation is bound by dispatch, not by arithmetic: each token costs many ATen and
nn.Module calls, microseconds each, around matmuls that take less. This step computes what
`GPT.forward(idx, cache=cache, last_only=True)` computes for one new token, with the same kernels in
the same order, but resolves once what the forward pass decides on every call: each Linear's
kernel, the modules' attributes, the cache's per-layer views. The forward pass stays the reference; the tests hold this step to it.

Inference only: no dropout, no autograd, no attention weights.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlab.fused import relu_squared, rms_norm
from gptlab.kernels import inference_linear
from gptlab.model import GPT, RMS_EPS, KVCache, apply_rotary, soft_cap


def _norm(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(module, nn.LayerNorm):  # F.layer_norm's own call, without its Python wrapper
        return functools.partial(torch.layer_norm, normalized_shape=module.normalized_shape, weight=module.weight,
                                 bias=module.bias, eps=module.eps)
    return functools.partial(rms_norm, eps=RMS_EPS)


def _layer(block: nn.Module, nanochat: bool, rows: int) -> tuple[Callable[[torch.Tensor], torch.Tensor], ...]:
    """(ln_1, c_attn, attn.c_proj, ln_2, c_fc, activation, mlp.c_proj): one block's calls for `rows`
    sequences, made once."""
    activation = relu_squared if nanochat else functools.partial(F.gelu, approximate=block.mlp.gelu.approximate)
    attn, mlp = block.attn, block.mlp
    return (_norm(block.ln_1), inference_linear(attn.c_attn, rows), inference_linear(attn.c_proj, rows),
            _norm(block.ln_2), inference_linear(mlp.c_fc, rows), activation, inference_linear(mlp.c_proj, rows))


class DecodeStep:
    """step(idx) -> float logits (B, V) of the next token, for idx (B,) the newest token of each
    sequence, whose earlier tokens `cache` holds. Advances the cache by one position, as the forward
    pass does. The kernels depend on the number of rows, so they are chosen once per batch size
    (beam search grows its batch once, from the prompt to the beams)."""

    def __init__(self, model: GPT, cache: KVCache):
        if model.training:
            raise ValueError("DecodeStep is for inference: put the model in eval mode first.")
        config = model.config
        self.model, self.cache = model, cache
        self.nanochat = model.nanochat
        self.n_head, self.head_size, self.width = config.n_head, config.head_size, config.n_embd
        t = model.transformer
        self.wte = t.wte.weight
        self.wpe = None if self.nanochat else t.wpe.weight
        self.ln_f = _norm(t.ln_f)
        self._calls: dict[int, tuple[list, Callable]] = {}  # batch size -> (the layers' calls, lm_head)

    def _calls_for(self, rows: int) -> tuple[list, Callable]:
        if rows not in self._calls:
            blocks = self.model.transformer.h
            self._calls[rows] = ([_layer(block, self.nanochat, rows) for block in blocks],
                                 inference_linear(self.model.lm_head, rows))
        return self._calls[rows]

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        cache, pos = self.cache, self.cache.pos
        self.model.check_length(pos + 1)
        B, nh, hs, C = idx.size(0), self.n_head, self.head_size, self.width
        layers, lm_head = self._calls_for(B)
        x = torch.embedding(self.wte, idx)  # (B, C)
        if self.nanochat:
            x = self.ln_f(x)
            cos, sin = self.model.rotary_table(x.device)
            cos, sin = cos[pos:pos + 1], sin[pos:pos + 1]  # (1, hs)
        else:
            x = x + self.wpe[pos]
        # Every layer writes position `pos` and reads positions 0..pos: the views for all layers at once.
        new_k, new_v = cache.k.narrow(3, pos, 1).unbind(0), cache.v.narrow(3, pos, 1).unbind(0)  # (B, nh, 1, hs)
        keys, values = cache.k.narrow(3, 0, pos + 1).unbind(0), cache.v.narrow(3, 0, pos + 1).unbind(0)
        for (ln_1, c_attn, attn_proj, ln_2, c_fc, activation, mlp_proj), slot_k, slot_v, k_all, v_all in zip(
                layers, new_k, new_v, keys, values):
            qkv = c_attn(ln_1(x)).view(B, 3, nh, 1, hs)
            if self.nanochat:  # rotate, then normalise, q and k together, as the forward pass does
                q, k = rms_norm(apply_rotary(qkv[:, :2], cos, sin), RMS_EPS).unbind(1)
                v = qkv[:, 2]
            else:
                q, k, v = qkv.unbind(1)  # (B, nh, 1, hs)
            slot_k.copy_(k)
            slot_v.copy_(v)
            y = F.scaled_dot_product_attention(q.to(k_all.dtype), k_all, v_all)  # (B, nh, 1, hs), the cache's dtype
            x = x + attn_proj(y.to(x.dtype).view(B, C))
            x = x + mlp_proj(activation(c_fc(ln_2(x))))
        cache.advance(1)
        logits = lm_head(self.ln_f(x))
        if self.nanochat:
            logits = soft_cap(logits)
        return logits.float()
