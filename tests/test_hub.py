"""Hugging Face interop, checked offline against transformers with tiny random models.

Hub downloads are exercised through a hand-made Hub cache (models--org--name/{blobs,refs,snapshots})
read by huggingface_hub in offline mode, so nothing touches the network.
"""

import hashlib
import json
import os
import random
from pathlib import Path

import httpx2
import pytest
import torch
import yaml
from huggingface_hub import HfApi, RepoUrl, constants
from huggingface_hub.errors import HfHubHTTPError
from safetensors.torch import save, save_file

from gptlab import hub
from gptlab.checkpoint import load_checkpoint, save_checkpoint
from gptlab.config import ModelConfig, TrainConfig
from gptlab.hub.hf_tokenizer import gpt2_vocab_and_merges, write_gpt2_tokenizer
from gptlab.model import GPT
from gptlab.tokenizers import CharTokenizer, GPT2Tokenizer

transformers = pytest.importorskip("transformers")
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_NotARealTokenButSecret123"
MULTILINGUAL = ("Hello world! It's 2024; we're   testing spaces\n\n\ttabs. Привет, мир! Ελληνικά. "
                "日本語のテキスト。中文测试。 العربية हिन्दी 한국어 naïve café ﬁ\u00a0nbsp "
                "emoji 🤖🎉👩‍👩‍👧‍👦 🇫🇷 ok")


def tiny_hf_gpt2(vocab_size=50257, seed=0, **overrides) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    # A wide init makes wrong transposes show up as large logit differences.
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=16, n_embd=16, n_layer=2, n_head=2, initializer_range=0.5,
                     bos_token_id=0, eos_token_id=0, **overrides)
    return GPT2LMHeadModel(cfg).eval()


def assert_same_logits(ours: GPT, theirs: GPT2LMHeadModel, vocab_size: int, seed=1):
    ids = torch.randint(0, vocab_size, (2, 12), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(ids)[0], theirs.eval()(ids).logits, rtol=1e-4, atol=1e-4)


