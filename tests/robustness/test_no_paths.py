"""What leaves the server names files, never where they live: messages, run statuses and downloads."""

import pytest

from gptlab.service import Lab, Limits
from gptlab.views import without_paths


@pytest.mark.parametrize("text, expected", [
    ("[Errno 28] No space left on device: '/data/runs/abc/.last.tmp-1/model.safetensors'",
     "[Errno 28] No space left on device: 'model.safetensors'"),
    ("/srv/app/runs/0a1b/last is not a usable gptlab checkpoint", "last is not a usable gptlab checkpoint"),
    ("C:\\Users\\me\\notes.txt is empty", "notes.txt is empty"),
    ("35,000 tokens/s at step 1/2, see https://huggingface.co/gpt2", "35,000 tokens/s at step 1/2, see https://huggingface.co/gpt2"),
    ("train / validation", "train / validation"),
])
def test_absolute_paths_are_cut_to_file_names_and_other_text_is_kept(text, expected):
    assert without_paths(text) == expected


def test_a_failed_runs_status_shows_no_server_path(tmp_path, monkeypatch):
    lab = Lab(tmp_path / "runs", limits=Limits(poll_seconds=0.05))
    settings = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_steps=3, eval_interval=1,
                    eval_batches=1, sample_interval=0, max_time=0, patience=0)
    import gptlab.training as training

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(lab.registry.root / "x" / "model.safetensors"))

    monkeypatch.setattr(training, "save_checkpoint", full_disk)
    views = list(lab.start(owner="", source="Paste text", files=None, pasted="to be or not to be. " * 80,
                           tokenizer="char", start_from="Scratch (random weights)", settings=settings))
    status = views[-1].status
    assert "failed" in status and str(tmp_path) not in status and "The disk is full" in status
