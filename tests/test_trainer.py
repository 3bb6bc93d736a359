import math
import threading

import pytest
import torch
import torch.nn as nn

from gptlab.config import ModelConfig, TrainConfig
from gptlab.data import TokenDataset
from gptlab.events import CheckpointEvent, DoneEvent, EvalEvent, SampleEvent, StepEvent
from gptlab.model import GPT
from gptlab.trainer import Trainer, make_optimizer
from gptlab.training import TrainingRun

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 20


# Smaller than conftest's tiny configs: these tests drive the Trainer itself, on raw ids (mod 64) and
# models that need not be GPTs, one or two micro-steps at a time.
def small_train_config(**overrides) -> TrainConfig:
    base = dict(batch_size=4, max_steps=12, eval_interval=4, eval_batches=2, warmup_steps=2, learning_rate=3e-3,
                min_lr=3e-4, sample_interval=0, device="cpu", seed=7)
    return TrainConfig(**{**base, **overrides})


def small_model_config(**overrides) -> ModelConfig:
    return ModelConfig(**{**dict(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16), **overrides})


def dataset(block_size=16) -> TokenDataset:
    ids = torch.tensor([ord(c) % 64 for c in TEXT])
    return TokenDataset(ids, block_size)


class Recorder:
    def __init__(self):
        self.saved = []

    def __call__(self, label, state, metrics):
        self.saved.append((label, state["step"]))
        return f"/nowhere/{label}"


def test_event_order_and_contents():
    save = Recorder()
    trainer = Trainer(GPT(small_model_config()), small_train_config(sample_interval=6), dataset(), save=save,
                      sample=lambda m: "sampled text")
    events = list(trainer.run())

    assert isinstance(events[0], EvalEvent) and events[0].step == 0
    assert abs(events[0].val_loss - math.log(64)) < 0.3
    steps = [e.step for e in events if isinstance(e, StepEvent)]
    assert steps == list(range(1, 13))
    assert [e.step for e in events if isinstance(e, EvalEvent)] == [0, 4, 8, 12]
    assert [e.step for e in events if isinstance(e, SampleEvent)] == [6, 12]
    assert all(e.text == "sampled text" for e in events if isinstance(e, SampleEvent))
    assert isinstance(events[-1], DoneEvent) and events[-1].status == "finished"
    assert "max_steps" in events[-1].reason
    assert events[-2] == CheckpointEvent(12, "last", "/nowhere/last")
    assert save.saved[-1] == ("last", 12)
    best_saves = [s for label, s in save.saved if label == "best"]
    best_evals = [e.step for e in events if isinstance(e, EvalEvent) and e.is_best and e.step > 0]
    assert best_saves == best_evals

    first = next(e for e in events if isinstance(e, StepEvent))
    assert first.tokens_seen == 4 * 16 and first.tokens_per_sec > 0 and first.grad_norm > 0
    assert first.lr == pytest.approx(3e-3 * 1 / 3)  # warmup: step 0 of 2
    evals = [e for e in events if isinstance(e, EvalEvent)]
    assert evals[-1].val_loss < evals[0].val_loss
    assert evals[-1].val_ppl == pytest.approx(math.exp(evals[-1].val_loss))


def test_stop_flag_takes_effect_before_the_next_step():
    stop = threading.Event()
    trainer = Trainer(GPT(small_model_config()), small_train_config(max_steps=1000), dataset(), save=Recorder())
    seen = []
    for event in trainer.run(stop):
        seen.append(event)
        if isinstance(event, StepEvent) and event.step == 3:
            stop.set()
    after = seen[[i for i, e in enumerate(seen) if isinstance(e, StepEvent) and e.step == 3][0] + 1:]
    assert not any(isinstance(e, StepEvent) for e in after)
    assert isinstance(seen[-1], DoneEvent) and seen[-1].status == "stopped" and seen[-1].step == 3
    assert isinstance(seen[-2], CheckpointEvent) and seen[-2].label == "last"


def test_the_step_hook_is_called_once_per_step_with_its_number():
    calls = []
    trainer = Trainer(GPT(small_model_config()), small_train_config(max_steps=12, log_interval=5), dataset(),
                      on_step=lambda step: calls.append((step, trainer.step)))
    events = list(trainer.run())
    assert calls == [(s, s) for s in range(1, 13)]  # the step just taken, whatever the log interval
    assert isinstance(events[-1], DoneEvent) and events[-1].step == 12


