"""GPT-2 from the Hugging Face Hub or from a local folder in Hugging Face layout, as a gptlab model
(load_pretrained) or checkpoint folder (import_pretrained).

Weights are read from safetensors files only: pickled pytorch_model.bin files can run code when
loaded, so they are refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import httpx2
import torch
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
                                    RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError
from safetensors.torch import load_file

from gptlab.checkpoint import CONFIG_FILE, FORMAT, WEIGHTS_FILE, save_checkpoint
from gptlab.config import ModelConfig
from gptlab.hub.convert import CHARS_FILE, HubError, _load_weights, config_from_hf
from gptlab.hub.hf_tokenizer import VOCAB_FILE, is_gpt2_vocab
from gptlab.model import GPT
from gptlab.tokenizers import CharTokenizer, GPT2Tokenizer, Tokenizer

INDEX_FILE = "model.safetensors.index.json"  # sharded safetensors: maps each tensor to its shard
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")

# Short names for the GPT-2 checkpoints OpenAI released; all use GPT-2's BPE and the MIT license.
HUB_ALIASES = {name: f"openai-community/{name}" for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")}
HUB_ALIASES["distilgpt2"] = "distilbert/distilgpt2"
KNOWN_LICENSES = {repo: "mit" for repo in HUB_ALIASES.values()} | {"distilbert/distilgpt2": "apache-2.0"}


class PretrainedModel(NamedTuple):
    model: GPT
    model_config: ModelConfig
    tokenizer: Tokenizer
    source: str  # the Hub repo id, or the local folder's absolute path
    revision: str | None  # the commit the files came from (Hub only)


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
    """Load a GPT-2 (or a NanoChat: model_type "nanochat") from the Hugging Face Hub or from a local
    folder in Hugging Face layout.

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
