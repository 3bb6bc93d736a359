"""The model card: README.md text for a checkpoint's Hugging Face repository (YAML metadata, settings,
training data, losses, loss plot, how to use it). Local paths never go into a card: it is public.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from gptlab.checkpoint import BEST, INIT, LAST, Checkpoint, load_checkpoint
from gptlab.config import to_dict
from gptlab.hub.convert import CHARS_FILE
from gptlab.hub.download import KNOWN_LICENSES, _is_local
from gptlab.report import RunReport
from gptlab.runfolder import LOSS_PLOT
from gptlab.tokenizers import CharTokenizer

METRIC_LABELS = {"train_loss": "Training loss", "val_loss": "Validation loss", "best_val_loss": "Best validation loss"}
DATA_COUNTS = ("documents", "characters", "tokens", "train_tokens", "val_tokens", "vocab_used")
# Report sections the card already has, in its own form.
CARD_SKIPS_REPORT = ("Configuration", "Data", "Loss curve")
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
               loss_plot: str | None = None, report: RunReport | None = None) -> str:
    """README.md text for a checkpoint's Hugging Face repository: YAML metadata, model and training
    settings, the training data, the final losses, the loss plot (loss_plot: a file name beside the
    README) and how to use the model.

    Reads from checkpoint.extra: "data" ({"description", "sources", "documents", "characters", "tokens",
    "license"}; only the file names of sources are shown, never local paths), "stats" ({"train_tokens",
    "val_tokens", "vocab_used"}), "source" and "source_revision" (an imported model), "base_model" or
    "init_from" (where fine-tuning started) and "license". From checkpoint.metrics: train_loss, val_loss
    and best_val_loss; any other number there is listed too. `report` (the run's, gptlab.report) adds its
    sections the card does not already have: the run's results, time, hardware and samples."""
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
    nanochat = cfg.architecture == "nanochat"
    cls = "NanoChatForCausalLM" if nanochat else "GPT2LMHeadModel"
    meta += ["tags:", "- gptlab", f"- {cfg.architecture}"] + (["- character-level"] if char else []) + ["---", ""]

    run_label = ckpt.path.name in (BEST, LAST, INIT) or ckpt.path.name.startswith("step-")
    title = (repo_id or "").split("/")[-1] or (ckpt.path.parent.name if run_label else ckpt.path.name)
    out = meta + [f"# {title}", "",
                  f"A {'nanochat' if nanochat else 'GPT-2'} style language model made with GPT Lab: "
                  f"{cfg.num_params():,} parameters, {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd}-wide, a "
                  f"context of {cfg.block_size} tokens. It loads in transformers as `{cls}`.", ""]
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
    if report is not None:
        out += [report.markdown(level=2, skip=CARD_SKIPS_REPORT), ""]

    out += ["## How to use", "", "```python"]
    if char:
        out += ["import json, torch", "from huggingface_hub import hf_hub_download",
                f"from transformers import {cls}", "",
                f'chars = json.load(open(hf_hub_download("{name}", "{CHARS_FILE}"), encoding="utf-8"))',
                f'model = {cls}.from_pretrained("{name}")',
                f"ids = torch.tensor([[chars.index(c) for c in {_prompt(ckpt.tokenizer)!r}]])",
                f"out = model.generate(ids, max_new_tokens={max(1, min(200, cfg.block_size - 4))}, do_sample=True, "
                "pad_token_id=0)",
                'print("".join(chars[i] for i in out[0]))']
    else:
        out += [f"from transformers import AutoTokenizer, {cls}", "",
                f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
                f'model = {cls}.from_pretrained("{name}")',
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
