"""Configs and weights between gptlab's GPT and Hugging Face's GPT-2 and NanoChat.

GPT-2's Hugging Face weights use the same names as ours; only its Conv1D layers store their
weights as (in, out) where nn.Linear stores (out, in). NanoChat's are renamed, and our fused c_attn
is split into q_proj, k_proj and v_proj.

This module does not import huggingface_hub: it maps dicts and tensors only. HubError, which every
gptlab.hub module raises, lives here because every other module of the package builds on this one.
"""

from __future__ import annotations

import torch

from gptlab.config import ConfigError, ModelConfig, to_dict
from gptlab.model import GPT, RMS_EPS, ROPE_THETA, SOFTCAP
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
    if hf.get("model_type") == "nanochat":
        return _nanochat_config_from_hf(hf, dropout)
    problems = []
    if hf.get("model_type") != "gpt2":
        problems.append(f"model_type is {hf.get('model_type')!r}: gptlab loads GPT-2 and NanoChat models only")
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


def _nanochat_config_from_hf(hf: dict, dropout: float) -> ModelConfig:
    problems = []
    missing = [k for k in ("vocab_size", "num_hidden_layers", "num_attention_heads", "hidden_size")
               if not isinstance(hf.get(k), int)]
    if missing:
        problems.append(f"config.json lacks {', '.join(missing)}")
    rope = hf.get("rope_parameters") or {}
    C = hf.get("hidden_size") or 0
    unsupported = {
        "hidden_act": (hf.get("hidden_act", "relu2") == "relu2", "the MLP must use relu2"),
        "intermediate_size": (hf.get("intermediate_size") == 4 * C, "the MLP must be 4 x hidden_size wide"),
        "num_key_value_heads": (hf.get("num_key_value_heads") in (None, hf.get("num_attention_heads")),
                                "grouped-query attention is not supported"),
        "head_dim": (hf.get("head_dim") in (None, C // max(1, hf.get("num_attention_heads") or 1)),
                     "it must be hidden_size / num_attention_heads"),
        "rms_norm_eps": (abs(hf.get("rms_norm_eps", RMS_EPS) - RMS_EPS) < 1e-12, f"it must be {RMS_EPS}"),
        "final_logit_softcapping": (hf.get("final_logit_softcapping", SOFTCAP) == SOFTCAP, f"it must be {SOFTCAP}"),
        "rope_parameters": (rope.get("rope_type", "default") == "default"
                            and rope.get("rope_theta", ROPE_THETA) == ROPE_THETA,
                            f"only default rotary embeddings with rope_theta {ROPE_THETA} are supported"),
        "attention_bias": (not hf.get("attention_bias", False), "nanochat in gptlab has no biases"),
        "tie_word_embeddings": (not hf.get("tie_word_embeddings", False), "the output layer must be untied"),
    }
    problems += [f"{key} is {hf.get(key)!r}: {why}" for key, (ok, why) in unsupported.items() if not ok]
    if not problems:
        try:
            return ModelConfig(vocab_size=hf["vocab_size"], block_size=hf.get("max_position_embeddings", 2048),
                               n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"], n_embd=C,
                               dropout=dropout, bias=False, architecture="nanochat")
        except ConfigError as e:
            problems.append(str(e))
    raise HubError("This Hugging Face model cannot be loaded as a NanoChat:\n" + "\n".join(f"  - {p}" for p in problems))


def config_to_hf(config: ModelConfig, tokenizer: Tokenizer) -> dict:
    """A Hugging Face GPT-2 (or NanoChat) config.json (as a dict) for a gptlab model; transformers'
    GPT2LMHeadModel (NanoChatForCausalLM) computes the same function. The "gptlab" entry lets
    load_pretrained rebuild the tokenizer."""
    eot = tokenizer.eot
    if config.architecture == "nanochat":
        return {
            "architectures": ["NanoChatForCausalLM"], "model_type": "nanochat",
            "vocab_size": config.vocab_size, "max_position_embeddings": config.block_size,
            "hidden_size": config.n_embd, "intermediate_size": 4 * config.n_embd,
            "num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
            "num_key_value_heads": config.n_head, "hidden_act": "relu2", "rms_norm_eps": RMS_EPS,
            "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
            "final_logit_softcapping": SOFTCAP, "attention_bias": False, "attention_dropout": 0.0,
            "initializer_range": 0.02, "tie_word_embeddings": False, "use_cache": True, "dtype": "float32",
            # pad_token_id None: transformers would give that row of the embedding no gradient.
            "bos_token_id": eot, "eos_token_id": eot, "pad_token_id": None,
            "gptlab": {"tokenizer": tokenizer.name, "model": to_dict(config)},
        }
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
    the 'transformer.' prefix) to gptlab names. Attention mask buffers are dropped. A NanoChat state
    dict (model.layers.N.self_attn.q_proj, ...) is recognised by its names."""
    if any(name.startswith(("model.embed_tokens", "embed_tokens")) for name in sd):
        return _from_nanochat(sd)
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
    ties it to wte). A model built with bias=False gets zero biases, which compute exactly the same.
    A nanochat model (no wpe) gets NanoChatForCausalLM's names."""
    if "transformer.wpe.weight" not in sd:
        return _to_nanochat(sd)
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


