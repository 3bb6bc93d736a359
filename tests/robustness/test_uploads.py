"""Uploaded checkpoint zips are data: hostile ones are refused with a sentence, and nothing in one
can run code, fill the disk or ask for unbounded memory (each case was a finding against main)."""

import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from gptlab.checkpoint import save_checkpoint
from gptlab.config import ModelConfig
from gptlab.model import GPT
from gptlab.service import Lab, Limits
from gptlab.tokenizers import CharTokenizer
from tests.forms import decoding

GREEDY = decoding(max_new_tokens=4)


class Boom:
    """Unpickling this would write a file: the proof that a pickle ran."""
    def __reduce__(self):
        return (Path.write_text, (Path("/tmp/gptlab-pickle-ran"), "ran"))


@pytest.fixture
def lab(tmp_path):
    return Lab(tmp_path / "runs", limits=Limits(max_params=200_000, max_checkpoint_mb=2.0))


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    tokenizer = CharTokenizer.from_text("hello world")
    config = ModelConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "ckpt", GPT(config), config, tokenizer)


def zip_of(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def checkpoint_files(folder: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.name: p.read_bytes() for p in folder.iterdir()}


def sample(lab, archive) -> str:
    return list(lab.sample(owner="", run_id=None, which="uploaded .zip", upload=str(archive), prompt="he",
                           decoding=GREEDY))[-1].text


def no_leftovers(lab) -> bool:
    uploads = lab.registry.root / "_uploads"
    return not uploads.exists() or not [p for p in uploads.iterdir() if p.name.endswith(".tmp")]


def test_a_good_upload_samples_and_unpacks_only_what_sampling_reads(lab, checkpoint, tmp_path):
    archive = zip_of(tmp_path / "good.zip", {**checkpoint_files(checkpoint, "run/best/"), "run/best/notes.txt": b"x"})
    assert sample(lab, archive).startswith("he")
    (folder,) = (lab.registry.root / "_uploads").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt", "..\\evil.txt",
                                  "C:\\evil.txt", "c:/evil.txt", "\\\\server\\share\\evil.txt"])
def test_paths_that_leave_the_folder_are_refused(lab, checkpoint, tmp_path, name):
    archive = zip_of(tmp_path / "evil.zip", {**checkpoint_files(checkpoint), name: b"gotcha"})
    with pytest.raises(ValueError, match=r"evil\.zip contains an unsafe path .*; it was not unpacked"):
        sample(lab, archive)
    assert not list(tmp_path.rglob("evil.txt")) and no_leftovers(lab)


def test_a_random_zip_and_a_file_that_is_no_zip_are_refused(lab, tmp_path):
    with pytest.raises(ValueError, match=r"photos\.zip holds no config\.json: it is not a gptlab checkpoint"):
        sample(lab, zip_of(tmp_path / "photos.zip", {"holiday/readme.txt": b"not a model"}))
    (tmp_path / "noise.zip").write_bytes(bytes(range(256)) * 10)
    with pytest.raises(ValueError, match=r"noise\.zip is not a \.zip file"):
        sample(lab, tmp_path / "noise.zip")


def test_a_zip_bomb_stops_at_the_limit_counting_real_bytes(lab, checkpoint, tmp_path):
    bomb = {**checkpoint_files(checkpoint), "model.safetensors": b"\0" * (8 * 2**20)}  # 8 MB of zeros, ~8 KB zipped
    archive = zip_of(tmp_path / "bomb.zip", bomb)
    assert archive.stat().st_size < 100_000
    with pytest.raises(ValueError, match=r"bomb\.zip unpacks to more than 2 MB, this server's limit"):
        sample(lab, archive)
    assert no_leftovers(lab)


def test_a_zip_whose_headers_lie_about_a_size_is_refused_and_leaves_nothing(lab, checkpoint, tmp_path):
    files = checkpoint_files(checkpoint)
    archive = zip_of(tmp_path / "liar.zip", files)
    data = bytearray(archive.read_bytes())
    # Claim the weights are 100 bytes, in the local header (offset 22) and the central directory (offset 24).
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = -1
        while (at := data.find(signature, at + 1)) != -1:
            name_length = struct.unpack_from("<H", data, at + (26 if signature == b"PK\x03\x04" else 28))[0]
            name_start = at + (30 if signature == b"PK\x03\x04" else 46)
            if bytes(data[name_start:name_start + name_length]) == b"model.safetensors":
                struct.pack_into("<I", data, at + offset, 100)
    archive.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"liar\.zip is damaged or not a plain zip"):
        sample(lab, archive)
    assert no_leftovers(lab)


@pytest.mark.parametrize("planted", ["trainer_state.pt", "pytorch_model.bin", "model.pkl"])
def test_planted_pickles_are_never_unpacked_or_run(lab, checkpoint, tmp_path, planted):
    marker = Path("/tmp/gptlab-pickle-ran")
    marker.unlink(missing_ok=True)
    archive = zip_of(tmp_path / "pickled.zip", {**checkpoint_files(checkpoint), planted: pickle.dumps(Boom())})
    assert sample(lab, archive).startswith("he")
    assert not marker.exists()
    assert not list((lab.registry.root / "_uploads").rglob(planted))


def test_a_config_that_declares_a_huge_model_is_refused_before_it_is_built(lab, checkpoint, tmp_path):
    import json

    files = checkpoint_files(checkpoint)
    config = json.loads(files["config.json"])
    config["model"].update(n_layer=8, n_embd=16384, n_head=16)  # about 26 billion parameters' worth of memory
    files["config.json"] = json.dumps(config).encode()
    with pytest.raises(ValueError, match=r"its model has [\d,.]+M parameters; this server allows 0\.2M"):
        sample(lab, zip_of(tmp_path / "huge.zip", files))


def test_a_config_that_does_not_match_the_weights_lists_the_problem_without_paths(lab, checkpoint, tmp_path):
    import json

    files = checkpoint_files(checkpoint)
    config = json.loads(files["config.json"])
    config["model"]["n_layer"] = 2
    files["config.json"] = json.dumps(config).encode()
    with pytest.raises(ValueError) as info:
        sample(lab, zip_of(tmp_path / "mismatch.zip", files))
    message = str(info.value)
    assert message.startswith("This checkpoint is not a usable gptlab checkpoint") and "h.1." in message
    assert str(lab.registry.root) not in message and str(tmp_path) not in message


def test_a_downloaded_checkpoint_names_its_data_by_file_name_not_server_path(tmp_path):
    import json

    lab = Lab(tmp_path / "runs", limits=Limits(poll_seconds=0.05))
    data = tmp_path / "secret-folder" / "my-notes.txt"
    data.parent.mkdir()
    data.write_text("to be or not to be, that is the question. " * 60, encoding="utf-8")
    settings = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_steps=2, eval_interval=2,
                    eval_batches=1, sample_interval=0, max_time=0, patience=0)
    final = list(lab.start(owner="", source="Upload files", files=[str(data)], pasted="", tokenizer="char",
                           start_from="Scratch (random weights)", settings=settings))[-1]
    archive = lab.downloads(owner=final.owner, run_id=final.run_id)[0]
    config = zipfile.ZipFile(archive).read("config.json").decode()
    assert str(tmp_path) not in config and "secret-folder" not in config
    assert json.loads(config)["extra"]["data"]["paths"] == ["01-my-notes.txt"]
    assert sample(lab, archive).startswith("he")  # still a checkpoint that loads