def hub_file_layout(model: GPT2LMHeadModel) -> dict[str, torch.Tensor]:
    """GPT2Model names without the 'transformer.' prefix, plus the attention mask buffers, which is
    what openai-community/gpt2's model.safetensors holds."""
    sd = {k.removeprefix("transformer."): v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    n = model.config.n_positions
    for i in range(model.config.n_layer):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
    return sd


def make_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """Lay files out as hf_hub_download caches them: blobs by hash, snapshot links, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    for folder in (repo / "refs", repo / "blobs", snapshot):
        folder.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)  # no newline: huggingface_hub reads it verbatim
    for name, content in files.items():
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))


@pytest.fixture
def offline(monkeypatch):
    # huggingface_hub reads HF_HUB_OFFLINE once, at import, into its constants module.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def char_checkpoint(folder: Path, *, bias=True, activation="gelu_tanh", seed=0, architecture="gpt2",
                    **save_kw) -> tuple[Path, GPT]:
    torch.manual_seed(seed)
    tok = CharTokenizer.from_text("To be, or not to be: that is the question.\n")
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=16, bias=bias,
                      activation=activation, architecture=architecture)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return save_checkpoint(folder, model, cfg, tok, **save_kw), model


# --------------------------------------------------------------------------------------------
# Tokenizer files


def test_gpt2_tokenizer_files_encode_like_tiktoken(tmp_path):
    vocab, merges = gpt2_vocab_and_merges()
    assert len(vocab) == 50257 and len(merges) == 50000
    assert merges[:3] == [("Ġ", "t"), ("Ġ", "a"), ("h", "e")]  # the first lines of GPT-2's merges.txt
    write_gpt2_tokenizer(tmp_path, model_max_length=1024)
    theirs, ours = AutoTokenizer.from_pretrained(tmp_path), GPT2Tokenizer()
    assert theirs.eos_token_id == theirs.bos_token_id == 50256 and theirs.model_max_length == 1024

    rng = random.Random(0)
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x600, 0x6FF), (0x900, 0x97F),
              (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0x1F300, 0x1F64F)]
    fuzz = ["".join(chr(rng.randint(*rng.choice(ranges))) if rng.random() < 0.8 else rng.choice(" \n\t'")
                    for _ in range(300)) for _ in range(20)]
    shakespeare = (Path(__file__).resolve().parent.parent / "assets" / "shakespeare.txt").read_text(encoding="utf-8")
    for text in [MULTILINGUAL, shakespeare[:20000], *fuzz]:
        ids = ours.encode(text)
        assert theirs.encode(text, add_special_tokens=False) == ids
        assert theirs.decode(ids) == text


# --------------------------------------------------------------------------------------------
# Loading GPT-2 from the Hub cache and from folders


@pytest.mark.parametrize("layout", ["hub GPT2Model file", "GPT2LMHeadModel file"])
def test_load_from_hub_cache_offline_matches_transformers(tmp_path, offline, layout):
    theirs = tiny_hf_gpt2()
    sd = hub_file_layout(theirs) if layout == "hub GPT2Model file" else \
        {k: v.clone() for k, v in theirs.state_dict().items()}
    files = {"config.json": theirs.config.to_json_string().encode(), "model.safetensors": save(sd, {"format": "pt"})}
    make_hub_cache(tmp_path / "cache", "openai-community/gpt2", files)

    loaded = hub.load_pretrained("gpt2", cache_dir=tmp_path / "cache")  # the short name resolves to the repo
    assert loaded.source == "openai-community/gpt2" and loaded.revision == COMMIT
    assert isinstance(loaded.tokenizer, GPT2Tokenizer)
    assert loaded.model_config == ModelConfig(vocab_size=50257, block_size=16, n_layer=2, n_head=2, n_embd=16)
    assert_same_logits(loaded.model, theirs, 50257)


def test_import_pretrained_writes_a_checkpoint(tmp_path):
    theirs = tiny_hf_gpt2()
    make_hub_cache(tmp_path / "cache", "openai-community/gpt2",
                   {"config.json": theirs.config.to_json_string().encode(),
                    "model.safetensors": save(hub_file_layout(theirs), {"format": "pt"})})
    out = hub.import_pretrained("openai-community/gpt2", tmp_path / "ckpt", cache_dir=tmp_path / "cache",
                                revision=COMMIT, local_files_only=True)
    ckpt = load_checkpoint(out)
    assert isinstance(ckpt.tokenizer, GPT2Tokenizer) and ckpt.model_config.vocab_size == 50257
    assert ckpt.extra == {"source": "openai-community/gpt2", "source_revision": COMMIT, "license": "mit"}
    assert_same_logits(ckpt.load_model(), theirs, 50257)
    card = hub.model_card(ckpt)
    assert "base_model: \"openai-community/gpt2\"" in card and "license: \"mit\"" in card


def test_load_local_folders_single_and_sharded(tmp_path):
    theirs = tiny_hf_gpt2()
    theirs.save_pretrained(tmp_path / "single")
    theirs.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    for folder in ("single", "sharded"):
        loaded = hub.load_pretrained(tmp_path / folder)
        assert loaded.source == str((tmp_path / folder).resolve()) and loaded.revision is None
        assert_same_logits(loaded.model, theirs, 50257)


def test_offline_and_not_cached_says_what_to_do(tmp_path, offline):
    with pytest.raises(hub.HubError, match=r"Could not download openai-community/gpt2 from the Hugging Face Hub "
                                           r"and it is not in the local cache \(offline mode is on.*local folder"):
        hub.load_pretrained("gpt2", cache_dir=tmp_path / "empty-cache")


def test_cached_config_without_weights_offline(tmp_path, offline):
    make_hub_cache(tmp_path / "cache", "openai-community/gpt2",
                   {"config.json": tiny_hf_gpt2().config.to_json_string().encode()})
    with pytest.raises(hub.HubError, match="not in the local cache"):
        hub.load_pretrained("gpt2", cache_dir=tmp_path / "cache")


def write_folder(folder: Path, config: dict, tensors: dict | None = None, **files: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    if tensors is not None:
        save_file(tensors, str(folder / "model.safetensors"))
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text)
    return folder


def test_bad_models_are_refused_with_reasons(tmp_path):
    theirs = tiny_hf_gpt2()
    sd = {k: v.clone() for k, v in theirs.state_dict().items()}
    config = theirs.config.to_dict()

    llama = write_folder(tmp_path / "llama", {**config, "model_type": "llama", "activation_function": "silu"}, sd)
    with pytest.raises(hub.HubError, match="(?s)model_type is 'llama'.*activation_function is 'silu'"):
        hub.load_pretrained(llama)

    wider = write_folder(tmp_path / "wider", {**config, "n_embd": 32}, sd)
    with pytest.raises(hub.HubError, match=r"transformer.wte.weight has shape \(50257, 16\), expected \(50257, 32\)"):
        hub.load_pretrained(wider)

    short = write_folder(tmp_path / "short", config, {k: v for k, v in sd.items() if ".h.1." not in k})
    with pytest.raises(hub.HubError, match=r"missing transformer\.h\.1\."):
        hub.load_pretrained(short)

    pickled = write_folder(tmp_path / "pickled", config)
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(hub.HubError, match="only pytorch_model.bin.*safetensors only"):
        hub.load_pretrained(pickled)

    other_bpe = write_folder(tmp_path / "other", config, sd, vocab_json=json.dumps({"a": 0}))
    with pytest.raises(hub.HubError, match="its own tokenizer"):
        hub.load_pretrained(other_bpe)

    with pytest.raises(hub.HubError, match="no config.json"):
        hub.load_pretrained(tmp_path)
    with pytest.raises(hub.HubError, match="not a folder"):
        hub.load_pretrained("./no/such/folder")
    with pytest.raises(hub.HubError, match="neither a folder nor"):
        hub.load_pretrained("not a repo!")
    ckpt, _ = char_checkpoint(tmp_path / "ours")
    with pytest.raises(hub.HubError, match="gptlab checkpoint already"):
        hub.load_pretrained(ckpt)


# --------------------------------------------------------------------------------------------
# Export


def test_export_gpt2_bpe_model_loads_in_transformers(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50257, block_size=16, n_layer=2, n_head=2, n_embd=16)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    save_checkpoint(tmp_path / "ckpt", model, cfg, GPT2Tokenizer())
    out = hub.export_hf(tmp_path / "ckpt", tmp_path / "hf")

    assert {"config.json", "model.safetensors", "README.md", "vocab.json", "merges.txt",
            "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    assert "tokenizer.json" not in {p.name for p in out.iterdir()}  # gptlab's file would confuse AutoTokenizer
    theirs = GPT2LMHeadModel.from_pretrained(out)
    c = theirs.config
    assert (c.n_positions, c.n_embd, c.n_layer, c.n_head, c.vocab_size) == (16, 16, 2, 2, 50257)
    assert c.activation_function == "gelu_new" and c.bos_token_id == c.eos_token_id == 50256
    assert theirs.lm_head.weight.data_ptr() == theirs.transformer.wte.weight.data_ptr()  # tied on load
    assert_same_logits(model, theirs, 50257)

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.encode(MULTILINGUAL, add_special_tokens=False) == GPT2Tokenizer().encode(MULTILINGUAL)
    back = hub.load_pretrained(out)  # and back into gptlab
    assert isinstance(back.tokenizer, GPT2Tokenizer)
    assert_same_logits(back.model, theirs, 50257)


@pytest.mark.parametrize("bias, activation", [(True, "gelu_tanh"), (False, "gelu")])
def test_export_char_model_loads_in_transformers(tmp_path, bias, activation):
    ckpt, model = char_checkpoint(tmp_path / "ckpt", bias=bias, activation=activation)
    out = hub.export_hf(ckpt, tmp_path / "hf", repo_id="alice/tiny-char")

    chars = json.loads((out / "vocab_chars.json").read_text(encoding="utf-8"))
    assert chars == load_checkpoint(ckpt).tokenizer.chars
    theirs = GPT2LMHeadModel.from_pretrained(out)  # bias=False becomes zero biases: the same function
    assert theirs.config.eos_token_id is None
    assert_same_logits(model, theirs, len(chars))
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "vocab_chars.json" in card and "Hugging Face tokenizers do not apply" in card

    back = hub.load_pretrained(out)  # a pushed char model can be imported again, with its vocabulary
    assert back.tokenizer.chars == chars and back.model.config.activation == activation
    assert_same_logits(back.model, theirs, len(chars))


def test_export_nanochat_model_loads_in_transformers_as_nanochat(tmp_path):
    ckpt, model = char_checkpoint(tmp_path / "ckpt", bias=False, architecture="nanochat")
    out = hub.export_hf(ckpt, tmp_path / "hf", repo_id="alice/tiny-nanochat")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(theirs, transformers.NanoChatForCausalLM)
    assert theirs.lm_head.weight.data_ptr() != theirs.model.embed_tokens.weight.data_ptr()  # untied
    vocab = model.config.vocab_size
    assert_same_logits(model, theirs, vocab)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "NanoChatForCausalLM.from_pretrained" in card and "- nanochat" in card and "GPT2" not in card

    back = hub.load_pretrained(out)
    assert back.model.config.architecture == "nanochat" and back.tokenizer.chars == load_checkpoint(ckpt).tokenizer.chars
    assert_same_logits(back.model, theirs, vocab)
    assert hub.export_hf(ckpt, out) == out  # an earlier nanochat export may be replaced


def test_nanochat_saved_by_transformers_imports_and_bad_ones_are_refused(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.NanoChatConfig(vocab_size=50257, hidden_size=16, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=16, initializer_range=0.5)
    theirs = transformers.NanoChatForCausalLM(cfg).eval()
    theirs.save_pretrained(tmp_path / "hf")
    loaded = hub.load_pretrained(tmp_path / "hf")
    assert isinstance(loaded.tokenizer, GPT2Tokenizer) and loaded.model_config.block_size == 16
    assert_same_logits(loaded.model, theirs, 50257)

    sd = {k: v.clone() for k, v in theirs.state_dict().items()}
    config = theirs.config.to_dict()
    bad = write_folder(tmp_path / "gqa", {**config, "num_key_value_heads": 1, "tie_word_embeddings": True,
                                          "hidden_act": "gelu"}, sd)
    with pytest.raises(hub.HubError, match="(?s)as a NanoChat.*hidden_act is 'gelu'.*num_key_value_heads is 1"
                                           ".*tie_word_embeddings is True"):
        hub.load_pretrained(bad)
    short = write_folder(tmp_path / "short", config, {k: v for k, v in sd.items() if "layers.1.self_attn.q" not in k})
    with pytest.raises(hub.HubError, match=r"missing transformer\.h\.1\.attn\.c_attn\.weight"):
        hub.load_pretrained(short)


def test_export_folder_rules(tmp_path):
    ckpt, _ = char_checkpoint(tmp_path / "ckpt")
    with pytest.raises(hub.HubError, match="other than the checkpoint"):
        hub.export_hf(ckpt, ckpt)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(hub.HubError, match="not an earlier export"):
        hub.export_hf(ckpt, tmp_path / "busy")
    out = hub.export_hf(ckpt, tmp_path / "hf")
    (out / "stale.txt").write_text("left from before")
    hub.export_hf(ckpt, out)  # an earlier export is replaced whole
    assert not (out / "stale.txt").exists()


# --------------------------------------------------------------------------------------------
# Model card


def test_model_card_describes_data_settings_losses_and_plot(tmp_path):
    run = tmp_path / "run"
    private = str(tmp_path / "secret-home-folder" / "hamlet.txt")
    ckpt, _ = char_checkpoint(  # extra and metrics shaped as gptlab.training writes them
        run / "best", train_config=TrainConfig(max_steps=300, learning_rate=2e-3, min_lr=2e-4), step=300,
        metrics={"train_loss": 1.234, "val_loss": 1.5, "best_val_loss": 1.45, "train_loss_step": 1.3, "step": 300},
        extra={"data": {"sources": [private], "documents": 1, "characters": 12345, "tokens": 12345,
                        "tokenizer": "char", "paths": [private], "description": "Hamlet, Act III.",
                        "license": "cc0-1.0"},
               "stats": {"tokens": 12345, "train_tokens": 11110, "val_tokens": 1235, "vocab_used": 40}})
    (run / "loss.png").write_bytes(b"\x89PNG fake plot")
    out = hub.export_hf(ckpt, tmp_path / "hf", repo_id="alice/hamlet")

    card = (out / "README.md").read_text(encoding="utf-8")
    assert (out / "loss.png").read_bytes() == b"\x89PNG fake plot"
    assert "![Training and validation loss](loss.png)" in card
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["pipeline_tag"] == "text-generation" and meta["library_name"] == "transformers"
    assert {"gptlab", "gpt2", "character-level"} <= set(meta["tags"]) and meta["license"] == "cc0-1.0"
    assert "base_model" not in meta
    for text in ("# hamlet", "Hamlet, Act III.", "| sources | hamlet.txt |", "| characters | 12,345 |",
                 "| train_tokens | 11,110 |", "| learning_rate | 0.002 |", "| max_steps | 300 |",
                 "Trained for 300 steps", "| Training loss | 1.234 |", "| Best validation loss | 1.45 |",
                 "| train_loss_step | 1.3 |", "| n_embd | 16 |",
                 'hf_hub_download("alice/hamlet", "vocab_chars.json")'):
        assert text in card, text
    assert card.count("| tokens | 12,345 |") == 1
    assert "secret-home-folder" not in card  # local paths are not published


def test_model_card_names_the_base_model_of_a_fine_tune(tmp_path):
    imported, _ = char_checkpoint(tmp_path / "imported", extra={"source": "openai-community/gpt2"})
    tuned, _ = char_checkpoint(tmp_path / "tuned", extra={"init_from": str(imported)})
    card = hub.model_card(tuned)
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model"] == "openai-community/gpt2" and meta["license"] == "mit"
    assert "Fine-tuned from [openai-community/gpt2]" in card


def test_model_card_without_training_record(tmp_path):
    ckpt, _ = char_checkpoint(tmp_path / "ckpt", extra={"init_from": str(tmp_path / "gone")})
    card = hub.model_card(ckpt)
    assert "Not recorded." in card and "## Results" not in card and "license" not in card.split("---")[1]
    assert "base_model" not in card


# --------------------------------------------------------------------------------------------
# Push


class RecordingApi:
    def __init__(self, error: Exception | None = None):
        self.calls, self.uploaded, self.error = [], {}, error

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))
        if self.error:
            raise self.error
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw))
        self.uploaded = {p.name: p.read_bytes() for p in Path(kw["folder_path"]).iterdir()}


def files_under(folder: Path):
    return [p for p in folder.rglob("*") if p.is_file()]


def test_push_uploads_the_export_and_passes_the_token_through(tmp_path):
    ckpt, _ = char_checkpoint(tmp_path / "ckpt", metrics={"val_loss": 1.5})
    api = RecordingApi()
    url = hub.push_to_hub(ckpt, "alice/tiny-char", token=TOKEN, private=True, api=api)

    assert url == "https://huggingface.co/alice/tiny-char"
    (_, repo_id, create_kw), (_, upload_kw) = api.calls
    assert repo_id == "alice/tiny-char" and create_kw["token"] == TOKEN
    assert create_kw["private"] is True and create_kw["exist_ok"] is True
    assert upload_kw["repo_id"] == "alice/tiny-char" and upload_kw["token"] == TOKEN
    assert "vocab.json" in upload_kw["delete_patterns"]  # stale files of an earlier push go
    assert not Path(upload_kw["folder_path"]).exists()  # the temporary export is gone
    assert set(api.uploaded) == {"config.json", "model.safetensors", "vocab_chars.json", "README.md"}
    assert "# tiny-char" in api.uploaded["README.md"].decode()
    for content in [*api.uploaded.values(), *(p.read_bytes() for p in files_under(tmp_path))]:
        assert TOKEN.encode() not in content


def test_push_through_huggingface_hub_api_seams(tmp_path, monkeypatch):
    ckpt, _ = char_checkpoint(tmp_path / "ckpt")
    api = RecordingApi()
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: api.create_repo(repo_id, **kw))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: api.upload_folder(**kw))
    hub.push_to_hub(ckpt, "alice/tiny-char", commit_message="First model")
    assert api.calls[0][2]["token"] is None  # huggingface_hub then finds HF_TOKEN or the login itself
    assert api.calls[1][1]["commit_message"] == "First model" and "README.md" in api.uploaded


def http_error(status: int) -> HfHubHTTPError:
    response = httpx2.Response(status, request=httpx2.Request("POST", "https://huggingface.co/api/repos/create"))
    return HfHubHTTPError(f"{status} Client Error: bad token {TOKEN}", response=response)


@pytest.mark.parametrize("status, message", [(401, "did not accept the token"), (403, "write access"),
                                             (500, r"refused the upload to alice/x \(HTTP 500\)")])
def test_push_http_errors_become_sentences_without_the_token(tmp_path, status, message):
    ckpt, _ = char_checkpoint(tmp_path / "ckpt")
    with pytest.raises(hub.HubError, match=message) as info:
        hub.push_to_hub(ckpt, "alice/x", token=TOKEN, api=RecordingApi(http_error(status)))
    assert TOKEN not in str(info.value)


def test_push_offline_and_bad_names(tmp_path, offline):
    ckpt, _ = char_checkpoint(tmp_path / "ckpt")
    with pytest.raises(hub.HubError, match="Could not upload to alice/x \\(offline mode is on"):
        hub.push_to_hub(ckpt, "alice/x", token=TOKEN)  # the real HfApi, refused by offline mode
    with pytest.raises(hub.HubError, match="not a valid Hub repository name"):
        hub.push_to_hub(ckpt, "alice/bad name!", api=RecordingApi())
    leaked = RecordingApi(RuntimeError(f"boom {TOKEN}"))
    with pytest.raises(hub.HubError, match=r"failed: RuntimeError: boom \*\*\*"):
        hub.push_to_hub(ckpt, "alice/x", token=TOKEN, api=leaked)


def test_gpt2_in_hub_layout_imports_offline_and_fine_tunes(tmp_path, offline):
    from gptlab.events import DoneEvent, EvalEvent
    from gptlab.training import TrainingRun

    theirs = tiny_hf_gpt2()
    make_hub_cache(tmp_path / "cache", "openai-community/gpt2",
                   {"config.json": theirs.config.to_json_string().encode(),
                    "model.safetensors": save(hub_file_layout(theirs), {"format": "pt"})})
    base = hub.import_pretrained("gpt2", tmp_path / "gpt2", cache_dir=tmp_path / "cache")
    text = tmp_path / "mine.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    run = TrainingRun.fine_tune(base, ModelConfig(block_size=8),
                                TrainConfig(tokenizer="char", batch_size=4, max_steps=12, eval_interval=6,
                                            eval_batches=2, warmup_steps=0, learning_rate=3e-3, sample_interval=0,
                                            device="cpu"),
                                tmp_path / "tuned", data_paths=[text])
    assert run.data.tokenizer.name == "gpt2"  # fine-tuning keeps GPT-2's tokenizer whatever was asked
    assert run.model_config.block_size == 8 and run.model_config.vocab_size == 50257
    events = list(run.events())
    evals = [e for e in events if isinstance(e, EvalEvent)]
    assert isinstance(events[-1], DoneEvent) and events[-1].status == "finished"
    assert evals[-1].val_loss < evals[0].val_loss  # it learnt from the new text
    tuned = load_checkpoint(tmp_path / "tuned" / "best")
    assert tuned.extra["base_model"] == "openai-community/gpt2" and tuned.extra["license"] == "mit"
