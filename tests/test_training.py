"""TrainingRun wiring: a run folder with init/, best/, last/ and an event log; resuming continues
exactly where a run stopped; fine-tuning starts from a checkpoint's weights and tokenizer; and the
ways a user can get this wrong end in clear errors before any training starts.

Most tests start from conftest's tiny_run, shared by the session: those that change it work on a copy."""

import json
import shutil

import pytest
import torch

from gptlab.checkpoint import STATE_FILE, load_checkpoint
from gptlab.config import ConfigError
from gptlab.data import DataError
from gptlab.runfolder import LOSS_PLOT, METRICS_FILE
from gptlab.tokenizers import UnknownCharactersError
from gptlab.tracking import TENSORBOARD_DIR
from gptlab.training import TrainingRun


@pytest.fixture
def new_run(tiny_model_config, tiny_train_config):
    """new_run(out_dir, data_paths=None, texts=None, **train overrides) -> TrainingRun.new of the tiny configs."""
    def new_run(out_dir, data_paths=None, texts=None, **train) -> TrainingRun:
        return TrainingRun.new(tiny_model_config(), tiny_train_config(**train), out_dir, data_paths=data_paths,
                               texts=texts)
    return new_run


@pytest.fixture
def tiny_data(tiny_run):
    return tiny_run.parent / "tiny.txt"  # the file tiny_run trained on


def read_log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines()]


def weights(folder) -> dict[str, torch.Tensor]:
    return load_checkpoint(folder).load_model().state_dict()


def copy_run(run_dir, tmp_path):
    shutil.copytree(run_dir, tmp_path / "run")
    return tmp_path / "run"


# --------------------------------------------------------------------------------------------
# A run folder


def test_a_run_writes_init_best_last_and_a_log(tiny_run, tiny_data, tiny_text):
    run_dir = tiny_run
    assert sorted(p.name for p in run_dir.iterdir()) == ["best", "init", "last", LOSS_PLOT, METRICS_FILE, TENSORBOARD_DIR]
    init, best, last = (load_checkpoint(run_dir / n) for n in ("init", "best", "last"))
    assert init.step == 0 and not init.resumable  # the untrained weights, only for comparisons
    assert last.step == 20 and last.resumable and (run_dir / "last" / STATE_FILE).is_file()
    assert best.resumable and best.metrics["val_loss"] == pytest.approx(best.metrics["best_val_loss"])
    assert last.metrics["val_loss"] < 0.9 * read_log(run_dir)[0]["val_loss"]  # it learned something
    assert last.extra["data"]["sources"] == [str(tiny_data)]
    assert last.extra["stats"]["tokens"] == len(tiny_text)
    assert last.model_config.vocab_size == len(set(tiny_text))


def test_the_log_has_one_json_line_per_event(new_run, tiny_text, tmp_path):
    events = list(new_run(tmp_path / "run", texts=[tiny_text], max_steps=4, eval_interval=2).events())
    assert read_log(tmp_path / "run") == [json.loads(json.dumps(e.as_dict())) for e in events]


def test_the_log_holds_the_whole_run(tiny_run):
    log = read_log(tiny_run)
    kinds = [entry["event"] for entry in log]
    assert kinds[0] == "eval" and log[0]["step"] == 0
    assert kinds[-1] == "done" and log[-1]["status"] == "finished" and log[-1]["step"] == 20
    assert kinds.count("step") == 20 and kinds.count("eval") == 3
    assert {"checkpoint"} <= set(kinds)
    assert [e["label"] for e in log if e["event"] == "checkpoint"][-1] == "last"


def test_an_existing_run_folder_is_not_overwritten(tiny_run, tiny_data, new_run, tiny_model_config,
                                                 tiny_train_config):
    run_dir, data = tiny_run, tiny_data
    before = (run_dir / METRICS_FILE).read_bytes()
    with pytest.raises(ConfigError, match="already holds a run") as e:
        new_run(run_dir, [data])
    assert "resume" in str(e.value).lower()
    with pytest.raises(ConfigError, match="already holds a run"):
        TrainingRun.fine_tune(run_dir / "best", tiny_model_config(), tiny_train_config(), run_dir, [data])
    assert (run_dir / METRICS_FILE).read_bytes() == before


def test_a_new_run_needs_its_configs_and_folder(tiny_run, tiny_text, tiny_model_config, tiny_train_config,
                                               tmp_path):
    model_config, train_config = tiny_model_config(), tiny_train_config()
    for config_missing in ((None, train_config), (model_config, None)):
        with pytest.raises(ConfigError, match="A new run needs a model config, a train config and an output folder"):
            TrainingRun.new(*config_missing, tmp_path / "run", texts=[tiny_text])
        with pytest.raises(ConfigError, match="A new run needs a model config"):
            TrainingRun.fine_tune(tiny_run, *config_missing, tmp_path / "run", texts=[tiny_text])
    assert not (tmp_path / "run").exists()


