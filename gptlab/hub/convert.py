"""Configs and weights between gptlab's GPT and Hugging Face's GPT-2.

GPT-2's Hugging Face weights use the same names as ours; only its Conv1D layers store their
weights as (in, out) where nn.Linear stores (out, in).

This module does not import huggingface_hub: it maps dicts and tensors only. HubError, which every
gptlab.hub module raises, lives here because every other module of the package builds on this one.
"""

from __future__ import annotations

import torch

from gptlab.config import ConfigError, ModelConfig, to_dict
from gptlab.model import GPT
from gptlab.tokenizers import Tokenizer

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
CHARS_FILE = "vocab_chars.json"  # a char model's vocabulary: a JSON list, token id = position


class HubError(ValueError):
    """A Hugging Face model, folder or repository cannot be used; the message says why and what to do."""


# transformers' names for the activations gptlab computes (gelu_new is GPT-2's own).
HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


def config_from_hf(hf: dict, *, dropout: float = 0.0) -> ModelConfig:
    """A ModelConfig from a Hugging Face GPT-2 config.json (as a dict). Raises HubError listing every
    setting gptlab's GPT cannot reproduce (another architecture, another activation, ...)."""
    problems = []
    if hf.get("model_type") != "gpt2":
        problems.append(f"model_type is {hf.get('model_type')!r}, not 'gpt2': gptlab loads GPT-2 models only")
    missing = [k for k in ("vocab_size", "n_layer", "n_head", "n_embd") if not isinstance(hf.get(k), int)]
    if missing:
        problems.append(f"config.json lacks {', '.join(missing)}")
    activation = HF_ACTIVATIONS.get(hf.get("activation_function", "gelu_new"))
    unsupported = {
        "activation_function": (activation is not None,
                                f"the supported activations are {', '.join(sorted(HF_ACTIVATIONS))}"),
        "n_inner": (hf.get("n_inner") in (None, 4 * (hf.get("n_embd") or 0)), "the MLP must be 4 x n_embd wide"),
        "layer_norm_epsilon": (abs(hf.get("layer_norm_epsilon", 1e-5) - 1e-5) < 1e-12, "it must be 1e-5"),
        "scale_attn_weights": (hf.get("scale_attn_weights", True) is True, "attention must be scaled"),
        "scale_attn_by_inverse_layer_idx": (not hf.get("scale_attn_by_inverse_layer_idx", False), "it must be false"),
        "add_cross_attention": (not hf.get("add_cross_attention", False), "cross-attention is not supported"),
        "tie_word_embeddings": (hf.get("tie_word_embeddings", True) is not False, "the output layer must share wte"),
    }
    problems += [f"{key} is {hf.get(key)!r}: {why}" for key, (ok, why) in unsupported.items() if not ok]
    if not problems:
        try:
            return ModelConfig(vocab_size=hf["vocab_size"], block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
                               n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=dropout,
                               bias=True, activation=activation)
        except ConfigError as e:
            problems.append(str(e))
    raise HubError("This Hugging Face model cannot be loaded as a GPT-2:\n" + "\n".join(f"  - {p}" for p in problems))


def config_to_hf(config: ModelConfig, tokenizer: Tokenizer) -> dict:
    """A Hugging Face GPT-2 config.json (as a dict) for a gptlab model; transformers' GPT2LMHeadModel
    computes the same function. The "gptlab" entry lets load_pretrained rebuild the tokenizer."""
    eot = tokenizer.eot
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_ctx": config.block_size,
        "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": None,
        "activation_function": "gelu_new" if config.activation == "gelu_tanh" else "gelu",
        "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "scale_attn_weights": True, "tie_word_embeddings": True, "use_cache": True, "dtype": "float32",
        "bos_token_id": eot, "eos_token_id": eot,  # None for char models: they have no end-of-text token
        "gptlab": {"tokenizer": tokenizer.name, "model": to_dict(config)},
    }


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
    if "transformer.wte.weight" in out:
        out.setdefault("lm_head.weight", out["transformer.wte.weight"])
    return out


def to_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a gptlab GPT state dict to GPT2LMHeadModel's names. lm_head.weight is left out (transformers
    ties it to wte). A model built with bias=False gets zero biases, which compute exactly the same."""
    out = {}
    for name, tensor in sd.items():
        if name == "lm_head.weight":
            continue
        if name.endswith(".weight") and name.split(".")[-2] in ("c_attn", "c_proj", "c_fc", "ln_1", "ln_2", "ln_f"):
            bias = name[: -len("weight")] + "bias"
            if bias not in sd:
                out[bias] = torch.zeros(tensor.shape[0], dtype=tensor.dtype)  # Linear: (out, in); LayerNorm: (C,)
        if name.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        out[name] = tensor.detach().to("cpu").contiguous().clone()  # clone: no tensor may share memory in safetensors
    return out


def _load_weights(model: GPT, hf_sd: dict[str, torch.Tensor], where: str) -> None:
    sd = from_hf_state_dict(hf_sd)
    if "lm_head.weight" in hf_sd and not torch.equal(hf_sd["lm_head.weight"], sd["transformer.wte.weight"]):
        raise HubError(f"{where}: lm_head.weight differs from wte.weight, but GPT-2 (and gptlab) share one matrix.")
    expected = model.state_dict()
    missing, unexpected = sorted(expected.keys() - sd.keys()), sorted(sd.keys() - expected.keys())
    problems = [f"missing {', '.join(_short(missing))}"] if missing else []
    problems += [f"unexpected {', '.join(_short(unexpected))}"] if unexpected else []
    problems += [f"{k} has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}"
                 for k, v in expected.items() if k in sd and sd[k].shape != v.shape][:10]
    if problems:
        raise HubError(f"{where}: the weights do not match the model in config.json:\n"
                       + "\n".join(f"  - {p}" for p in problems))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, assign=True)
    model.lm_head.weight = model.transformer.wte.weight  # assign=True gave each name its own Parameter; tie again
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()]), "a tensor was left unloaded"


def _short(names: list[str], n: int = 8) -> list[str]:
    return names[:n] + ([f"... ({len(names) - n} more)"] if len(names) > n else [])
