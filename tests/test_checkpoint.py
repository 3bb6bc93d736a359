"""Checkpoint folders: a faithful round trip, nothing executable on load, every problem of a damaged
folder reported at once, and saves that leave either the old checkpoint or the new one, whole."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gptlab.checkpoint import (
    CONFIG_FILE,
    FORMAT,
    STATE_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    best_or_last,
    load_checkpoint,
    save_checkpoint,
)
from gptlab.config import ModelConfig, TrainConfig
from gptlab.model import GPT
from gptlab.tokenizers import TOKENIZER_FILE, CharTokenizer, GPT2Tokenizer

TEXT = "hello world, héllo 😀\n"


def tiny_config(**kw) -> ModelConfig:
    base = dict(vocab_size=len(set(TEXT)), block_size=16, n_layer=2, n_head=2, n_embd=16)
    return ModelConfig(**{**base, **kw})


def build(seed=0, **kw):
    torch.manual_seed(seed)
    config = tiny_config(**kw)
    return GPT(config), config, CharTokenizer.from_text(TEXT)


def save(folder, seed=0, **kwargs) -> Path:
    model, config, tok = build(seed)
    return save_checkpoint(folder, model, config, tok, **kwargs)


def problems_of(folder) -> list[str]:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(folder)
    assert isinstance(info.value, ValueError)
    assert str(folder) in str(info.value)
    for p in info.value.problems:
        assert f"  - {p}" in str(info.value)  # every problem is on its own line of the message
    return info.value.problems


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


def _trainer_state(model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _, loss = model(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long))
    loss.backward()
    optimizer.step()
    gen = torch.Generator().manual_seed(123)
    torch.rand(3, generator=gen)  # move it off its seed, so the state is not trivially recreated
    return {
        "optimizer": optimizer.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "step": 7,
        "best_val_loss": 1.25,
        "data": {"cursor": 17, "order": [3, 1, 2], "name": "train", "done": False, "nothing": None},
    }


# --------------------------------------------------------------------------------------------
# Round trip


def test_round_trip(tmp_path):
    model, config, tok = build(seed=1, bias=False, dropout=0.1)
    train = TrainConfig(max_steps=50, warmup_steps=5, max_time=30.0, patience=2)
    state = _trainer_state(model)
    folder = save_checkpoint(tmp_path / "ckpt", model, config, tok, train_config=train, trainer_state=state,
                             step=7, metrics={"val_loss": 1.25, "train_loss": 1.5},
                             extra={"source": "test.txt", "notes": ["a", "ü"]})
    assert folder == tmp_path / "ckpt"
    assert sorted(os.listdir(folder)) == sorted([CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, STATE_FILE])

    ckpt = load_checkpoint(folder)
    assert ckpt.path == folder
    assert ckpt.model_config == config
    assert ckpt.train_config == train
    assert isinstance(ckpt.tokenizer, CharTokenizer) and ckpt.tokenizer.chars == tok.chars
    assert ckpt.step == 7
    assert ckpt.metrics == {"val_loss": 1.25, "train_loss": 1.5}
    assert ckpt.extra == {"source": "test.txt", "notes": ["a", "ü"]}
    assert ckpt.resumable

    loaded = ckpt.load_model()
    assert isinstance(loaded, GPT) and loaded.config == config
    original = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()  # still tied


def test_trainer_state_loads_safely_and_fully(tmp_path):
    model, config, tok = build(seed=2)
    state = _trainer_state(model)
    folder = save_checkpoint(tmp_path / "c", model, config, tok, trainer_state=state)
    back = load_checkpoint(folder).trainer_state()
    # Plain tensors and containers only, so a direct safe load works too.
    torch.load(folder / STATE_FILE, weights_only=True)
    assert set(back) == set(state)
    assert isinstance(back["generator"], torch.Tensor) and torch.equal(back["generator"], state["generator"])
    assert torch.equal(back["torch_rng"], state["torch_rng"])
    assert back["step"] == 7 and back["best_val_loss"] == 1.25 and back["data"] == state["data"]
    opt = back["optimizer"]
    assert opt["param_groups"] == state["optimizer"]["param_groups"]
    for key, values in state["optimizer"]["state"].items():
        for name, value in values.items():
            assert torch.equal(opt["state"][key][name], value)

    # The restored generator continues the same random stream.
    expected, resumed = torch.Generator(), torch.Generator()
    expected.set_state(state["generator"])
    resumed.set_state(back["generator"])
    assert torch.equal(torch.rand(5, generator=expected), torch.rand(5, generator=resumed))
    # And the optimizer state loads into a fresh optimizer.
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(back["optimizer"])


def test_gpt2_tokenizer_round_trip(tmp_path):
    torch.manual_seed(3)
    config = ModelConfig(vocab_size=50257, block_size=8, n_layer=1, n_head=1, n_embd=4)
    folder = save_checkpoint(tmp_path / "c", GPT(config), config, GPT2Tokenizer())
    ckpt = load_checkpoint(folder)
    assert isinstance(ckpt.tokenizer, GPT2Tokenizer)
    assert ckpt.tokenizer.encode("Hello, world") == [15496, 11, 995]
    assert ckpt.train_config is None and ckpt.step == 0 and ckpt.metrics == {} and ckpt.extra == {}


def test_config_json_is_readable(tmp_path):
    folder = save(tmp_path / "c", step=3)
    meta = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    assert meta["format"] == FORMAT and meta["step"] == 3
    assert meta["model"]["n_embd"] == 16 and meta["tokenizer"] == {"type": "char"}


def test_saves_the_compiled_models_original(tmp_path):
    model, config, tok = build(seed=4)

    class Compiled(torch.nn.Module):  # torch.compile's wrapper keeps the real module as _orig_mod
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    folder = save_checkpoint(tmp_path / "c", Compiled(model), config, tok)
    loaded = load_checkpoint(folder).load_model()
    assert torch.equal(loaded.transformer.wpe.weight, model.transformer.wpe.weight)


def test_trainer_state_of_a_non_resumable_checkpoint(tmp_path):
    ckpt = load_checkpoint(save(tmp_path / "c"))
    assert not ckpt.resumable
    with pytest.raises(CheckpointError, match=STATE_FILE) as info:
        ckpt.trainer_state()
    assert "resume" in str(info.value)


# --------------------------------------------------------------------------------------------
# Damaged folders: one error that lists every problem


def test_missing_folder(tmp_path):
    problems = problems_of(tmp_path / "nope")
    assert problems == ["the folder does not exist"]


def test_a_file_instead_of_a_folder(tmp_path):
    path = tmp_path / "ckpt"
    path.write_text("not a folder")
    assert problems_of(path) == ["it is a file, not a folder"]


@pytest.mark.parametrize("missing", [
    [CONFIG_FILE], [WEIGHTS_FILE], [TOKENIZER_FILE], [CONFIG_FILE, TOKENIZER_FILE],
    [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE],
])
def test_missing_files_are_all_listed(tmp_path, missing):
    folder = save(tmp_path / "c")
    for name in missing:
        (folder / name).unlink()
    problems = problems_of(folder)
    assert len(problems) == len(missing)
    for name in missing:
        assert any(name in p and "missing" in p for p in problems), (name, problems)


def test_config_not_json(tmp_path):
    folder = save(tmp_path / "c")
    (folder / CONFIG_FILE).write_text("{this is not json", encoding="utf-8")
    problems = problems_of(folder)
    assert len(problems) == 1 and CONFIG_FILE in problems[0] and "JSON" in problems[0]


def test_config_not_utf8(tmp_path):
    folder = save(tmp_path / "c")
    (folder / CONFIG_FILE).write_bytes(b"\xff\xfe\x00\x01")
    assert "JSON" in problems_of(folder)[0]


@pytest.mark.parametrize("meta", [{"format": "something-else", "model": {}}, {"model": {}}, ["a", "list"], "text"])
def test_wrong_format_marker(tmp_path, meta):
    folder = save(tmp_path / "c")
    (folder / CONFIG_FILE).write_text(json.dumps(meta), encoding="utf-8")
    problems = problems_of(folder)
    assert len(problems) == 1 and FORMAT in problems[0]


def _edit_meta(folder: Path, edit) -> None:
    meta = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    edit(meta)
    (folder / CONFIG_FILE).write_text(json.dumps(meta), encoding="utf-8")


@pytest.mark.parametrize("changes, field", [
    ({"n_head": 0}, "n_head"), ({"n_embd": 15}, "n_embd"), ({"dropout": 2.0}, "dropout"),
    ({"vocab_size": "many"}, "vocab_size"), ({"depth": 3}, "depth"), ({"dropout": "x"}, ""),
])
def test_bad_model_config_values(tmp_path, changes, field):
    folder = save(tmp_path / "c")
    _edit_meta(folder, lambda m: m["model"].update(changes))
    problems = problems_of(folder)
    assert len(problems) == 1 and "model config" in problems[0] and field in problems[0]


def test_bad_train_config_values(tmp_path):
    folder = save(tmp_path / "c", train_config=TrainConfig())
    _edit_meta(folder, lambda m: m["train"].update({"batch_size": -1}))
    problems = problems_of(folder)
    assert len(problems) == 1 and "train config" in problems[0] and "batch_size" in problems[0]


@pytest.mark.parametrize("edit", [
    lambda m: m.pop("model"),
    lambda m: m.__setitem__("model", "n_layer=2"),
    lambda m: m.__setitem__("train", {"device": None}),
    lambda m: m.__setitem__("step", "seven"),
], ids=["no-model-section", "model-is-text", "train-device-null", "step-not-a-number"])
def test_malformed_config_sections_are_checkpoint_errors(tmp_path, edit):
    folder = save(tmp_path / "c", train_config=TrainConfig())
    _edit_meta(folder, edit)
    problems_of(folder)


def test_tokenizer_problems_are_listed(tmp_path):
    folder = save(tmp_path / "c")
    (folder / TOKENIZER_FILE).write_text(json.dumps({"type": "sentencepiece"}), encoding="utf-8")
    problems = problems_of(folder)
    assert len(problems) == 1 and "sentencepiece" in problems[0]


def test_tokenizer_larger_than_the_model(tmp_path):
    folder = save(tmp_path / "c")
    CharTokenizer.from_text(TEXT + "XYZ").save(folder)
    problems = problems_of(folder)
    assert len(problems) == 1 and "tokens" in problems[0]


def test_several_problems_at_once(tmp_path):
    folder = save(tmp_path / "c")
    (folder / CONFIG_FILE).write_text("{", encoding="utf-8")
    (folder / WEIGHTS_FILE).unlink()
    (folder / TOKENIZER_FILE).write_text("[]", encoding="utf-8")
    problems = problems_of(folder)
    assert len(problems) == 3
    assert any(CONFIG_FILE in p and "JSON" in p for p in problems)
    assert any(WEIGHTS_FILE in p and "missing" in p for p in problems)
    assert any(TOKENIZER_FILE in p for p in problems)


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],
    lambda data: data[:20],
    lambda data: b"",
    lambda data: b"this is not a safetensors file at all" * 10,
], ids=["half", "header-cut", "empty", "garbage"])
def test_damaged_weights_fail_on_load_model(tmp_path, damage):
    folder = save(tmp_path / "c")
    path = folder / WEIGHTS_FILE
    path.write_bytes(damage(path.read_bytes()))
    ckpt = load_checkpoint(folder)  # metadata is fine; the weights are read on demand
    with pytest.raises(CheckpointError, match=WEIGHTS_FILE):
        ckpt.load_model()


def test_weights_of_a_different_shape(tmp_path):
    folder = save(tmp_path / "c")
    torch.manual_seed(0)
    other = GPT(tiny_config(n_embd=32))
    save_file({k: v.contiguous() for k, v in other.state_dict().items() if k != "lm_head.weight"},
              str(folder / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match=WEIGHTS_FILE):
        load_checkpoint(folder).load_model()


def test_weights_missing_or_extra_tensors(tmp_path):
    folder = save(tmp_path / "c")
    model, _, _ = build()
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    sd.pop("transformer.ln_f.weight")
    sd["transformer.surprise"] = torch.zeros(2)
    save_file(sd, str(folder / WEIGHTS_FILE))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(folder).load_model()
    problems = info.value.problems
    assert len(problems) == 2
    assert "transformer.ln_f.weight" in problems[0] and "transformer.surprise" in problems[1]


class Payload:
    """A pickled object that would run code (touch a file) if it were ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_trainer_state_with_a_pickled_object_is_refused(tmp_path):
    folder = save(tmp_path / "c")
    marker = tmp_path / "code-ran"
    torch.save({"step": 1, "payload": Payload(marker)}, folder / STATE_FILE)
    ckpt = load_checkpoint(folder)
    assert ckpt.resumable
    with pytest.raises(CheckpointError, match=STATE_FILE):
        ckpt.trainer_state()
    assert not marker.exists()