def test_bad_data_fails_before_anything_is_written(new_run, tmp_path):
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(DataError, match="binary"):
        new_run(tmp_path / "run", [binary])
    assert not (tmp_path / "run").exists()


def test_pasted_text_run(new_run, tiny_text, tmp_path):
    run = new_run(tmp_path / "run", texts=[tiny_text], max_steps=2, eval_interval=1)
    assert run.data.description["sources"] == ["pasted text"]
    assert run.data.stats.characters == len(tiny_text)
    list(run.events())
    assert load_checkpoint(tmp_path / "run" / "last").step == 2


# --------------------------------------------------------------------------------------------
# Resuming


def test_resume_continues_from_last_and_appends_to_the_log(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path)
    log_before = read_log(run_dir)
    init_before = (run_dir / "init" / "model.safetensors").read_bytes()
    run = TrainingRun.resume(run_dir, max_steps=30)
    assert run.resumed and run.out_dir == run_dir and run.trainer.step == 20
    assert run.train_config.max_steps == 30
    events = list(run.events())
    assert events[0].kind == "step" and events[0].step == 21  # no second step-0 evaluation
    assert events[-1].kind == "done" and events[-1].step == 30
    log = read_log(run_dir)
    assert log[:len(log_before)] == log_before and len(log) == len(log_before) + len(events)
    assert load_checkpoint(run_dir / "last").step == 30
    assert (run_dir / "init" / "model.safetensors").read_bytes() == init_before


def test_resume_from_a_checkpoint_folder_finds_its_run(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path)
    run = TrainingRun.resume(run_dir / "last", max_steps=22)
    assert run.out_dir == run_dir and run.trainer.step == 20
    list(run.events())
    assert load_checkpoint(run_dir / "last").step == 22


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_is_exact(new_run, tiny_text, tmp_path, optimizer):
    """20 steps, stop, resume to 30 gives the same weights as 30 steps straight (a constant
    schedule, so raising max_steps does not change the learning rates), with either optimiser: its
    state goes through the checkpoint (loaded with weights_only=True)."""
    (tmp_path / "d.txt").write_text(tiny_text, encoding="utf-8")
    data = [tmp_path / "d.txt"]
    list(new_run(tmp_path / "straight", data, max_steps=30, lr_schedule="constant", optimizer=optimizer).events())
    list(new_run(tmp_path / "split", data, max_steps=20, lr_schedule="constant", optimizer=optimizer).events())
    list(TrainingRun.resume(tmp_path / "split", max_steps=30).events())
    a, b = weights(tmp_path / "straight" / "last"), weights(tmp_path / "split" / "last")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_resuming_the_init_checkpoint_is_a_clear_error(tiny_run):
    with pytest.raises(ConfigError, match="no trainer state") as e:
        TrainingRun.resume(tiny_run / "init")
    assert "init_from" in str(e.value)


def test_resuming_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        TrainingRun.resume(tmp_path / "nope")


def test_resuming_a_char_run_on_text_with_new_characters(tiny_run, tiny_text, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path)
    other = tmp_path / "other.txt"
    other.write_text(tiny_text + "ZEBRA ÆON\n", encoding="utf-8")
    with pytest.raises(UnknownCharactersError) as e:
        TrainingRun.resume(run_dir, data_paths=[other], max_steps=30)
    assert e.value.chars == sorted(set("ZEBRAÆON"))
    assert "'Z'" in str(e.value) and "never saw" in str(e.value)


def test_pasted_text_is_kept_so_the_run_can_resume_without_it(new_run, tiny_text, tmp_path):
    list(new_run(tmp_path / "run", texts=[tiny_text], max_steps=2, eval_interval=1).events())
    assert (tmp_path / "run" / "data" / "pasted-1.txt").read_text(encoding="utf-8") == tiny_text
    run = TrainingRun.resume(tmp_path / "run", max_steps=4)
    assert run.trainer.step == 2 and run.documents == [tiny_text]


def test_resuming_a_pasted_text_run_with_the_text(new_run, tiny_text, tmp_path):
    list(new_run(tmp_path / "run", texts=[tiny_text], max_steps=2, eval_interval=1).events())
    run = TrainingRun.resume(tmp_path / "run", texts=[tiny_text], max_steps=3)
    assert run.trainer.step == 2 and run.data.stats.characters == len(tiny_text)


