"""`python -m gptlab`: train, info, sample and resume end to end on the tiny preset, and every
mistake a user can make ends as one `error: ...` line on stderr with exit status 2, no traceback.

Most tests call gptlab.cli.main in-process (fast); two run the real entry point in a subprocess.
import/export/push are covered by the hub tests, but for export --format gguf (tests/test_gguf_export.py
checks the file itself)."""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptlab.checkpoint import load_checkpoint
from gptlab.cli import EXIT_USAGE, main
from gptlab.runfolder import METRICS_FILE

REPO = Path(__file__).resolve().parent.parent
TRAIN = ["--preset", "tiny", "--device", "cpu", "--eval-interval", "10", "--sample-interval", "0"]
EVAL_LINE = re.compile(r"step +(\d+): train loss (\d+\.\d+) \(ppl [\d.]+\), val loss (\d+\.\d+)")


def run_cli(argv) -> tuple[int, str, str]:
    """main(argv) in-process: (exit status, stdout, stderr); argparse's exits become statuses."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def assert_user_error(code, err, *fragments):
    assert code == EXIT_USAGE, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_text):
    """One 30-step run through the CLI; tests that change it work on a copy."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "data.txt"
    data.write_text(tiny_text, encoding="utf-8")
    torch.manual_seed(0)
    code, out, err = run_cli(["train", "--data", data, "--max-steps", 30, "--out", root / "run", *TRAIN])
    return root / "run", data, code, out, err


# --------------------------------------------------------------------------------------------
# train


def test_train_runs_and_reports_progress(trained):
    run_dir, data, code, out, err = trained
    assert code == 0, err
    assert "Traceback" not in out + err
    evals = [(int(s), float(t), float(v)) for s, t, v in EVAL_LINE.findall(out + err)]
    assert [s for s, _, _ in evals] == [0, 10, 20, 30]
    assert evals[-1][2] < evals[0][2]  # val loss went down
    assert f"run folder: {run_dir}" in err and "tokens" in err and "parameters" in err
    assert "finished: reached max_steps (30)" in out and f"--resume {run_dir}" in out
    for name in ("init", "best", "last"):
        assert (run_dir / name / "model.safetensors").is_file()
    assert load_checkpoint(run_dir / "last").step == 30
    log = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    assert log[-1]["event"] == "done" and log[-1]["step"] == 30


def test_train_overrides_reach_the_configs(trained):
    ck = load_checkpoint(trained[0] / "last")
    assert ck.train_config.max_steps == 30 and ck.train_config.eval_interval == 10
    assert ck.train_config.sample_interval == 0 and ck.train_config.device == "cpu"
    assert ck.model_config.block_size == 32 and ck.model_config.n_layer == 2  # the tiny preset


def test_train_into_an_existing_run_folder_is_refused(trained):
    run_dir, data = trained[:2]
    code, _, err = run_cli(["train", "--data", data, "--max-steps", 2, "--out", run_dir, *TRAIN])
    assert_user_error(code, err, "already holds a run", "--resume")


def test_resume_continues_to_the_new_max_steps(trained, tmp_path):
    shutil.copytree(trained[0], tmp_path / "run")
    code, out, err = run_cli(["train", "--resume", tmp_path / "run", "--max-steps", 40])
    assert code == 0, err
    assert [int(s) for s, _, _ in EVAL_LINE.findall(out)] == [40]
    assert "finished: reached max_steps (40)" in out
    assert load_checkpoint(tmp_path / "run" / "last").step == 40


# --------------------------------------------------------------------------------------------
# info


def test_info_prints_parameters_and_metrics(trained):
    run_dir = trained[0]
    code, out, err = run_cli(["info", "--checkpoint", run_dir / "last"])
    assert code == 0, err
    ck = load_checkpoint(run_dir / "last")
    params = ck.model_config.num_params()
    assert f"parameters: {params:,}" in out
    assert "step: 30" in out and "resumable: yes" in out and "tokenizer: char" in out
    metrics = json.loads(re.search(r"^metrics: (.*)$", out, re.M).group(1))
    assert metrics["val_loss"] == pytest.approx(ck.metrics["val_loss"], abs=1e-4)
    model = json.loads(re.search(r"^model: (.*)$", out, re.M).group(1))
    assert model["n_embd"] == 32


def test_info_on_a_run_folder_uses_best(trained):
    code, out, _ = run_cli(["info", "--checkpoint", trained[0]])
    assert code == 0 and f"checkpoint: {trained[0] / 'best'}" in out


def test_info_on_a_run_folder_without_best_uses_last(trained, tmp_path):
    shutil.copytree(trained[0], tmp_path / "run", ignore=shutil.ignore_patterns("best"))
    code, out, _ = run_cli(["info", "--checkpoint", tmp_path / "run"])
    assert code == 0 and f"checkpoint: {tmp_path / 'run' / 'last'}" in out