def test_a_step_hook_that_sets_the_stop_flag_stops_the_run_at_that_step():
    stop, calls = threading.Event(), []

    def hook(step):
        calls.append(step)
        if step == 3:
            stop.set()

    trainer = Trainer(GPT(small_model_config()), small_train_config(max_steps=1000, log_interval=1), dataset(),
                      save=Recorder(), on_step=hook)
    events = list(trainer.run(stop))
    assert calls == [1, 2, 3] and trainer.step == 3
    assert [e.step for e in events if isinstance(e, StepEvent)] == [1, 2, 3]  # step 3's event still comes
    assert isinstance(events[-1], DoneEvent) and events[-1].status == "stopped" and events[-1].step == 3


def test_a_failing_step_hook_ends_the_run_with_its_error():
    def hook(step):
        if step == 2:
            raise RuntimeError("hook failed")

    trainer = Trainer(GPT(small_model_config()), small_train_config(max_steps=10, log_interval=1), dataset(),
                      on_step=hook)
    seen = []
    with pytest.raises(RuntimeError, match="hook failed"):
        for event in trainer.run():
            seen.append(event)
    assert [e.step for e in seen if isinstance(e, StepEvent)] == [1]


def test_stop_from_another_thread():
    stop = threading.Event()
    trainer = Trainer(GPT(small_model_config()), small_train_config(max_steps=100_000, log_interval=1), dataset())
    steps_after = []
    for event in trainer.run(stop):
        if isinstance(event, StepEvent) and event.step == 5:
            threading.Timer(0.0, stop.set).start()
            stop.wait(1.0)
        elif isinstance(event, StepEvent) and stop.is_set():
            steps_after.append(event.step)
    assert steps_after == []
    assert trainer.step == 5


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, optimizer):
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    model_config = small_model_config(dropout=0.1)  # dropout makes the global RNG part of the state
    train_config = small_train_config(grad_accum_steps=2, optimizer=optimizer)

    def losses(run, stop_at=None):
        stop = threading.Event()
        out = {}
        for event in run.events(stop):
            if isinstance(event, StepEvent):
                out[event.step] = event.loss
                if event.step == stop_at:
                    stop.set()
        return out

    full = losses(TrainingRun.new(model_config, train_config, tmp_path / "a", data_paths=[data]))
    first = losses(TrainingRun.new(model_config, train_config, tmp_path / "b", data_paths=[data]), stop_at=5)
    assert max(first) == 5
    rest = losses(TrainingRun.resume(tmp_path / "b"))
    assert min(rest) == 6 and max(rest) == 12
    for step in range(1, 13):
        resumed = first.get(step, rest.get(step))
        assert resumed == pytest.approx(full[step], rel=1e-6, abs=1e-6), step


class FlakyModel(nn.Module):
    """A model-agnostic stand-in: the trainer must only need forward(x, y) -> (_, loss)."""

    def __init__(self, nan_at_call=None, learnable=True):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.calls, self.nan_at_call, self.learnable = 0, nan_at_call, learnable

    def forward(self, x, y):
        if self.training:
            self.calls += 1
        loss = ((self.w * x.float().mean() / 10).pow(2) if self.learnable else self.w * 0 + 1.0).sum()
        if self.training and self.calls == self.nan_at_call:
            loss = loss * float("nan")
        return None, loss


def test_nan_loss_fails_clearly_and_keeps_the_last_good_weights():
    model, save = FlakyModel(nan_at_call=4), Recorder()
    trainer = Trainer(model, small_train_config(max_steps=50), dataset(), save=save)
    events = list(trainer.run())
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.status == "diverged"
    assert "nan" in done.reason and "step 4" in done.reason and "learning rate" in done.reason
    assert done.step == 3
    assert all(label != "last" for label, _ in save.saved)  # the bad state never overwrites a checkpoint
    assert torch.isfinite(model.w).all()


def test_a_loss_far_above_the_threshold_ends_the_run_as_diverged():
    class Exploding(FlakyModel):
        def forward(self, x, y):
            _, loss = super().forward(x, y)
            return None, loss * (1000.0 if self.training and self.calls >= 3 else 1.0)

    model, save = Exploding(), Recorder()
    events = list(Trainer(model, small_train_config(max_steps=50), dataset(), save=save, diverge_above=1000.0).run())
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.status == "diverged" and done.step == 2
    assert "above 1000.00, past which a run has blown up" in done.reason and "learning rate" in done.reason
    assert all(label != "last" for label, _ in save.saved)  # the blown-up weights are never saved
    healthy = list(Trainer(FlakyModel(), small_train_config(max_steps=5), dataset(), diverge_above=1000.0).run())
    assert healthy[-1].status == "finished"


def test_early_stopping_with_patience():
    trainer = Trainer(FlakyModel(learnable=False), small_train_config(max_steps=1000, eval_interval=2, patience=2),
                      dataset())
    done = list(trainer.run())[-1]
    assert done.status == "finished" and "early stopping" in done.reason
    assert done.step == 4  # best at step 0, no better at steps 2 and 4


