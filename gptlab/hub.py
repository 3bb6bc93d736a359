"""Hugging Face interop: GPT-2 weights in, Hugging Face format out.

GPT-2's Hugging Face weights use the same names as ours; only its Conv1D layers store their
weights as (in, out) where nn.Linear stores (out, in).
"""

from __future__ import annotations

import torch

from gptlab.config import ModelConfig

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def config_from_hf(hf: dict) -> ModelConfig:
    """A ModelConfig from a Hugging Face GPT-2 config.json (as a dict)."""
    return ModelConfig(vocab_size=hf["vocab_size"], block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
                       n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=0.0, bias=True)


def from_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a Hugging Face GPT-2 state dict (GPT2LMHeadModel's, or the Hub's GPT2Model file without
    the 'transformer.' prefix) to gptlab names. Attention mask buffers are dropped."""
    out = {}
    for name, tensor in sd.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers, not parameters
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name
        if name.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        out[name] = tensor.contiguous()
    out.setdefault("lm_head.weight", out["transformer.wte.weight"])
    return out
