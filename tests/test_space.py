"""Where the app runs (gptlab.space), told by the environment variables a Hugging Face Space sets: the
duplicate link, the presets that fit the hardware, where runs go, and the note the app shows."""

from __future__ import annotations

import pytest

from gptlab.presets import DEFAULT_PRESET, PRESETS
from gptlab.space import Space, banner_markdown, detect

CPU_PRESETS = ("tiny", "char-cpu", "nanochat-cpu", "nanogpt-cpu")


def no_gpu() -> bool:
    return False


def a_gpu() -> bool:
    return True


def never_asked() -> bool:
    raise AssertionError("off a Space, or on ZeroGPU, CUDA is not asked about")


@pytest.fixture
def storage(tmp_path):
    """A folder standing in for a Space's persistent storage (/data)."""
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def test_off_a_space_nothing_changes_and_no_note_is_shown(monkeypatch, storage):
    monkeypatch.delenv("SPACE_ID", raising=False)
    space = detect(storage=storage, cuda=never_asked)
    assert space == Space() and space.duplicate_url is None
    assert space.presets == tuple(PRESETS) and space.default_preset == DEFAULT_PRESET
    assert space.runs_dir("runs") == "runs"  # a /data on one's own machine is not a Space's storage
    assert banner_markdown(space, "runs") == ""


@pytest.mark.parametrize("value", ["", "   ", "no-slash", "a/b/c", "../x", "owner/name with spaces"])
def test_a_space_id_no_space_would_set_counts_as_no_space(value, storage):
    assert detect({"SPACE_ID": value}, storage=storage, cuda=never_asked) == Space()


def test_a_cpu_space_offers_the_cpu_presets_links_to_a_copy_and_says_runs_are_temporary(monkeypatch, tmp_path):
    monkeypatch.setenv("SPACE_ID", "someone/gpt-lab")
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    space = detect(storage=tmp_path / "missing", cuda=no_gpu)
    assert space == Space(id="someone/gpt-lab")
    assert space.duplicate_url == "https://huggingface.co/spaces/someone/gpt-lab?duplicate=true"
    assert space.presets == CPU_PRESETS and space.default_preset == DEFAULT_PRESET in CPU_PRESETS
    assert all(not PRESETS[name].gpu for name in space.presets)
    assert space.runs_dir("runs") == "runs" and not space.keeps_runs("runs")
    note = banner_markdown(space, "runs")
    assert f"[Duplicate this Space]({space.duplicate_url})" in note
    assert "CPU only" in note and ", ".join(CPU_PRESETS) in note and "char-gpu" not in note
    assert "**Runs are temporary here**: this Space has no persistent storage" in note and "48 hours" in note


def test_a_gpu_space_offers_every_preset_and_starts_from_the_gpu_one(storage):
    space = detect({"SPACE_ID": "someone/gpt-lab"}, storage=storage, cuda=a_gpu)
    assert space.gpu and space.presets == tuple(PRESETS) and space.default_preset == "char-gpu"
    assert PRESETS["char-gpu"].gpu and PRESETS["gpt2"].gpu
    note = banner_markdown(space, space.runs_dir("runs"))
    assert "a GPU" in note and "**char-gpu**" in note


def test_zero_gpu_counts_as_cpu_and_says_why(storage):
    space = detect({"SPACE_ID": "someone/gpt-lab", "SPACES_ZERO_GPU": "true"}, storage=storage, cuda=never_asked)
    assert space.zero_gpu and not space.gpu and space.presets == CPU_PRESETS
    assert "ZeroGPU" in banner_markdown(space, "runs")


def test_persistent_storage_keeps_the_runs_unless_another_folder_was_asked_for(storage, tmp_path):
    space = detect({"SPACE_ID": "someone/gpt-lab"}, storage=storage, cuda=no_gpu)
    assert space.storage == storage
    runs = space.runs_dir("runs")
    assert runs == str(storage / "runs") and space.keeps_runs(runs)
    note = banner_markdown(space, runs)
    assert "**Runs are kept**" in note and "survive restarts" in note and str(storage) not in note
    elsewhere = str(tmp_path / "mine")
    assert space.runs_dir(elsewhere) == elsewhere and not space.keeps_runs(elsewhere)
    assert "**Runs are temporary here**: this app keeps its runs outside" in banner_markdown(space, elsewhere)


def test_storage_that_cannot_be_written_is_no_storage(storage, monkeypatch):
    import gptlab.space

    monkeypatch.setattr(gptlab.space.os, "access", lambda path, mode: False)  # as root, chmod would not stop a write
    assert detect({"SPACE_ID": "someone/gpt-lab"}, storage=storage, cuda=no_gpu).storage is None


def test_the_app_on_a_cpu_space_shows_the_note_and_offers_only_the_cpu_presets(tmp_path):
    import gradio as gr

    from gptlab.service import Lab
    from gptlab.ui import build_demo

    lab = Lab(tmp_path / "runs")
    space = detect({"SPACE_ID": "someone/gpt-lab"}, storage=tmp_path / "missing", cuda=no_gpu)
    demo = build_demo(lab, space)
    blocks = list(demo.blocks.values())
    banner = next(b for b in blocks if isinstance(b, gr.Markdown) and b.elem_id == "space-banner")
    assert banner.value == banner_markdown(space, lab.registry.root)
    preset = next(b for b in blocks if isinstance(b, gr.Dropdown) and b.label == "Preset")
    assert [value for _, value in preset.choices] == list(CPU_PRESETS) and preset.value == DEFAULT_PRESET
    assert preset.preprocess("char-gpu") == "char-gpu"  # a GPU preset from a link or the API is allowed, not offered
    assert not any(isinstance(b, gr.Markdown) and b.elem_id == "space-banner"
                   for b in build_demo(Lab(tmp_path / "local"), Space()).blocks.values())
