"""A gptlab checkpoint as a Hugging Face GPT-2 folder (export_hf), and that folder uploaded to a Hub
model repository (push_to_hub). The token a push uses never appears in a message or a file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError
from huggingface_hub.utils import validate_repo_id
from safetensors.torch import save_file

from gptlab.checkpoint import CONFIG_FILE, WEIGHTS_FILE, Checkpoint, load_checkpoint
from gptlab.hub.card import LOSS_PLOT, find_loss_plot, model_card
from gptlab.hub.convert import CHARS_FILE, HubError, config_to_hf, to_hf_state_dict
from gptlab.hub.hf_tokenizer import write_gpt2_tokenizer
from gptlab.report import run_report
from gptlab.runfolder import METRICS_FILE
from gptlab.tokenizers import CharTokenizer, GPT2Tokenizer
from gptlab.tracking import TENSORBOARD_DIR, event_files

# Files an export may write. A push deletes these from the repository unless it uploads them again, so
# nothing stale (say, GPT-2 tokenizer files beside a char model) outlives a new push; others are kept.
EXPORT_FILES = ("model.safetensors", "model.safetensors.index.json", "model-*.safetensors", "vocab.json",
                "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "generation_config.json", "vocab_chars.json", "loss.png", f"{TENSORBOARD_DIR}/*")


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
    run = ckpt.path.parent if (ckpt.path.parent / METRICS_FILE).is_file() else None
    # The Hub finds tfevents files anywhere in a repository and opens its training-metrics tab on them.
    for events in event_files(run) if run else []:
        (folder / TENSORBOARD_DIR).mkdir(exist_ok=True)
        shutil.copyfile(events, folder / TENSORBOARD_DIR / events.name)
    card = model_card(ckpt, repo_id=repo_id, loss_plot=LOSS_PLOT if plot is not None else None,
                      report=run_report(run) if run else None)
    (folder / "README.md").write_text(card, encoding="utf-8")


def export_hf(checkpoint_dir, out_dir, *, repo_id: str | None = None) -> Path:
    """Write a gptlab checkpoint as a Hugging Face GPT-2 folder that transformers'
    GPT2LMHeadModel.from_pretrained(out_dir) loads: config.json, model.safetensors, README.md (the model
    card; repo_id names the model in it, with the run's report) and loss.png and the TensorBoard event
    files (tensorboard/) when the run has them. GPT-2 BPE models also get
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
        return hf.get("model_type") in ("gpt2", "nanochat") and "gptlab" in hf
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
