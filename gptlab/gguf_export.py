"""GGUF export: a checkpoint as one .gguf file that llama.cpp runs (llama-cli, llama-cpp-python, Ollama).

The file is written by `gguf`, the llama.cpp project's own Python writer, with its names for the
architecture, the tensors (gguf's GPT-2 tensor map reads our GPT-2 parameter names) and the metadata
keys. gguf is optional: it is imported inside export_gguf, and its absence is a sentence that says
what to install.

What llama.cpp's GPT-2 computes, and so what is exported: learned position embeddings, pre-LayerNorm
blocks with biases (a bias=False model gets zero biases, which compute the same), the tanh GELU,
and an output layer tied to the token embeddings (left out of the file: llama.cpp then reuses
token_embd, as for GPT-2 itself). Our Linear weights are (out, in), the layout llama.cpp reads.
A model trained with the exact GELU (activation gelu, as the char-cpu preset is) exports too: the two
GELUs differ by at most 0.0005, and llama.cpp's own tanh GELU (an f16 table on the CPU) moved the
test models' logits as far from ours as the exact one did (about 1e-3 either way), so refusing the
default preset's models would buy nothing; gguf_note says so to the user.

Vocabularies:
- GPT-2 BPE: tokenizer.ggml.model "gpt2" with the "gpt-2" pre-tokenizer, GPT-2's byte-level token
  strings and its 50,000 merges, end-of-text (50256) as BOS and EOS, and no BOS added to a prompt
  (gptlab continues a prompt as it is).
- Characters: tokenizer.ggml.model "rwkv", llama.cpp's vocabulary that matches token texts greedily,
  longest first, on the prompt's bytes. With one token per character (UTF-8 is prefix-free) that is
  exactly our character tokenizer, and unlike the BPE and SentencePiece vocabularies it has no
  default BOS or EOS id, so no character is taken for the end of text. Characters outside the
  vocabulary are errors in gptlab and unknown tokens in llama.cpp.
Token ids past the tokenizer's (a padded vocabulary) are named [PAD<id>] and typed UNUSED; in an rwkv
vocabulary the name starts with the byte 0xff, which UTF-8 text never holds, so no prompt matches it.

Weights: f16 by default (half the file, and f16 rounding of trained weights changes greedy text far
less often than sampling does); f32 for an exact copy; q8_0 with gguf's port of ggml's Q8_0
quantiser, as llama.cpp's convert_hf_to_gguf.py writes it (the tests find the same bytes as
llama.cpp's own quantiser, llama_model_quantize, writes).
As there, 1-D tensors (norms, biases) and the position embeddings stay f32, and a matrix whose rows
are not a whole number of quantisation blocks falls back to f16.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from gptlab.bpe_vocab import gpt2_vocab_and_merges
from gptlab.checkpoint import Checkpoint, load_checkpoint
from gptlab.config import ModelConfig, SampleConfig
from gptlab.tokenizers import EOT_TEXT, CharTokenizer, GPT2Tokenizer, Tokenizer

GGUF_REQUIREMENT = "gguf==0.19.0"
DTYPES = ("f16", "f32", "q8_0")
DEFAULT_DTYPE = "f16"
ARCHITECTURE = "gpt2"  # llama.cpp's name (gguf.MODEL_ARCH.GPT2); the only one our GPT exports to
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which gptlab.model uses


class GGUFExportError(ValueError):
    """A checkpoint cannot be written as GGUF; the message says why and what to do."""


def gguf_refusal(model_config: ModelConfig, tokenizer: Tokenizer) -> str | None:
    """Why llama.cpp cannot run this model as exported, or None when it can: the one place that
    decides which models export to GGUF."""
    architecture = model_config.architecture
    if architecture != ARCHITECTURE:
        return (f"GGUF export writes GPT-2-shaped models only, and this model's architecture is "
                f"{architecture!r} (rotary positions, RMSNorm, ReLU², a soft-capped head: no llama.cpp architecture "
                "computes it); export it in Hugging Face format instead (python -m gptlab export --format hf).")
    if not isinstance(tokenizer, (GPT2Tokenizer, CharTokenizer)):
        return (f"GGUF export knows the gpt2 and char tokenizers, not {tokenizer.name!r}; export the model in "
                "Hugging Face format instead (python -m gptlab export --format hf).")
    return None


def gguf_note(model_config: ModelConfig) -> str | None:
    """What a user should know about how closely llama.cpp reproduces this model, if anything."""
    if model_config.activation == "gelu":
        return ("this model uses the exact GELU and llama.cpp's GPT-2 the tanh one (they differ by at most "
                "0.0005), so llama.cpp's probabilities may differ from GPT Lab's in the third decimal.")
    return None


def _import_gguf():
    try:
        import gguf
    except ImportError:
        raise GGUFExportError(f"GGUF export needs the gguf package: pip install {GGUF_REQUIREMENT}") from None
    return gguf


def rwkv_token_text(piece: str) -> str:
    """A character as llama.cpp's rwkv vocabulary stores it: backslash escapes for the backslash and
    for control characters (its reader decodes \\xNN in lowercase hex only)."""
    if piece == "\\":
        return "\\\\"
    if ord(piece) < 0x20 or ord(piece) == 0x7F:
        return f"\\x{ord(piece):02x}"
    return piece


def _vocabulary(gguf, writer, tokenizer: Tokenizer, vocab_size: int) -> None:
    types = gguf.TokenType
    pad_prefix = ""
    if isinstance(tokenizer, GPT2Tokenizer):
        vocab, merges = gpt2_vocab_and_merges()
        tokens = sorted(vocab, key=vocab.get)
        kinds = [types.CONTROL if t == EOT_TEXT else types.NORMAL for t in tokens]
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")
        writer.add_token_merges([f"{a} {b}" for a, b in merges])
        writer.add_bos_token_id(tokenizer.eot)
        writer.add_eos_token_id(tokenizer.eot)
    else:
        tokens = [rwkv_token_text(c) for c in tokenizer.chars]
        kinds = [types.NORMAL] * len(tokens)
        writer.add_tokenizer_model("rwkv")
        pad_prefix = "\\xff"
    pad = range(len(tokens), vocab_size)
    writer.add_token_list(tokens + [f"{pad_prefix}[PAD{i}]" for i in pad])
    writer.add_token_types(kinds + [types.UNUSED] * len(pad))
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def _tensors(model) -> dict:
    """Our parameters by name, float32 on the CPU, with zero biases for a bias=False model and
    without lm_head (it is wte)."""
    import torch

    sd = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    for name in list(sd):
        layer = name.split(".")[-2]
        if name.endswith(".weight") and layer in ("c_attn", "c_proj", "c_fc", "ln_1", "ln_2", "ln_f"):
            sd.setdefault(name[: -len("weight")] + "bias", torch.zeros(sd[name].shape[0]))
    return sd


def _write(ckpt: Checkpoint, path: Path, dtype: str, name: str) -> None:
    gguf = _import_gguf()
    config = ckpt.model_config
    qtypes = {"f16": gguf.GGMLQuantizationType.F16, "f32": gguf.GGMLQuantizationType.F32,
              "q8_0": gguf.GGMLQuantizationType.Q8_0}
    file_types = {"f16": gguf.LlamaFileType.MOSTLY_F16, "f32": gguf.LlamaFileType.ALL_F32,
                  "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_description(f"A GPT-2-architecture model trained with GPT Lab ({ckpt.tokenizer.name} tokenizer, "
                           f"step {ckpt.step}).")
    writer.add_context_length(config.block_size)
    writer.add_embedding_length(config.n_embd)
    writer.add_feed_forward_length(4 * config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_head_count(config.n_head)
    writer.add_layer_norm_eps(LAYER_NORM_EPS)
    writer.add_file_type(file_types[dtype])
    if dtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _vocabulary(gguf, writer, ckpt.tokenizer, config.vocab_size)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, config.n_layer)
    for ours, tensor in _tensors(ckpt.load_model("cpu")).items():
        theirs = names.get_name(ours, try_suffixes=(".weight", ".bias"))
        if theirs is None:  # a parameter llama.cpp's GPT-2 has no place for
            raise GGUFExportError(f"The model has a tensor {ours} that llama.cpp's GPT-2 has no place for.")
        data = tensor.numpy()
        qtype = qtypes[dtype]
        if data.ndim <= 1 or theirs.startswith(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.POS_EMBD]):
            qtype = gguf.GGMLQuantizationType.F32
        try:
            data = gguf.quants.quantize(data, qtype)
        except gguf.QuantError:
            qtype = gguf.GGMLQuantizationType.F16
            data = gguf.quants.quantize(data, qtype)
        writer.add_tensor(theirs, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def export_gguf(checkpoint_dir, out_path, *, dtype: str = DEFAULT_DTYPE) -> Path:
    """Write a gptlab checkpoint as the GGUF file out_path (replaced if it exists), with weights in
    `dtype` (one of DTYPES), and beside it out_path with the suffix .Modelfile, for Ollama.
    Returns out_path. Raises GGUFExportError when the model cannot be exported or gguf is missing."""
    if dtype not in DTYPES:
        raise GGUFExportError(f"The GGUF weight type must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    ckpt = load_checkpoint(checkpoint_dir)
    refusal = gguf_refusal(ckpt.model_config, ckpt.tokenizer)
    if refusal:
        raise GGUFExportError(refusal)
    _import_gguf()  # before anything is written
    out = Path(out_path).expanduser()
    if out.suffix != ".gguf":
        raise GGUFExportError(f"Name the GGUF file with the .gguf suffix (e.g. model.gguf), not {out.name!r}.")
    if out.is_dir():
        raise GGUFExportError(f"{out} is a folder; give the path of the .gguf file to write.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        _write(ckpt, tmp, dtype, name=out.stem)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    modelfile(out).write_text(modelfile_text(out.name, ckpt), encoding="utf-8")
    return out


def example_prompt(tokenizer: Tokenizer) -> str:
    """A prompt to show in the instructions that the model can read: a char model's vocabulary may
    lack any given letter, and llama.cpp reads an unknown character as an invalid token."""
    if not isinstance(tokenizer, CharTokenizer):
        return "Once upon a time"
    return next((p for p in ("ROMEO:", "The", "the", "a") if not tokenizer.unknown_chars(p)), tokenizer.chars[-1])


def modelfile(gguf_path: Path) -> Path:
    return Path(gguf_path).with_suffix(".Modelfile")


def modelfile_text(gguf_name: str, ckpt: Checkpoint) -> str:
    """An Ollama Modelfile for a base model: the prompt goes in as it is (no chat template), the
    context is the model's own, and the sampling settings are gptlab's defaults."""
    defaults = SampleConfig()
    lines = ["# A base model trained with GPT Lab: it continues text, it does not chat.",
             f"# ollama create my-model -f {modelfile(Path(gguf_name)).name} && ollama run my-model "
             f"\"{example_prompt(ckpt.tokenizer)}\"",
             f"FROM ./{gguf_name}", 'TEMPLATE """{{ .Prompt }}"""',
             f"PARAMETER num_ctx {ckpt.model_config.block_size}",
             f"PARAMETER temperature {defaults.temperature}",
             f"PARAMETER repeat_penalty {defaults.repetition_penalty}",
             "PARAMETER top_k 0", "PARAMETER top_p 1.0", "PARAMETER min_p 0.0"]
    if ckpt.tokenizer.eot is not None:
        lines.append(f'PARAMETER stop "{EOT_TEXT}"')
    return "\n".join(lines) + "\n"


def how_to_run(gguf_path, checkpoint_dir) -> str:
    """What the CLI prints after an export: the file, any note, and how to run it with llama.cpp and
    with Ollama."""
    path, ckpt = Path(gguf_path), load_checkpoint(checkpoint_dir)
    note = gguf_note(ckpt.model_config)
    prompt, temperature = example_prompt(ckpt.tokenizer), SampleConfig().temperature
    return "\n".join([
        f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) and {modelfile(path)}",
        *([f"note: {note}"] if note else []),
        f"run it with llama.cpp: llama-completion -m {path} -no-cnv -c {ckpt.model_config.block_size} -n 200 "
        f"--temp {temperature} -p \"{prompt}\"  (older llama.cpp builds: llama-cli with the same flags)",
        f"or with Ollama: ollama create my-model -f {modelfile(path)} && ollama run my-model \"{prompt}\""])