def test_every_kind_of_run_calls_its_step_hook_after_each_step(tiny_run, tiny_text, tiny_model_config,
                                                              tiny_train_config, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path)
    model_config, train_config = tiny_model_config(), tiny_train_config(max_steps=2, eval_interval=2)
    runs = {"new": lambda hook: TrainingRun.new(model_config, train_config, tmp_path / "new", texts=[tiny_text],
                                                step_hook=hook),
            "resume": lambda hook: TrainingRun.resume(run_dir, max_steps=22, step_hook=hook),
            "fine_tune": lambda hook: TrainingRun.fine_tune(run_dir, model_config, train_config, tmp_path / "tuned",
                                                            texts=[tiny_text], step_hook=hook)}
    steps = {}
    for kind, build in runs.items():
        steps[kind] = []
        list(build(steps[kind].append).events())
    assert steps == {"new": [1, 2], "resume": [21, 22], "fine_tune": [1, 2]}


# --------------------------------------------------------------------------------------------
# Fine-tuning from a checkpoint


def test_init_from_starts_from_the_weights_and_keeps_the_tokenizer(tiny_run, tiny_model_config, tiny_train_config,
                                                                   tmp_path):
    run_dir = tiny_run
    source = load_checkpoint(run_dir / "best")
    subset = tmp_path / "subset.txt"
    subset.write_text("the lazy dog is not gold. " * 30, encoding="utf-8")  # fewer characters than the source
    model_config, train_config = tiny_model_config(), tiny_train_config(max_steps=3, eval_interval=3, tokenizer="gpt2")
    run = TrainingRun.fine_tune(run_dir, model_config, train_config, tmp_path / "tuned", data_paths=[subset])
    assert run.data.tokenizer.chars == source.tokenizer.chars  # not rebuilt from the new text
    assert run.train_config.tokenizer == "char"
    assert run.model_config == source.model_config
    start = {k: v.cpu() for k, v in run.trainer.model.state_dict().items()}
    for name, value in weights(run_dir / "best").items():
        torch.testing.assert_close(start[name], value, rtol=0, atol=0, msg=name)
    assert run.extra["init_from"] == str(run_dir / "best")
    list(run.events())
    assert load_checkpoint(tmp_path / "tuned" / "init").tokenizer.chars == source.tokenizer.chars
    assert load_checkpoint(tmp_path / "tuned" / "last").step == 3  # a new run counts from 0


def test_init_from_crops_the_context(tiny_run, tiny_data, tiny_model_config, tiny_train_config, tmp_path):
    run_dir, data = tiny_run, tiny_data
    model_config, train_config = tiny_model_config(), tiny_train_config(max_steps=2, eval_interval=2)
    run = TrainingRun.fine_tune(run_dir / "last", model_config.replace(block_size=16), train_config,
                                tmp_path / "short", data_paths=[data])
    assert run.model_config.block_size == 16
    wpe = run.trainer.model.state_dict()["transformer.wpe.weight"]
    source_wpe = weights(run_dir / "last")["transformer.wpe.weight"]
    assert wpe.shape[0] == 16
    torch.testing.assert_close(wpe.cpu(), source_wpe[:16], rtol=0, atol=0)
    x, _ = run.data.dataset.train_batch(2)
    assert x.shape == (2, 16)
    list(run.events())
    assert load_checkpoint(tmp_path / "short" / "last").model_config.block_size == 16


def test_init_from_never_grows_the_context(tiny_run, tiny_data, tiny_model_config, tiny_train_config, tmp_path):
    run_dir, data = tiny_run, tiny_data
    model_config, train_config = tiny_model_config(), tiny_train_config(max_steps=1)
    run = TrainingRun.fine_tune(run_dir, model_config.replace(block_size=64), train_config, tmp_path / "long",
                                data_paths=[data])
    assert run.model_config.block_size == 32


def test_init_from_a_run_without_a_best_checkpoint_starts_from_its_last(tiny_run, tiny_text, tiny_model_config,
                                                                       tiny_train_config, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path)
    shutil.rmtree(run_dir / "best")  # a run stopped before its first evaluation after step 0
    run = TrainingRun.fine_tune(run_dir, tiny_model_config(), tiny_train_config(max_steps=1), tmp_path / "tuned",
                                texts=[tiny_text])
    assert run.extra["init_from"] == str(run_dir / "last")


def test_init_from_on_text_with_new_characters(tiny_run, tiny_text, tiny_model_config, tiny_train_config, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(tiny_text.upper(), encoding="utf-8")
    with pytest.raises(UnknownCharactersError, match="never saw"):
        TrainingRun.fine_tune(tiny_run, tiny_model_config(), tiny_train_config(), tmp_path / "x", data_paths=[other])
