"""The GPT-2 network, and its nanochat variant, in one small file.

Parameter names follow GPT-2 (transformer.wte, transformer.h.N.attn.c_attn, ...), so the Hugging
Face mapping is a rename-free copy plus a transpose of the Conv1D weights.

architecture="nanochat" follows transformers' NanoChatForCausalLM: rotary positions (no wpe),
weightless RMSNorm (also after the embedding, and on q and k after the rotation), a ReLU² MLP, no
biases, an untied lm_head and a tanh soft-cap on the logits. Its parameters keep the GPT-2 names.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlab.config import ModelConfig
from gptlab.fused import relu_squared, rms_norm
from gptlab.kernels import Linear, attention_dtype

RMS_EPS = 1e-6  # NanoChatConfig.rms_norm_eps
ROPE_THETA = 10000.0  # NanoChatConfig's default rope_theta
SOFTCAP = 15.0  # NanoChatConfig.final_logit_softcapping


class RMSNorm(nn.Module):
    """RMSNorm without a learned scale, as nanochat has it."""

    def forward(self, x):
        return rms_norm(x, RMS_EPS)


def rotary(positions: torch.Tensor, head_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin (T, hs) of the rotary angles, computed as transformers computes them
    (float32); the sin's second half is negated, which `apply_rotary` needs (see there)."""
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, head_size, 2, dtype=torch.float, device=positions.device)
                                     / head_size))
    freqs = positions[:, None].float() * inv_freq  # (T, hs/2)
    sin = freqs.sin()
    return torch.cat((freqs, freqs), dim=-1).cos(), torch.cat((sin, -sin), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate each head's (first half, second half) pairs: x (..., T, hs). nanochat (rotating the other
    way from Llama) computes x * cos + cat(x2, -x1) * sin; a roll by half a head is cat(x2, x1), and
    the sin's negated half supplies the sign, in fewer ops and to the same bits (negation is exact)."""
    if cos.dtype != x.dtype:  # as transformers does; float32 angles would promote bf16 q, k
        cos, signed_sin = cos.to(x.dtype), signed_sin.to(x.dtype)
    return x * cos + x.roll(x.size(-1) // 2, -1) * signed_sin


def soft_cap(logits: torch.Tensor) -> torch.Tensor:
    """nanochat's tanh soft-cap: logits squashed smoothly into (-SOFTCAP, SOFTCAP)."""
    return SOFTCAP * torch.tanh(logits / SOFTCAP)


class KVCache:
    """Keys and values of the positions seen so far, preallocated to max_len positions.

    Layers write their keys and values for the new positions; `pos` moves on once the whole
    forward pass is done, so every layer sees the same offset. `dtype` is the model's; the cache
    holds its `attention_dtype` (float32 for a bf16 model where bf16 is emulated), and attention
    over the cache computes in that dtype.
    """

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int | None = None,
                 device=None, dtype=torch.float32):
        self.max_len = max_len or config.block_size
        shape = (config.n_layer, batch_size, config.n_head, self.max_len, config.head_size)
        dtype = attention_dtype(dtype, device or torch.get_default_device())
        # Uninitialised: positions are written before they are read, and zeroing GPT-2's 75 MB cost 17 ms.
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self._layers()
        self.pos = 0

    def _layers(self) -> None:
        # Each layer's view, made once: generation appends once per token and layer.
        self.layer_k, self.layer_v = self.k.unbind(0), self.v.unbind(0)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.pos + k.size(2)
        assert end <= self.max_len, "KV cache overflow: the caller must crop the context first"
        keys, values = self.layer_k[layer], self.layer_v[layer]
        keys[:, :, self.pos:end] = k
        values[:, :, self.pos:end] = v
        return keys[:, :, :end], values[:, :, :end]

    def advance(self, n: int) -> None:
        self.pos += n

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the rows named by `index` (beam search picks which beams survive)."""
        if index.numel() == self.k.size(1):
            # Only the filled positions: copying the whole preallocated buffer cost 100x more per beam step.
            self.k[:, :, :, :self.pos] = self.k[:, index, :, :self.pos]
            self.v[:, :, :, :self.pos] = self.v[:, index, :, :self.pos]
        else:  # the batch grows once, when the prompt's cache is copied to every beam
            self.k = self.k.index_select(1, index)
            self.v = self.v.index_select(1, index)
            self._layers()


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head = config.n_head
        self.nanochat = config.architecture == "nanochat"
        self.qk_norm = RMSNorm() if self.nanochat else None
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.biases)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.biases)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, layer: int = 0, cache: KVCache | None = None, return_attention: bool = False, rope=None):
        B, T, C = x.size()
        # One view and one permute for all three: generation runs this once per token and layer.
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        if self.nanochat:  # rotate, then normalise (nanochat's order), q and k in one go: the cache holds both done
            q, k = self.qk_norm(apply_rotary(qkv[:2], *rope)).unbind(0)
            v = qkv[2]
        else:
            q, k, v = qkv.unbind(0)
        past = 0
        if cache is not None:
            past = cache.pos
            k, v = cache.append(layer, k, v)  # (B, nh, past + T, hs)
            q = q.to(k.dtype)  # the cache's attention dtype (KVCache)

        mask = None
        if past and T > 1:
            # New queries sit at positions past..past+T-1: each sees all the cache and its own prefix.
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
        causal = mask is None and T > 1

        if return_attention:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, past + T)
            keep = mask if mask is not None else torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
            att = scores.masked_fill(~keep, float("-inf")).softmax(dim=-1)
            y = F.dropout(att, self.attn_dropout, self.training) @ v
        else:
            att = None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                               dropout_p=self.attn_dropout if self.training else 0.0)
        y = y.to(x.dtype).transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y)), att


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.biases)
        self.relu2 = config.architecture == "nanochat"
        self.gelu = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.biases)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.c_fc(x)
        h = relu_squared(h) if self.relu2 else self.gelu(h)
        return self.dropout(self.c_proj(h))


def norm(config: ModelConfig) -> nn.Module:
    return RMSNorm() if config.architecture == "nanochat" else nn.LayerNorm(config.n_embd, bias=config.biases)


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = norm(config)
        self.mlp = MLP(config)

    def forward(self, x, layer: int = 0, cache: KVCache | None = None, return_attention: bool = False, rope=None):
        a, att = self.attn(self.ln_1(x), layer, cache, return_attention, rope)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, att


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.nanochat = config.architecture == "nanochat"
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            **({} if self.nanochat else dict(wpe=nn.Embedding(config.block_size, config.n_embd))),  # rotary instead
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=norm(config),
        ))
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self._rotary: tuple[torch.Tensor, torch.Tensor] | None = None  # cos and sin of every position (nanochat)
        if not self.nanochat:
            self.lm_head.weight = self.transformer.wte.weight  # weight tying, as in GPT-2

        self.apply(self._init_weights)
        # GPT-2 scales the residual projections so the residual stream's variance does not grow with depth;
        # transformers' NanoChat._init_weights scales the attention's alone.
        scaled = "attn.c_proj.weight" if self.nanochat else "c_proj.weight"
        for name, p in self.named_parameters():
            if name.endswith(scaled):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def get_output_embeddings(self) -> nn.Linear:
        """The output head (transformers' name): optimisers treat it as an embedding, not a hidden matrix."""
        return self.lm_head

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def crop_block_size(self, block_size: int) -> None:
        """Shorten the context, keeping the first position embeddings (for fine-tuning on short text)."""
        if not 1 <= block_size <= self.config.block_size:
            raise ValueError(f"The context can only shrink: asked for {block_size}, the model has "
                             f"{self.config.block_size} positions.")
        self.config = self.config.replace(block_size=block_size)
        if self.nanochat:
            return  # rotary positions: no table to cut
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size].clone())

    def set_dropout(self, p: float) -> None:
        self.config = self.config.replace(dropout=p)
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.p = p
            elif isinstance(m, CausalSelfAttention):
                m.attn_dropout = p

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    def embed(self, idx, past: int = 0):
        """The residual stream entering the first block (B, T, C), and the rotary cos and sin (nanochat).
        Positions past..past+T-1 are rows of a table (wpe, or the rotary angles computed once per
        device): a slice, where an arange and a lookup per token were a tenth of a small model's
        generation step."""
        end = past + idx.size(1)
        if self.nanochat:
            cos, sin = self.rotary_table(idx.device)
            return self.transformer.drop(self.transformer.ln_f(self.transformer.wte(idx))), (cos[past:end], sin[past:end])
        return self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe.weight[past:end]), None

    def rotary_table(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Not a buffer, so the state dict stays transformers' and a copy built on the meta device makes its own.
        # Made outside inference mode: an inference tensor could not be saved for a later training step's backward.
        if self._rotary is None or self._rotary[0].device != device:
            with torch.inference_mode(False):
                self._rotary = rotary(torch.arange(self.config.block_size, device=device), self.config.head_size)
        return self._rotary

    def head(self, x):
        """Logits from the last residual stream: ln_f, lm_head and (nanochat) the soft-cap."""
        logits = self.lm_head(self.transformer.ln_f(x))
        return soft_cap(logits) if self.nanochat else logits

    def check_length(self, length: int) -> None:
        """Refuse a sequence longer than the context, saying how to fix it."""
        if length > self.config.block_size:
            raise ValueError(f"Sequence of {length} tokens is longer than the context length "
                             f"{self.config.block_size}; crop it to the last {self.config.block_size} tokens.")

    def forward(self, idx, targets=None, *, cache: KVCache | None = None, return_attention: bool = False,
                last_only: bool = False):
        """idx: (B, T) token ids. Returns (logits (B, T, vocab), loss or None), plus the per-layer
        attention weights [(B, nh, T, T_total)] when return_attention is set. last_only computes the
        logits of the last position alone (B, 1, vocab): all that generation needs."""
        B, T = idx.size()
        past = cache.pos if cache is not None else 0
        self.check_length(past + T)
        x, rope = self.embed(idx, past)  # (B, T, C)
        attentions = []
        for i, block in enumerate(self.transformer.h):
            x, att = block(x, i, cache, return_attention, rope)
            attentions.append(att)
        if cache is not None:
            cache.advance(T)
        if last_only:
            x = x[:, -1:]
        logits = self.head(x)  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        if return_attention:
            return logits, loss, attentions
        return logits, loss
