"""GPT-2's tokenizer files in Hugging Face's format (vocab.json + merges.txt), made offline from the
bundled tiktoken ranks (gptlab.bpe_vocab recovers the merges).
"""

from __future__ import annotations

import json
from pathlib import Path

from gptlab.bpe_vocab import gpt2_vocab_and_merges
from gptlab.tokenizers import EOT_TEXT

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"


def write_gpt2_tokenizer(folder, model_max_length: int) -> list[str]:
    """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json into `folder`,
    so that transformers.AutoTokenizer.from_pretrained(folder) loads GPT-2's tokenizer.
    Returns the file names written."""
    folder = Path(folder)
    vocab, merges = gpt2_vocab_and_merges()
    (folder / VOCAB_FILE).write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / MERGES_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    special = {"bos_token": EOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT}
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": model_max_length,
              "add_prefix_space": False, **special}
    (folder / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / SPECIAL_TOKENS_FILE).write_text(json.dumps(special, indent=2), encoding="utf-8")
    return [VOCAB_FILE, MERGES_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE]


def is_gpt2_vocab(vocab: dict) -> bool:
    """Whether a vocab.json mapping is GPT-2's (so the GPT-2 BPE can stand in for its tokenizer)."""
    return vocab == gpt2_vocab_and_merges()[0]