def test_info_on_init_is_not_resumable(trained):
    code, out, _ = run_cli(["info", "--checkpoint", trained[0] / "init"])
    assert code == 0 and "resumable: no" in out and "step: 0" in out


# --------------------------------------------------------------------------------------------
# sample


def sample(run_dir, *extra):
    return run_cli(["sample", "--checkpoint", run_dir, "--max-new-tokens", 20, *extra])


def test_sample_continues_the_prompt_and_is_reproducible(trained, tiny_text):
    run_dir = trained[0]
    code, out, err = sample(run_dir, "--prompt", "the lazy ", "--seed", 1)
    assert code == 0, err
    assert out.startswith("the lazy ") and out.endswith("\n")
    generated = out[len("the lazy "):-1]
    assert 0 < len(generated) <= 20 and set(generated) <= set(tiny_text)  # char model: one char per token
    again = sample(run_dir, "--prompt", "the lazy ", "--seed", 1)
    assert again[1] == out
    others = {sample(run_dir, "--prompt", "the lazy ", "--seed", s)[1] for s in (2, 3, 4)}
    assert others - {out}  # another seed, another text


def test_sample_greedy_and_without_a_prompt(trained):
    run_dir = trained[0]
    a = sample(run_dir, "--prompt", "to be", "--strategy", "greedy")
    b = sample(run_dir, "--prompt", "to be", "--strategy", "greedy", "--seed", 99)
    assert a[0] == 0 and a[1] == b[1] and a[1].startswith("to be")
    code, out, err = sample(run_dir, "--seed", 0)
    assert code == 0 and out.strip(), err


def test_sample_stops_at_a_stop_string(trained):
    code, out, _ = sample(trained[0], "--prompt", "the", "--strategy", "greedy", "--max-new-tokens", 60,
                          "--stop", " ")
    assert code == 0 and " " not in out[len("the"):]


# --------------------------------------------------------------------------------------------
# User errors: one line, exit status 2, no traceback


def test_missing_data_file(tmp_path):
    code, _, err = run_cli(["train", "--data", tmp_path / "nope.txt", "--out", tmp_path / "run", *TRAIN])
    assert_user_error(code, err, "nope.txt", "does not exist")
    assert not (tmp_path / "run").exists()


