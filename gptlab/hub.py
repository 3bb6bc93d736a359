"""Hugging Face interop: GPT-2 weights in, Hugging Face format out, and pushing to the Hub.

GPT-2's Hugging Face weights use the same names as ours; only its Conv1D layers store their
weights as (in, out) where nn.Linear stores (out, in). Weights are read from safetensors files
only: pickled pytorch_model.bin files can run code when loaded, so they are refused.

This is the only gptlab module that imports huggingface_hub. It never imports transformers: the
folders it writes are checked against transformers in the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import httpx2
import torch
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
                                    LocalTokenNotFoundError, RemoteEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gptlab.checkpoint import CONFIG_FILE, FORMAT, WEIGHTS_FILE, Checkpoint, load_checkpoint, save_checkpoint
from gptlab.config import ConfigError, ModelConfig, to_dict
from gptlab.hf_tokenizer import VOCAB_FILE, is_gpt2_vocab, write_gpt2_tokenizer
from gptlab.model import GPT
from gptlab.runfolder import BEST, INIT, LAST, LOSS_PLOT
from gptlab.tokenizers import CharTokenizer, GPT2Tokenizer, Tokenizer

__all__ = ["HubError", "PretrainedModel", "HUB_ALIASES", "config_from_hf", "config_to_hf", "from_hf_state_dict",
           "to_hf_state_dict", "load_pretrained", "import_pretrained", "export_hf", "push_to_hub", "model_card"]

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
INDEX_FILE = "model.safetensors.index.json"  # sharded safetensors: maps each tensor to its shard
CHARS_FILE = "vocab_chars.json"  # a char model's vocabulary: a JSON list, token id = position
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
# Files an export may write. A push deletes these from the repository unless it uploads them again, so
# nothing stale (say, GPT-2 tokenizer files beside a char model) outlives a new push; others are kept.
EXPORT_FILES = ("model.safetensors", "model.safetensors.index.json", "model-*.safetensors", "vocab.json",
                "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "generation_config.json", "vocab_chars.json", LOSS_PLOT)

# Short names for the GPT-2 checkpoints OpenAI released; all use GPT-2's BPE and the MIT license.
HUB_ALIASES = {name: f"openai-community/{name}" for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")}
HUB_ALIASES["distilgpt2"] = "distilbert/distilgpt2"
KNOWN_LICENSES = {repo: "mit" for repo in HUB_ALIASES.values()} | {"distilbert/distilgpt2": "apache-2.0"}


class HubError(ValueError):
    """A Hugging Face model, folder or repository cannot be used; the message says why and what to do."""


class PretrainedModel(NamedTuple):
    model: GPT
    model_config: ModelConfig
    tokenizer: Tokenizer
    source: str  # the Hub repo id, or the local folder's absolute path
    revision: str | None  # the commit the files came from (Hub only)


# --------------------------------------------------------------------------------------------
# Configs and weights


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


# --------------------------------------------------------------------------------------------
# Reading from the Hub or a local folder


class _Absent(Exception):
    """A file is not in the repository (offline=False) or not in the cache while offline."""

    def __init__(self, offline: bool):
        self.offline = offline


def _offline_message(repo_id: str, cache_dir, local_files_only: bool = False) -> str:
    why = ("local_files_only is set" if local_files_only else
           "offline mode is on (HF_HUB_OFFLINE)" if constants.HF_HUB_OFFLINE else "the Hub could not be reached")
    return (f"Could not download {repo_id} from the Hugging Face Hub and it is not in the local cache "
            f"({why}; cache: {cache_dir or constants.HF_HUB_CACHE}). Connect to the internet, or pass a local "
            "folder that holds config.json and model.safetensors.")


def _download(repo_id: str, filename: str, *, revision, cache_dir, local_files_only: bool) -> Path:
    """hf_hub_download with its errors turned into sentences; raises _Absent when the file is missing."""
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                    local_files_only=local_files_only))
    except RemoteEntryNotFoundError:
        raise _Absent(offline=False) from None
    except LocalEntryNotFoundError:  # offline, or the network failed, and the file is not cached
        raise _Absent(offline=True) from None
    except GatedRepoError:
        raise HubError(f"{repo_id} is gated: accept its terms at https://huggingface.co/{repo_id}, then log in "
                       "(`hf auth login`) or set HF_TOKEN.") from None
    except RepositoryNotFoundError:
        raise HubError(f"There is no model {repo_id!r} on the Hugging Face Hub, or it is private (log in with "
                       "`hf auth login` or set HF_TOKEN). For a folder on this computer, check the path.") from None
    except RevisionNotFoundError:
        raise HubError(f"{repo_id} has no revision {revision!r}; use a branch, tag or commit that exists.") from None
    except HfHubHTTPError as e:
        raise HubError(f"The Hugging Face Hub refused to send {filename} from {repo_id} "
                       f"(HTTP {e.response.status_code}); try again later, or log in if the model is private."
                       ) from None
    except (ConnectionError, httpx2.TransportError):  # e.g. a proxy error, which hf_hub_download re-raises
        raise HubError(_offline_message(repo_id, cache_dir)) from None


def _is_local(name_or_path: str) -> bool:
    path = Path(name_or_path).expanduser()
    return path.exists() or name_or_path.startswith((".", "/", "~", "\\")) or name_or_path.count("/") > 1


def _local_files(folder: Path) -> tuple[Path, list[Path], Path | None]:
    if not folder.is_dir():
        raise HubError(f"{folder} is not a folder. Pass a folder in Hugging Face layout (config.json and "
                       "model.safetensors) or a Hub model name such as openai-community/gpt2.")
    if not (folder / CONFIG_FILE).is_file():
        raise HubError(f"{folder} has no config.json, so it is not a Hugging Face model folder.")
    if (folder / WEIGHTS_FILE).is_file():
        weights = [folder / WEIGHTS_FILE]
    elif (folder / INDEX_FILE).is_file():
        weights = [folder / name for name in _shard_names(folder / INDEX_FILE)]
    else:
        pickles = [name for name in PICKLE_FILES if (folder / name).is_file()]
        if pickles:
            raise HubError(f"{folder} holds only {', '.join(pickles)}, and gptlab loads safetensors only (pickle files "
                           "can run code when loaded). Convert it with transformers: GPT2LMHeadModel.from_pretrained"
                           "(folder).save_pretrained(folder) writes model.safetensors.")
        raise HubError(f"{folder} has no model.safetensors (or {INDEX_FILE}).")
    missing = [p.name for p in weights if not p.is_file()]
    if missing:
        raise HubError(f"{folder} lacks the weight shard(s) {', '.join(missing)} named in {INDEX_FILE}.")
    return folder / CONFIG_FILE, weights, folder


def _shard_names(index: Path) -> list[str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return sorted(set(weight_map.values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise HubError(f"{index} is not a valid safetensors index ({e}).") from None


def _hub_files(repo_id: str, **kw) -> tuple[Path, list[Path], None]:
    offline = HubError(_offline_message(repo_id, kw["cache_dir"], kw["local_files_only"]))
    try:
        config = _download(repo_id, CONFIG_FILE, **kw)
    except _Absent as e:
        no_config = HubError(f"{repo_id} has no config.json, so it is not a transformers model.")
        raise offline if e.offline else no_config from None
    try:
        return config, [_download(repo_id, WEIGHTS_FILE, **kw)], None
    except _Absent as e:
        single_offline = e.offline
    try:  # no single file: perhaps sharded safetensors
        index = _download(repo_id, INDEX_FILE, **kw)
    except _Absent as e:
        if single_offline or e.offline:
            raise offline from None
        pickled = _remote_has_pickles(repo_id, kw["revision"])
        raise HubError(f"{repo_id} has no model.safetensors" + (f", only {pickled}" if pickled else "")
                       + ". gptlab loads safetensors only, because pickle files can run code when loaded.") from None
    try:
        return config, [_download(repo_id, name, **kw) for name in _shard_names(index)], None
    except _Absent as e:
        raise offline if e.offline else HubError(f"{repo_id} lacks a weight shard named in {INDEX_FILE}.") from None


def _remote_has_pickles(repo_id: str, revision) -> str | None:
    try:
        return "pytorch_model.bin" if HfApi().file_exists(repo_id, "pytorch_model.bin", revision=revision) else None
    except Exception:  # only used to improve a message that is about to be raised anyway
        return None


def _read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HubError(f"{what} is not valid JSON ({e}).") from None
    if not isinstance(value, dict):
        raise HubError(f"{what} is not a JSON object.")
    return value


def _tokenizer_for(hf: dict, folder: Path | None, repo_id: str | None, kw: dict, where: str) -> Tokenizer:
    """The tokenizer that goes with the weights: the char vocabulary of a gptlab export, else GPT-2's BPE
    (checked against the model's own vocab.json where it is at hand)."""
    if (hf.get("gptlab") or {}).get("tokenizer") == "char":
        try:
            path = folder / CHARS_FILE if folder else _download(repo_id, CHARS_FILE, **kw)
            return CharTokenizer(json.loads(path.read_text(encoding="utf-8")))
        except (_Absent, OSError, ValueError, TypeError):
            raise HubError(f"{where} is a gptlab character model, but its {CHARS_FILE} is missing or damaged."
                           ) from None
    if hf["vocab_size"] < GPT2Tokenizer().vocab_size:
        raise HubError(f"{where} has {hf['vocab_size']} tokens, fewer than GPT-2's 50257, so it uses another "
                       "tokenizer, which gptlab cannot use.")
    vocab = None
    if folder is not None and (folder / VOCAB_FILE).is_file():
        vocab = folder / VOCAB_FILE
    elif repo_id is not None and repo_id not in HUB_ALIASES.values():
        try:
            vocab = _download(repo_id, VOCAB_FILE, **kw)
        except _Absent:
            pass
    if vocab is not None and not is_gpt2_vocab(_read_json(vocab, f"{where}/{VOCAB_FILE}")):
        raise HubError(f"{where} uses its own tokenizer (its vocab.json is not GPT-2's); gptlab can only pair "
                       "GPT-2 weights with GPT-2's BPE.")
    return GPT2Tokenizer()


def load_pretrained(name_or_path: str | os.PathLike, *, cache_dir=None, revision: str | None = None,
                    local_files_only: bool = False, dropout: float = 0.0) -> PretrainedModel:
    """Load a GPT-2 from the Hugging Face Hub or from a local folder in Hugging Face layout.

    name_or_path: a Hub repo id ("openai-community/gpt2"), a short name (gpt2, gpt2-medium, gpt2-large,
    gpt2-xl, distilgpt2) or a folder holding config.json and model.safetensors (or sharded safetensors).
    Hub files go through huggingface_hub's cache (cache_dir, default ~/.cache/huggingface/hub), so a
    model downloaded once loads offline. Raises HubError with a sentence on what to do.
    """
    name = str(name_or_path)
    kw = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    if _is_local(name):
        repo_id, where = None, str(Path(name).expanduser().resolve())
        config_path, weight_paths, folder = _local_files(Path(where))
    else:
        repo_id = where = HUB_ALIASES.get(name, name)
        try:
            validate_repo_id(repo_id)
        except HFValidationError:
            raise HubError(f"{name!r} is neither a folder nor a Hugging Face model name like "
                           "openai-community/gpt2.") from None
        config_path, weight_paths, folder = _hub_files(repo_id, **kw)
    hf = _read_json(config_path, f"{where}/config.json")
    if hf.get("format") == FORMAT:
        raise HubError(f"{where} is a gptlab checkpoint already; use it as it is (no import needed).")
    config = config_from_hf(hf, dropout=dropout)
    tokenizer = _tokenizer_for(hf, folder, repo_id, kw, where)
    hf_sd = {}
    for path in weight_paths:
        try:
            hf_sd.update(load_file(str(path)))
        except (SafetensorError, OSError) as e:
            raise HubError(f"{where}: {path.name} cannot be read as safetensors ({e}).") from None
    with torch.device("meta"):  # no time or memory spent on random weights that are about to be replaced
        model = GPT(config)
    _load_weights(model, hf_sd, where)
    commit = weight_paths[0].parent.name if repo_id else None  # hub files live in snapshots/<commit>/
    return PretrainedModel(model.eval(), config, tokenizer, repo_id or where, commit)


def import_pretrained(name_or_path: str | os.PathLike, out_dir, *, cache_dir=None, revision: str | None = None,
                      local_files_only: bool = False, dropout: float = 0.0) -> Path:
    """Load a GPT-2 (see load_pretrained) and save it as a gptlab checkpoint folder at out_dir, ready
    for sampling or for `train --init-from`. Its extra records "source" (repo id or folder),
    "source_revision" (the commit, Hub only) and "license" (when known). Returns out_dir."""
    loaded = load_pretrained(name_or_path, cache_dir=cache_dir, revision=revision,
                             local_files_only=local_files_only, dropout=dropout)
    extra = {"source": loaded.source}
    if loaded.revision:
        extra["source_revision"] = loaded.revision
    if loaded.source in KNOWN_LICENSES:
        extra["license"] = KNOWN_LICENSES[loaded.source]
    return save_checkpoint(out_dir, loaded.model, loaded.model_config, loaded.tokenizer, extra=extra)


# --------------------------------------------------------------------------------------------
# Writing Hugging Face folders and pushing them


def _write_export(ckpt: Checkpoint, folder: Path, repo_id: str | None) -> None:
    model = ckpt.load_model("cpu")
    save_file(to_hf_state_dict(model.state_dict()), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    hf = config_to_hf(ckpt.model_config, ckpt.tokenizer)
    (folder / CONFIG_FILE).write_text(json.dumps(hf, indent=2), encoding="utf-8")
    if isinstance(ckpt.tokenizer, GPT2Tokenizer):
        write_gpt2_tokenizer(folder, ckpt.model_config.block_size)
    elif isinstance(ckpt.tokenizer, CharTokenizer):
        (folder / CHARS_FILE).write_text(json.dumps(ckpt.tokenizer.chars, ensure_ascii=False), encoding="utf-8")
    plot = find_loss_plot(ckpt.path)
    if plot is not None:
        shutil.copyfile(plot, folder / LOSS_PLOT)
    card = model_card(ckpt, repo_id=repo_id, loss_plot=LOSS_PLOT if plot is not None else None)
    (folder / "README.md").write_text(card, encoding="utf-8")


def export_hf(checkpoint_dir, out_dir, *, repo_id: str | None = None) -> Path:
    """Write a gptlab checkpoint as a Hugging Face GPT-2 folder that transformers'
    GPT2LMHeadModel.from_pretrained(out_dir) loads: config.json, model.safetensors, README.md (the model
    card; repo_id names the model in it) and loss.png when the run has one. GPT-2 BPE models also get
    vocab.json, merges.txt and tokenizer_config.json for AutoTokenizer; char models get vocab_chars.json
    (a JSON list: token id = position). out_dir must be new, empty, or an earlier export; it is replaced
    whole. Returns out_dir."""
    ckpt = load_checkpoint(checkpoint_dir)
    out = Path(out_dir).expanduser()
    if out.resolve() == ckpt.path.resolve():
        raise HubError("Export to a folder other than the checkpoint itself; both use config.json.")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _is_export(out))):
        raise HubError(f"{out} already exists and is not an earlier export; choose a new or empty folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _write_export(ckpt, tmp, repo_id)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _is_export(folder: Path) -> bool:
    try:
        hf = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        return hf.get("model_type") == "gpt2" and "gptlab" in hf
    except (OSError, ValueError, AttributeError):
        return False


def push_to_hub(checkpoint_dir, repo_id: str, *, token: str | None = None, private: bool = False,
                commit_message: str | None = None, api: HfApi | None = None) -> str:
    """Export a checkpoint (see export_hf) into a temporary folder and upload it to the model repository
    repo_id ("user/name"), creating the repository if needed. token=None lets huggingface_hub find
    one (HF_TOKEN or `hf auth login`); the token is never printed, stored or put in a message.
    Returns the repository's URL. Raises HubError when the upload fails."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(f"{repo_id!r} is not a valid Hub repository name; use user/name, "
                       "e.g. alice/shakespeare-gpt.") from None
    api = api or HfApi()
    with tempfile.TemporaryDirectory(prefix="gptlab-push-") as tmp:
        folder = export_hf(checkpoint_dir, Path(tmp) / "export", repo_id=repo_id)
        try:
            url = api.create_repo(repo_id, token=token, private=private, exist_ok=True, repo_type="model")
            full_id = getattr(url, "repo_id", None) or repo_id  # a bare name gets the user's namespace
            api.upload_folder(repo_id=full_id, folder_path=str(folder), repo_type="model", token=token,
                              commit_message=commit_message or "Upload a GPT Lab model",
                              delete_patterns=list(EXPORT_FILES))
        except Exception as e:
            raise HubError(_scrub(_push_message(e, repo_id), token)) from None
    return str(url)


def _push_message(e: Exception, repo_id: str) -> str:
    if isinstance(e, LocalTokenNotFoundError):
        return "No Hugging Face token found: log in with `hf auth login`, set HF_TOKEN, or pass a token."
    if isinstance(e, (ConnectionError, httpx2.TransportError)):
        why = "offline mode is on (HF_HUB_OFFLINE)" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        return f"Could not upload to {repo_id} ({why}). Connect to the internet and try again."
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code
        if status == 401:
            return "The Hugging Face Hub did not accept the token (HTTP 401): log in again or use a valid token."
        if status == 403:
            return (f"The token may not write to {repo_id} (HTTP 403): use a token with write access, and a "
                    "namespace that is yours or your organisation's.")
        details = e.server_message or "no details"
        return f"The Hugging Face Hub refused the upload to {repo_id} (HTTP {status}): {details}."
    return f"Uploading to {repo_id} failed: {type(e).__name__}: {e}"


def _scrub(message: str, token: str | None) -> str:
    return message.replace(token, "***") if token else message


# --------------------------------------------------------------------------------------------
# The model card (README.md)

METRIC_LABELS = {"train_loss": "Training loss", "val_loss": "Validation loss", "best_val_loss": "Best validation loss"}
DATA_COUNTS = ("documents", "characters", "tokens", "train_tokens", "val_tokens", "vocab_used")
CARD_SKIPS_TRAIN = ("device", "compile", "log_interval", "sample_interval", "sample_tokens", "checkpoint_interval")


def find_loss_plot(checkpoint_dir) -> Path | None:
    """loss.png in the checkpoint folder or in the run folder that holds it, if either has one."""
    for folder in (Path(checkpoint_dir), Path(checkpoint_dir).parent):
        if (folder / LOSS_PLOT).is_file():
            return folder / LOSS_PLOT
    return None


def _hub_id(value) -> str | None:
    """value if it names a Hub repo; local paths are left out of a public card."""
    if not isinstance(value, str) or _is_local(value):
        return None
    try:
        validate_repo_id(value)
        return value
    except HFValidationError:
        return None


def _base_model(extra: dict) -> str | None:
    """The Hub model this one started from: extra["base_model"] or extra["source"], else those of the
    checkpoint named by extra["init_from"] (a fine-tuning run's starting point), if it is still there."""
    found = _hub_id(extra.get("base_model")) or _hub_id(extra.get("source"))
    if found is None and isinstance(extra.get("init_from"), str):
        try:
            parent = load_checkpoint(extra["init_from"]).extra
            found = _hub_id(parent.get("base_model")) or _hub_id(parent.get("source"))
        except (ValueError, OSError):  # moved or deleted since: the card just leaves the base model out
            pass
    return found


def _table(rows: list[tuple[str, object]], header: str = "Setting") -> str:
    def cell(v) -> str:
        text = f"{v:.5g}" if isinstance(v, float) and len(repr(v)) > 10 else str(v)
        return text.replace("|", "\\|").replace("\n", " ")
    return "\n".join([f"| {header} | Value |", "|---|---|"] + [f"| {cell(k)} | {cell(v)} |" for k, v in rows])


def model_card(checkpoint: Checkpoint | str | os.PathLike, *, repo_id: str | None = None,
               loss_plot: str | None = None) -> str:
    """README.md text for a checkpoint's Hugging Face repository: YAML metadata, model and training
    settings, the training data, the final losses, the loss plot (loss_plot: a file name beside the
    README) and how to use the model.

    Reads from checkpoint.extra: "data" ({"description", "sources", "documents", "characters", "tokens",
    "license"}; only the file names of sources are shown, never local paths), "stats" ({"train_tokens",
    "val_tokens", "vocab_used"}), "source" and "source_revision" (an imported model), "base_model" or
    "init_from" (where fine-tuning started) and "license". From checkpoint.metrics: train_loss, val_loss
    and best_val_loss; any other number there is listed too."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    cfg, char = ckpt.model_config, isinstance(ckpt.tokenizer, CharTokenizer)
    extra, metrics = ckpt.extra, ckpt.metrics
    data = extra.get("data") if isinstance(extra.get("data"), dict) else {}
    stats = extra.get("stats") if isinstance(extra.get("stats"), dict) else {}
    source, base = _hub_id(extra.get("source")), _base_model(extra)
    license_id = extra.get("license") or data.get("license") or KNOWN_LICENSES.get(base)
    name = repo_id or "path/to/this/folder"
    meta = ["---", "library_name: transformers", "pipeline_tag: text-generation"]
    meta += [f"license: {json.dumps(license_id)}"] if license_id else []
    meta += [f"base_model: {json.dumps(base)}"] if base else []
    meta += ["tags:", "- gptlab", "- gpt2"] + (["- character-level"] if char else []) + ["---", ""]

    run_label = ckpt.path.name in (BEST, LAST, INIT) or ckpt.path.name.startswith("step-")
    title = (repo_id or "").split("/")[-1] or (ckpt.path.parent.name if run_label else ckpt.path.name)
    out = meta + [f"# {title}", "",
                  f"A GPT-2 style language model made with GPT Lab: {cfg.num_params():,} parameters, {cfg.n_layer} "
                  f"layers, {cfg.n_head} heads, {cfg.n_embd}-wide, a context of {cfg.block_size} tokens. It loads "
                  "in transformers as `GPT2LMHeadModel`.", ""]
    if source:
        out += [f"The weights were imported from [{source}](https://huggingface.co/{source})"
                + (f" at commit `{extra['source_revision']}`." if extra.get("source_revision") else "."), ""]
    elif base:
        out += [f"Fine-tuned from [{base}](https://huggingface.co/{base}).", ""]

    out += ["## Model", "", _table([(k, v) for k, v in to_dict(cfg).items()]
                                   + [("parameters", f"{cfg.num_params():,}")]), ""]
    out += ["## Tokenizer", ""]
    if char:
        out += [f"Character level: {ckpt.tokenizer.vocab_size} characters, listed in `{CHARS_FILE}`; a "
                "character's token id is its position in that list. Hugging Face tokenizers do not apply to "
                "this model (see the example below).", ""]
    else:
        out += ["GPT-2's byte-level BPE (50,257 tokens); vocab.json and merges.txt are included, so "
                "`AutoTokenizer` loads it. (GPT Lab encodes a literal `<|endoftext|>` in text as plain text; "
                "the transformers tokenizer turns it into the end-of-text token.)", ""]

    out += ["## Training data", ""]
    if data or stats:
        out += [str(data["description"]), ""] if data.get("description") else []
        sources = [Path(str(p)).name for p in data.get("sources") or []]  # file names only: paths are private
        rows = [("sources", ", ".join(sources))] if sources else []
        rows += [(k, f"{counts[k]:,}") for k in DATA_COUNTS for counts in (data, stats)
                 if isinstance(counts.get(k), int) and not (counts is stats and k in data)]
        rows += [("license", data["license"])] if data.get("license") else []
        out += [_table(rows, "Data"), ""] if rows else []
    else:
        out += [f"Pretrained by the authors of {source}; see its model card." if source else "Not recorded.", ""]

    if ckpt.train_config is not None:
        rows = [(k, v) for k, v in to_dict(ckpt.train_config).items() if k not in CARD_SKIPS_TRAIN]
        out += ["## Training", "", f"Trained for {ckpt.step:,} steps with these settings:", "", _table(rows), ""]

    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if numbers or loss_plot:
        rows = [(METRIC_LABELS[k], numbers[k]) for k in METRIC_LABELS if k in numbers]
        if "val_loss" in numbers:
            rows.append(("Validation perplexity", float(torch.tensor(float(numbers["val_loss"])).exp())))
        rows += [(k, v) for k, v in numbers.items() if k not in METRIC_LABELS and k != "step"]
        out += ["## Results", ""] + ([_table(rows, "Metric"), ""] if rows else [])
        out += [f"![Training and validation loss]({loss_plot})", ""] if loss_plot else []

    out += ["## How to use", "", "```python"]
    if char:
        out += ["import json, torch", "from huggingface_hub import hf_hub_download",
                "from transformers import GPT2LMHeadModel", "",
                f'chars = json.load(open(hf_hub_download("{name}", "{CHARS_FILE}"), encoding="utf-8"))',
                f'model = GPT2LMHeadModel.from_pretrained("{name}")',
                f"ids = torch.tensor([[chars.index(c) for c in {_prompt(ckpt.tokenizer)!r}]])",
                f"out = model.generate(ids, max_new_tokens={max(1, min(200, cfg.block_size - 4))}, do_sample=True, "
                "pad_token_id=0)",
                'print("".join(chars[i] for i in out[0]))']
    else:
        out += ["from transformers import AutoTokenizer, GPT2LMHeadModel", "",
                f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
                f'model = GPT2LMHeadModel.from_pretrained("{name}")',
                'ids = tokenizer("Once upon a time", return_tensors="pt").input_ids',
                f"out = model.generate(ids, max_new_tokens={max(1, min(100, cfg.block_size - 4))}, do_sample=True, "
                "top_k=50)",
                "print(tokenizer.decode(out[0]))"]
    out += ["```", "", f"Back into GPT Lab: `python -m gptlab import --model {name} --out <checkpoint folder>`.", ""]
    out += ["## Limitations", "", "A small model imitates the style of the text it was trained on and makes things "
            "up; do not rely on what it writes for facts or for decisions about people."
            + (f" The limitations and biases of {base} apply too (see its model card)." if base else ""), ""]
    return "\n".join(out)


def _prompt(tokenizer: CharTokenizer) -> str:
    """A short prompt made of characters the vocabulary has, for the card's example."""
    return "".join([c for c in tokenizer.chars if c.isalpha()][:4]) or tokenizer.chars[0]