def test_trainer_state_garbage(tmp_path):
    folder = save(tmp_path / "c")
    (folder / STATE_FILE).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match=STATE_FILE):
        load_checkpoint(folder).trainer_state()


# --------------------------------------------------------------------------------------------
# Atomic saves


def test_save_twice_leaves_only_the_new_checkpoint(tmp_path):
    folder = tmp_path / "runs" / "best"  # parents are created
    save(folder, seed=1, step=1, trainer_state={"step": 1})
    model, config, tok = build(seed=2)
    save_checkpoint(folder, model, config, tok, step=2)
    assert siblings(folder) == ["best"]
    ckpt = load_checkpoint(folder)
    assert ckpt.step == 2
    assert not ckpt.resumable  # the old trainer_state.pt did not leak into the new folder
    assert torch.equal(ckpt.load_model().transformer.wte.weight, model.transformer.wte.weight)


def _fail(*args, **kwargs):
    raise RuntimeError("disk full (simulated)")


def test_failure_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "best"
    save(folder, seed=1, step=1)
    before = {name: (folder / name).read_bytes() for name in os.listdir(folder)}

    model, config, tok = build(seed=2)
    monkeypatch.setattr(tok, "save", _fail)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(folder, model, config, tok, step=2)
    assert siblings(folder) == ["best"]
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before
    assert load_checkpoint(folder).step == 1


def test_failure_on_a_first_save_leaves_nothing(tmp_path, monkeypatch):
    model, config, tok = build()
    monkeypatch.setattr(tok, "save", _fail)
    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path / "best", model, config, tok)
    assert list(tmp_path.iterdir()) == []


def test_failure_at_the_final_rename_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "best"
    save(folder, seed=1, step=1)
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == folder and ".tmp-" in Path(src).name:
            raise OSError("rename failed (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    model, config, tok = build(seed=2)
    with pytest.raises(OSError):
        save_checkpoint(folder, model, config, tok, step=2)
    monkeypatch.undo()
    assert siblings(folder) == ["best"]
    assert load_checkpoint(folder).step == 1


def test_best_or_last_prefers_best_then_last_and_ignores_half_written_folders(tmp_path):
    run = tmp_path / "run"
    assert best_or_last(run) is None
    save(run / "last")
    assert best_or_last(run) == run / "last"
    (run / "best").mkdir()  # an empty folder (a save that never completed) is not a checkpoint
    assert best_or_last(run) == run / "last"
    save(run / "best")
    assert best_or_last(run) == run / "best"