def test_binary_data_file(tmp_path):
    (tmp_path / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    code, _, err = run_cli(["train", "--data", tmp_path / "photo.txt", "--out", tmp_path / "run", *TRAIN])
    assert_user_error(code, err, "photo.txt", "binary")


def test_wrong_kind_of_file(tmp_path):
    (tmp_path / "paper.pdf").write_bytes(b"%PDF-1.4")
    code, _, err = run_cli(["train", "--data", tmp_path / "paper.pdf", "--out", tmp_path / "run", *TRAIN])
    assert_user_error(code, err, "paper.pdf", ".txt or .md")


@pytest.mark.parametrize("flags, fragment", [
    (["--n-head", 3, "--n-embd", 32], "divisible by n_head"),
    (["--learning-rate", -1], "learning_rate must be above 0"),
    (["--val-fraction", 1.5], "val_fraction"),
    (["--batch-size", 0], "batch_size"),
    (["--dropout", 1.0], "dropout"),
])
def test_bad_hyperparameters(tmp_path, tiny_text, flags, fragment):
    (tmp_path / "d.txt").write_text(tiny_text, encoding="utf-8")
    code, _, err = run_cli(["train", "--data", tmp_path / "d.txt", "--out", tmp_path / "run", *TRAIN, *flags])
    assert_user_error(code, err, fragment)


def test_unknown_preset_is_an_argparse_error(tmp_path):
    code, _, err = run_cli(["train", "--preset", "enormous", "--out", tmp_path / "run"])
    assert code == 2 and "invalid choice" in err and "Traceback" not in err


def test_text_too_short_for_the_context(tmp_path):
    (tmp_path / "short.txt").write_text("far too short for a context of 32 tokens", encoding="utf-8")
    code, _, err = run_cli(["train", "--data", tmp_path / "short.txt", "--out", tmp_path / "run", *TRAIN])
    assert_user_error(code, err, "too short", "context length of 32", "at most 3")


def test_resume_of_the_init_checkpoint(trained):
    code, _, err = run_cli(["train", "--resume", trained[0] / "init", "--max-steps", 40])
    assert_user_error(code, err, "no trainer state", "init_from")


def test_sample_with_characters_outside_the_vocabulary(trained):
    code, out, err = sample(trained[0], "--prompt", "QUIZ")
    assert_user_error(code, err, "never saw", "'Q'")
    assert out == ""  # nothing half-printed before the error


def test_sampling_at_temperature_zero(trained):
    code, _, err = sample(trained[0], "--prompt", "the", "--temperature", 0)
    assert_user_error(code, err, "temperature must be above 0", "greedy")


def test_sample_with_a_bad_setting(trained):
    code, _, err = sample(trained[0], "--prompt", "the", "--top-p", 1.5)
    assert_user_error(code, err, "top_p")


def test_sample_from_a_missing_checkpoint(tmp_path):
    code, _, err = sample(tmp_path / "no-such-run", "--prompt", "the")
    assert_user_error(code, err, "no-such-run", "does not exist")


def test_sample_from_a_missing_checkpoint_exits_2(tmp_path):
    code, _, err = sample(tmp_path / "no-such-run", "--prompt", "the")
    assert code == EXIT_USAGE and err.startswith("error: ") and "Traceback" not in err
    assert "no-such-run" in err and "does not exist" in err


# --------------------------------------------------------------------------------------------
# The real entry point


def python_m_gptlab(*argv, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "gptlab", *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_entry_point_samples(trained):
    a = python_m_gptlab("sample", "--checkpoint", trained[0], "--prompt", "the ", "--max-new-tokens", 20,
                        "--seed", 1)
    assert a.returncode == 0, a.stderr
    assert a.stdout == sample(trained[0], "--prompt", "the ", "--seed", 1)[1]  # same as in-process


def test_entry_point_reports_a_user_error(tmp_path):
    p = python_m_gptlab("train", "--data", tmp_path / "missing.txt", "--out", tmp_path / "run", "--preset", "tiny")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_export_gguf_writes_the_file_and_says_how_to_run_it(trained, tmp_path):
    gguf = pytest.importorskip("gguf")
    code, out, err = run_cli(["export", "--checkpoint", trained[0], "--format", "gguf", "--out", tmp_path / "m.gguf"])
    assert code == 0, err
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    assert reader.fields["general.file_type"].contents() == 1  # f16 unless asked otherwise
    assert (tmp_path / "m.Modelfile").is_file()
    assert f"llama-completion -m {tmp_path / 'm.gguf'}" in out and "-c 32 " in out  # the tiny preset's context
    assert f"ollama create my-model -f {tmp_path / 'm.Modelfile'}" in out
    code, out, err = run_cli(["export", "--checkpoint", trained[0], "--format", "gguf", "--dtype", "f32",
                              "--out", tmp_path / "m.gguf"])
    assert code == 0 and gguf.GGUFReader(tmp_path / "m.gguf").fields["general.file_type"].contents() == 0


@pytest.mark.parametrize("flags,fragment", [
    (["--format", "gguf", "--dtype", "q4_k"], "must be one of f16, f32, q8_0"),
    (["--format", "gguf"], "with the .gguf suffix"),  # --out names a folder-like path below
    (["--dtype", "f16"], "--dtype chooses the weights of a GGUF file"),
])
def test_export_mistakes_are_one_line(trained, tmp_path, flags, fragment):
    pytest.importorskip("gguf")
    assert_user_error(*run_cli(["export", "--checkpoint", trained[0], "--out", tmp_path / "out", *flags])[::2],
                      fragment)


def test_export_gguf_without_gguf_says_what_to_install(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)
    code, _, err = run_cli(["export", "--checkpoint", trained[0], "--format", "gguf", "--out", tmp_path / "m.gguf"])
    assert_user_error(code, err, "pip install gguf==0.19.0")


def test_a_nanochat_model_trains_samples_exports_to_hf_and_is_refused_as_gguf(tmp_path, tiny_text):
    data = tmp_path / "data.txt"
    data.write_text(tiny_text, encoding="utf-8")
    code, out, err = run_cli(["train", "--data", data, "--max-steps", 20, "--out", tmp_path / "run", *TRAIN,
                              "--architecture", "nanochat"])
    assert code == 0, err
    losses = [float(m.group(2)) for m in EVAL_LINE.finditer(out)]
    assert len(losses) >= 2 and losses[-1] < losses[0]  # it learns
    assert load_checkpoint(tmp_path / "run" / "best").model_config.architecture == "nanochat"
    code, out, err = run_cli(["sample", "--checkpoint", tmp_path / "run", "--prompt", "th", "--max-new-tokens", 20,
                              "--seed", 1])
    assert code == 0 and out.startswith("th") and len(out.strip()) >= 10, err
    code, out, err = run_cli(["export", "--checkpoint", tmp_path / "run", "--out", tmp_path / "hf"])
    assert code == 0 and json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "nanochat", err
    code, out, err = run_cli(["export", "--checkpoint", tmp_path / "run", "--format", "gguf", "--out", tmp_path / "m.gguf"])
    assert_user_error(code, err, "architecture is 'nanochat'", "--format hf")
    code, out, err = run_cli(["train", "--init-from", tmp_path / "run", "--data", data, "--block-size", 16,
                              "--max-steps", 4, "--out", tmp_path / "tuned", *TRAIN])
    tuned = load_checkpoint(tmp_path / "tuned" / "last").model_config
    assert code == 0 and (tuned.architecture, tuned.block_size) == ("nanochat", 16), err  # a fine-tune keeps it