def test_time_budget_stops_the_run():
    trainer = Trainer(GPT(small_model_config()), small_train_config(max_steps=10**9, max_time=0.5, eval_interval=10**6),
                      dataset())
    events = list(trainer.run())
    done = events[-1]
    assert done.status == "finished" and "time budget" in done.reason
    steps = [e for e in events if isinstance(e, StepEvent)]
    # The final evaluation fits in the budget too: the run may pass it by a step or so, which on a
    # loaded machine (this test runs beside others) can itself take longer than the slack.
    slowest_step = max(b.elapsed - a.elapsed for a, b in zip(steps, steps[1:])) if len(steps) > 1 else 0.0
    assert 0.3 <= done.elapsed < 0.5 + 0.25 + 2 * slowest_step
    lrs = [e.lr for e in steps]
    assert lrs[-1] < 0.5 * max(lrs)  # the cosine decay followed the clock
    assert isinstance(events[-2], EvalEvent)  # the run ends with a known validation loss


def test_gradient_norm_is_reported_before_clipping():
    trainer = Trainer(GPT(small_model_config()), small_train_config(max_steps=3, grad_clip=1e-3), dataset())
    norms = [e.grad_norm for e in trainer.run() if isinstance(e, StepEvent)]
    assert all(n > 1e-2 for n in norms)


def test_gradient_accumulation_matches_one_big_batch():
    """Two micro-batches of 4 must give the same update as one batch of 8 drawn the same way."""
    torch.manual_seed(0)
    base = GPT(small_model_config())
    data = dataset()

    def step_with(batch, accum):
        model = GPT(small_model_config())
        model.load_state_dict(base.state_dict())
        trainer = Trainer(model, small_train_config(batch_size=batch, grad_accum_steps=accum, max_steps=1,
                                                    warmup_steps=0),
                          data)
        generator = torch.Generator().manual_seed(3)
        x, y = data.train_batch(8, generator)
        batches = iter([(x, y)] if accum == 1 else [(x[:4], y[:4]), (x[4:], y[4:])])
        trainer.data = type("Fixed", (), {"train_batch": lambda self, b, g: next(batches)})()
        trainer._train_step()
        return model.state_dict()

    one, two = step_with(8, 1), step_with(4, 2)
    for name in one:
        torch.testing.assert_close(one[name], two[name], rtol=1e-5, atol=1e-6)


def test_weight_decay_applies_only_to_linear_weights():
    model = GPT(small_model_config())
    optimizer = make_optimizer(model, small_train_config(weight_decay=0.1), torch.device("cpu"))
    decay, no_decay = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "transformer.h.0.attn.c_attn.weight" in decayed and "transformer.h.0.mlp.c_proj.weight" in decayed
    assert not any(n.endswith("bias") or "ln_" in n or "wte" in n or "wpe" in n for n in decayed)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_the_fused_cpu_optimizer_steps_like_the_reference_adamw():
    """make_optimizer picks the fused kernel for speed; it must move the weights as AdamW's for-loop does."""
    def run(fused: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = GPT(small_model_config())
        optimizer = make_optimizer(model, small_train_config(weight_decay=0.1), torch.device("cpu"))
        assert optimizer.defaults["fused"]
        if not fused:
            groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
            optimizer = torch.optim.AdamW(groups, lr=optimizer.defaults["lr"], betas=optimizer.defaults["betas"],
                                          foreach=False)
        for step in range(3):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(step)) + 0.5
            optimizer.step()
        return [p.detach() for p in model.parameters()]

    for fused, reference in zip(run(True), run(False)):
        torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-6)


def test_same_seed_same_run():
    def losses():
        torch.manual_seed(123)
        trainer = Trainer(GPT(small_model_config()), small_train_config(max_steps=6), dataset())
        return [e.loss for e in trainer.run() if isinstance(e, StepEvent)]

    assert losses() == losses()


def test_precision_auto_is_fp32_on_cpu_and_bf16_is_used_only_where_native():
    from gptlab.trainer import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("fp32", cpu) == "fp32"
    from gptlab.kernels import native_bf16

    native = native_bf16()
    assert resolve_precision("bf16", cpu) == ("bf16" if native else "fp32")
    trainer = Trainer(GPT(small_model_config()), small_train_config(max_steps=4, precision="bf16"), dataset())
    losses = [e.loss for e in trainer.run() if isinstance(e, StepEvent)]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert trainer.model.transformer.wte.weight.dtype == torch.float32  # autocast keeps fp32 master weights