# NanoChat's names for each block's weights, beside ours; c_attn is q_proj, k_proj and v_proj stacked.
NANOCHAT_BLOCK = {"attn.c_proj.weight": "self_attn.o_proj.weight", "mlp.c_fc.weight": "mlp.fc1.weight",
                  "mlp.c_proj.weight": "mlp.fc2.weight"}
QKV = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight")


def _to_nanochat(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {"model.embed_tokens.weight": sd["transformer.wte.weight"], "lm_head.weight": sd["lm_head.weight"]}
    for name, tensor in sd.items():
        if not name.startswith("transformer.h."):
            continue
        layer, rest = name[len("transformer.h."):].split(".", 1)
        if rest == "attn.c_attn.weight":
            out.update({f"model.layers.{layer}.{q}": t for q, t in zip(QKV, tensor.chunk(3, dim=0))})
        else:
            out[f"model.layers.{layer}.{NANOCHAT_BLOCK[rest]}"] = tensor
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def _from_nanochat(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd = {name if name.startswith(("model.", "lm_head.")) else "model." + name: t for name, t in sd.items()}
    theirs = {v: k for k, v in NANOCHAT_BLOCK.items()}
    out, qkv = {}, {}
    for name, tensor in sd.items():
        if name == "model.embed_tokens.weight":
            out["transformer.wte.weight"] = tensor
        elif name == "lm_head.weight":
            out[name] = tensor
        elif name.startswith("model.layers."):
            layer, rest = name[len("model.layers."):].split(".", 1)
            if rest in QKV:
                qkv.setdefault(layer, {})[rest] = tensor
            else:  # an unknown name stays as it is, so that _load_weights reports it
                out[f"transformer.h.{layer}.{theirs.get(rest, rest)}"] = tensor
        else:
            out[name] = tensor
    for layer, parts in qkv.items():
        if len(parts) == 3:
            out[f"transformer.h.{layer}.attn.c_attn.weight"] = torch.cat([parts[q] for q in QKV])
        else:
            out.update({f"model.layers.{layer}.{q}": t for q, t in parts.items()})
    return {k: v.contiguous() for k, v in out.items()}


def _load_weights(model: GPT, hf_sd: dict[str, torch.Tensor], where: str) -> None:
    sd = from_hf_state_dict(hf_sd)
    if not model.nanochat and "lm_head.weight" in hf_sd and not torch.equal(hf_sd["lm_head.weight"], sd["transformer.wte.weight"]):
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
    if not model.nanochat:
        model.lm_head.weight = model.transformer.wte.weight  # assign=True gave each name its own Parameter; tie again
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()]), "a tensor was left unloaded"


def _short(names: list[str], n: int = 8) -> list[str]:
    return names[:n] + ([f"... ({len(names) - n} more)"] if len(names) > n else [])
