"""GGUF export, checked twice: gguf's own reader finds every tensor and the metadata llama.cpp's GPT-2
loader reads, and llama.cpp itself (through llama-cpp-python) tokenizes our prompts to our ids and
decodes greedily to our tokens.

Without llama_cpp the llama.cpp tests skip on a laptop, and fail in CI (CI=true), where
requirements-dev.txt builds it from source.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from gptlab.checkpoint import save_checkpoint  # noqa: E402
from gptlab.config import ModelConfig, SampleConfig  # noqa: E402
from gptlab.generate import generate  # noqa: E402
from gptlab.gguf_export import (GGUFExportError, export_gguf, gguf_note, gguf_refusal,  # noqa: E402
                                modelfile, rwkv_token_text)
from gptlab.model import GPT  # noqa: E402
from gptlab.tokenizers import CharTokenizer, GPT2Tokenizer  # noqa: E402

# Characters that need care: a backslash and control characters (escaped in rwkv token texts), and
# two-, three- and four-byte UTF-8.
CHAR_TEXT = "hello world, to be or not to be? \\ \n\t ça coûte 5€ 😀"

# Our parameter names -> llama.cpp's GPT-2 tensor names (written out here, not read from gguf's map).
GLOBAL_NAMES = {"transformer.wte.weight": "token_embd.weight", "transformer.wpe.weight": "position_embd.weight",
                "transformer.ln_f.weight": "output_norm.weight", "transformer.ln_f.bias": "output_norm.bias"}
LAYER_NAMES = {"ln_1.weight": "attn_norm.weight", "ln_1.bias": "attn_norm.bias",
               "attn.c_attn.weight": "attn_qkv.weight", "attn.c_attn.bias": "attn_qkv.bias",
               "attn.c_proj.weight": "attn_output.weight", "attn.c_proj.bias": "attn_output.bias",
               "ln_2.weight": "ffn_norm.weight", "ln_2.bias": "ffn_norm.bias",
               "mlp.c_fc.weight": "ffn_up.weight", "mlp.c_fc.bias": "ffn_up.bias",
               "mlp.c_proj.weight": "ffn_down.weight", "mlp.c_proj.bias": "ffn_down.bias"}


def make_checkpoint(folder, tokenizer, *, seed=1, **overrides):
    """A random GPT saved as a checkpoint. Embeddings of std 1 and other weights of std 0.2 rather than
    GPT-2's 0.02: peaked logits whose greedy choices are no near-ties (f16 rounding, or another order
    of summing, cannot flip them), and continuations that do not repeat one token."""
    config = ModelConfig(**{"vocab_size": tokenizer.vocab_size, "block_size": 64, "n_layer": 2, "n_head": 2,
                            "n_embd": 32, **overrides})
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 1.0 if name.endswith(("wte.weight", "wpe.weight")) else 0.2)
    save_checkpoint(folder, model, config, tokenizer)
    return model.eval()


@pytest.fixture(scope="module")
def gpt2_ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf") / "gpt2"
    return folder, make_checkpoint(folder, GPT2Tokenizer())


@pytest.fixture(scope="module")
def char_ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf") / "char"
    return folder, make_checkpoint(folder, CharTokenizer.from_text(CHAR_TEXT), seed=0)


def field(reader, key):
    return reader.fields[key].contents()


def expected_tensors(model: GPT) -> dict[str, np.ndarray]:
    sd = model.state_dict()
    out = {theirs: sd[ours] for ours, theirs in GLOBAL_NAMES.items() if ours in sd}
    for i in range(model.config.n_layer):
        for ours, theirs in LAYER_NAMES.items():
            weight = sd[f"transformer.h.{i}.{ours.replace('.bias', '.weight')}"]
            out[f"blk.{i}.{theirs}"] = sd.get(f"transformer.h.{i}.{ours}", torch.zeros(weight.shape[0]))
    if "transformer.ln_f.bias" not in sd:
        out["output_norm.bias"] = torch.zeros(model.config.n_embd)
    return {k: v.float().numpy() for k, v in out.items()}


@pytest.mark.parametrize("dtype", ["f16", "f32", "q8_0"])
def test_every_tensor_and_the_gpt2_metadata_are_in_the_file(gpt2_ckpt, tmp_path, dtype):
    folder, model = gpt2_ckpt
    path = export_gguf(folder, tmp_path / "model.gguf", dtype=dtype)
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    expected = expected_tensors(model)
    assert set(tensors) == set(expected)  # no output.weight: llama.cpp ties it to token_embd, as we do
    for name, ours in expected.items():
        t = tensors[name]
        assert list(t.shape) == list(reversed(ours.shape)), name  # ggml lists dimensions innermost first
        if ours.ndim == 1 or name == "position_embd.weight" or dtype == "f32":
            assert t.tensor_type == gguf.GGMLQuantizationType.F32, name
            np.testing.assert_array_equal(t.data, ours, err_msg=name)
        elif dtype == "f16":
            assert t.tensor_type == gguf.GGMLQuantizationType.F16, name
            np.testing.assert_array_equal(t.data, ours.astype(np.float16), err_msg=name)  # f16's own rounding
        else:
            assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0, name
            values = gguf.quants.dequantize(t.data, t.tensor_type)
            # Within half an int8 step of its block, plus what rounding the block's scale to f16 adds (<0.07 step).
            step = np.abs(ours.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
            np.testing.assert_array_less(np.abs(values.reshape(-1, 32) - ours.reshape(-1, 32)),
                                         np.broadcast_to(step * 0.57 + 1e-7, (step.shape[0], 32)),
                                         err_msg=name)

    file_type = {"f16": 1, "f32": 0, "q8_0": 7}[dtype]
    assert {k: field(reader, k) for k in (
        "general.architecture", "gpt2.context_length", "gpt2.embedding_length", "gpt2.feed_forward_length",
        "gpt2.block_count", "gpt2.attention.head_count", "general.file_type", "tokenizer.ggml.model",
        "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.add_bos_token")} == {
        "general.architecture": "gpt2", "gpt2.context_length": 64, "gpt2.embedding_length": 32,
        "gpt2.feed_forward_length": 128, "gpt2.block_count": 2, "gpt2.attention.head_count": 2,
        "general.file_type": file_type, "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.bos_token_id": 50256, "tokenizer.ggml.eos_token_id": 50256,
        "tokenizer.ggml.add_bos_token": False}
    assert field(reader, "gpt2.attention.layer_norm_epsilon") == pytest.approx(1e-5)
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == 50257 and tokens[50256] == "<|endoftext|>"
    assert types[50256] == gguf.TokenType.CONTROL and set(types[:50256]) == {gguf.TokenType.NORMAL}
    assert tokens[:3] == ["!", '"', "#"] and tokens[220] == "Ġ" and tokens[198] == "Ċ"  # byte-level strings
    merges = field(reader, "tokenizer.ggml.merges")
    assert len(merges) == 50000 and merges[:3] == ["Ġ t", "Ġ a", "h e"]


def test_a_char_model_has_an_rwkv_vocabulary_of_its_characters_and_no_end_of_text(char_ckpt, tmp_path):
    folder, _ = char_ckpt
    reader = gguf.GGUFReader(export_gguf(folder, tmp_path / "char.gguf"))
    chars = CharTokenizer.from_text(CHAR_TEXT).chars
    assert field(reader, "tokenizer.ggml.model") == "rwkv"
    assert field(reader, "tokenizer.ggml.tokens") == [rwkv_token_text(c) for c in chars]
    assert "tokenizer.ggml.eos_token_id" not in reader.fields and "tokenizer.ggml.merges" not in reader.fields
    make_checkpoint(tmp_path / "padded", CharTokenizer.from_text(CHAR_TEXT), vocab_size=len(chars) + 2)
    padded = gguf.GGUFReader(export_gguf(tmp_path / "padded", tmp_path / "padded.gguf"))
    assert field(padded, "tokenizer.ggml.tokens")[-1] == f"\\xff[PAD{len(chars) + 1}]"  # 0xff: in no UTF-8 text
    assert rwkv_token_text("\\") == "\\\\" and rwkv_token_text("\n") == "\\x0a" and rwkv_token_text("€") == "€"


def test_a_padded_vocabulary_and_a_model_without_biases_export(tmp_path):
    model = make_checkpoint(tmp_path / "ck", GPT2Tokenizer(), vocab_size=50304, bias=False)
    reader = gguf.GGUFReader(export_gguf(tmp_path / "ck", tmp_path / "m.gguf", dtype="f32"))
    types = field(reader, "tokenizer.ggml.token_type")
    assert len(types) == 50304 and set(types[50257:]) == {gguf.TokenType.UNUSED}
    assert field(reader, "tokenizer.ggml.tokens")[50300] == "[PAD50300]"
    tensors = {t.name: t.data for t in reader.tensors}
    for name, ours in expected_tensors(model).items():
        np.testing.assert_array_equal(tensors[name], ours, err_msg=name)
    assert not tensors["blk.0.attn_qkv.bias"].any()


def test_the_modelfile_runs_the_file_as_a_base_model_with_its_context(gpt2_ckpt, tmp_path):
    path = export_gguf(gpt2_ckpt[0], tmp_path / "shakespeare.gguf")
    text = modelfile(path).read_text(encoding="utf-8")
    assert modelfile(path).name == "shakespeare.Modelfile"
    assert "FROM ./shakespeare.gguf\n" in text and 'TEMPLATE """{{ .Prompt }}"""' in text
    assert "PARAMETER num_ctx 64\n" in text and 'PARAMETER stop "<|endoftext|>"' in text


def test_what_cannot_be_exported_is_refused_with_a_sentence(gpt2_ckpt, tmp_path, monkeypatch):
    nanochat = ModelConfig(architecture="nanochat")
    assert gguf_refusal(ModelConfig(), GPT2Tokenizer()) is None and gguf_note(ModelConfig()) is None
    assert "exact GELU" in gguf_note(ModelConfig(activation="gelu"))
    assert "architecture is 'nanochat'" in gguf_refusal(nanochat, GPT2Tokenizer())
    with pytest.raises(GGUFExportError, match="must be one of f16, f32, q8_0"):
        export_gguf(gpt2_ckpt[0], tmp_path / "m.gguf", dtype="q4_0")
    with pytest.raises(GGUFExportError, match=r"\.gguf suffix"):
        export_gguf(gpt2_ckpt[0], tmp_path / "model.bin")
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if gguf were not installed
    with pytest.raises(GGUFExportError, match=r"pip install gguf==0\.19\.0"):
        export_gguf(gpt2_ckpt[0], tmp_path / "m.gguf")
    assert not list(tmp_path.glob("*.gguf"))  # nothing half-written


def test_a_nanochat_checkpoint_is_refused_before_anything_is_written(tmp_path):
    tok = CharTokenizer.from_text("abcdefgh")
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=8, architecture="nanochat")
    ckpt = save_checkpoint(tmp_path / "ckpt", GPT(cfg), cfg, tok)
    with pytest.raises(GGUFExportError, match="architecture is 'nanochat'.*--format hf"):
        export_gguf(ckpt, tmp_path / "m.gguf")
    assert not list(tmp_path.glob("*.gguf"))


# --------------------------------------------------------------------------------------------
# llama.cpp itself


@pytest.fixture(scope="module")
def llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("The llama.cpp test must run in CI, but llama_cpp is not importable "
                        "(pip install -r requirements-dev.txt builds llama-cpp-python).")
        pytest.skip("llama-cpp-python is not installed (pip install -r requirements-dev.txt)")
    return llama_cpp


def llama_greedy(llm, ids: list[int], n: int) -> list[int]:
    out = []
    for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, min_p=0.0, reset=True):
        out.append(token)
        if len(out) == n:
            return out


@pytest.fixture(scope="module")
def exact_gelu_ckpt(tmp_path_factory):
    """A char model with the exact GELU, as the default preset (char-cpu) trains."""
    folder = tmp_path_factory.mktemp("gguf") / "exact"
    return folder, make_checkpoint(folder, CharTokenizer.from_text(CHAR_TEXT), seed=0, activation="gelu")


@pytest.mark.parametrize("kind,dtype", [("gpt2", "f32"), ("gpt2", "f16"), ("char", "f32"), ("exact-gelu", "f32")])
def test_llama_cpp_tokenizes_and_decodes_greedily_as_we_do(llama_cpp, request, tmp_path, kind, dtype):
    folder, model = request.getfixturevalue({"gpt2": "gpt2_ckpt", "char": "char_ckpt",
                                             "exact-gelu": "exact_gelu_ckpt"}[kind])
    tokenizer = GPT2Tokenizer() if kind == "gpt2" else CharTokenizer.from_text(CHAR_TEXT)
    prompts = (["The quick brown fox", " jumps over\n the lazy dog!", "Ünïcödé 5€ 😀"] if kind == "gpt2"
               else ["to be or not", "ça coûte 5€\n", "\\ 😀\thello"])
    llm = llama_cpp.Llama(model_path=str(export_gguf(folder, tmp_path / "m.gguf", dtype=dtype)), n_ctx=64,
                          logits_all=True, verbose=False)
    n_new = 24
    for prompt in prompts:
        ids = tokenizer.encode(prompt)
        assert llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=False) == ids, prompt
        ours = list(generate(model, ids, SampleConfig(strategy="greedy", max_new_tokens=n_new, stop_at_eot=False)))
        with torch.no_grad():
            logits = model(torch.tensor([ids + ours]))[0][0]
        top2 = logits[len(ids) - 1:].topk(2, dim=-1).values
        margin = ((top2[:, 0] - top2[:, 1]) / logits[len(ids) - 1:].std(dim=-1)).min()
        # What makes the comparison mean something: no near-tie (a flip is then a bug), and no loop of one token.
        assert margin > 5e-3 and len(set(ours)) >= 4, "pick another seed for make_checkpoint"
        assert llama_greedy(llm, ids, n_new) == ours, prompt
        assert llm.detokenize(ours).decode("utf-8", "replace") == tokenizer.decode(ours)
        if dtype == "f32":  # every position's distribution, not only its top token
            llm.reset()
            llm.eval(ids)
            np.testing.assert_allclose(llm.scores[:len(ids)], logits[:len(ids)].numpy(), atol=2e-3, rtol=1e-3)


def test_our_q8_0_file_holds_what_llama_cpps_own_quantiser_writes(llama_cpp, gpt2_ckpt, tmp_path):
    import ctypes

    folder, _ = gpt2_ckpt
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, 1
    source, theirs = export_gguf(folder, tmp_path / "f32.gguf", dtype="f32"), tmp_path / "theirs.gguf"
    assert llama_cpp.llama_model_quantize(str(source).encode(), str(theirs).encode(), ctypes.byref(params)) == 0
    ours = {t.name: t for t in gguf.GGUFReader(export_gguf(folder, tmp_path / "ours.gguf", dtype="q8_0")).tensors}
    theirs = {t.name: t for t in gguf.GGUFReader(theirs).tensors}
    assert set(ours) == set(theirs)
    for name, t in theirs.items():
        assert ours[name].tensor_type == t.tensor_type, name
        np.testing.assert_array_equal(ours[name].data, t.data, err_msg=name)
    assert {t.tensor_type.name for t in ours.values()} == {"F32", "Q8_0"}
