"""A training loop that knows nothing of GPT or of any UI.

It needs a model whose forward(x, y) returns (anything, loss), a data source with
train_batch(batch_size, generator) and eval_batches(split, batch_size, count=...), and it yields
typed events. Saving and sampling are callbacks, so the same loop serves the CLI and the app; so is
`on_step`, called with the step number after every optimiser step (tests pace or hold runs with it),
and `snapshot`, called after every evaluation with the model: each (prompt, greedy, sampled) text it
returns becomes a SnapshotEvent (the app's time machine).

A crash loses little: `last` is saved at every evaluation and at least every `checkpoint_seconds`.
The stop flag is looked at before every step, between micro-batches and between evaluation
batches; a stop ends the run at the last completed optimiser step, saved as `last`.

Several processes (`dist`, gptlab.distributed) run the same loop on their own windows; they agree once
a step on the loss, the clock and the stop flag, and rank 0 alone writes checkpoints and samples.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import nullcontext
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
import torch.nn as nn

from gptlab.config import TrainConfig
from gptlab.distributed import LOCAL, Dist, pick_device, resolve_precision  # noqa: F401  (the trainer's names)
from gptlab.kernels import keep_freed_memory
from gptlab.optim import make_optimizer
from gptlab.events import CheckpointEvent, DoneEvent, EvalEvent, Event, SampleEvent, SnapshotEvent, StepEvent

LAST = "last"  # the checkpoint a resume continues from (gptlab.runfolder names a run's folders)
SaveFn = Callable[[str, dict[str, Any], dict[str, Any]], str]  # (label, trainer_state, metrics) -> path
SampleFn = Callable[[nn.Module], str]
StepHook = Callable[[int], None]  # (the step just taken) -> None
SnapshotFn = Callable[[nn.Module], Sequence[tuple[str, str, str]]]  # model -> [(prompt, greedy, sampled)]

# Saving a 30M-parameter model takes well under a second, so once a minute costs little; once a step
# would cost more than the training.
CHECKPOINT_SECONDS = 60.0


class StopFlag(threading.Event):
    """A stop flag that may say who asked (a signal, a server shutting down): the run's DoneEvent
    gives that reason. A plain threading.Event works as a stop flag too."""

    def __init__(self):
        super().__init__()
        self.reason = ""

    def set(self, reason: str = "") -> None:
        if reason and not self.is_set():
            self.reason = reason
        super().set()


class SaveError(ValueError):
    """What a save callback raises, with a sentence for the user, when a checkpoint cannot be
    written: the run then ends as failed with that sentence instead of a traceback."""


class _Stopped(Exception):
    """The stop flag, seen in the middle of an evaluation or of a step's micro-batches."""


class DataSource(Protocol):
    def train_batch(self, batch_size: int, generator: torch.Generator | None = None): ...
    def eval_batches(self, split: str, batch_size: int, *, count: int | None = None): ...


class Trainer:
    def __init__(self, model: nn.Module, config: TrainConfig, data: DataSource, *,
                 save: SaveFn | None = None, sample: SampleFn | None = None, device: torch.device | None = None,
                 on_step: StepHook | None = None, checkpoint_seconds: float | None = CHECKPOINT_SECONDS,
                 diverge_above: float | None = None, snapshot: SnapshotFn | None = None, dist: Dist = LOCAL):
        if checkpoint_seconds is not None and not checkpoint_seconds > 0:
            raise ValueError(f"checkpoint_seconds must be a number of seconds above 0, or None to save last only "
                             f"at evaluations; got {checkpoint_seconds!r}.")
        self.config = config
        self.checkpoint_seconds = checkpoint_seconds
        self.diverge_above = diverge_above  # a training loss above this ends the run as diverged
        self.device = device or pick_device(config.device)
        if self.device.type == "cpu":
            keep_freed_memory()  # or every step pays page faults for its activations
        self.dist = dist
        # On the device, and DDP around it; or FSDP's shards of it, moved to the device block by block.
        self.model, wrapped = dist.wrap(model, self.device, fsdp=config.fsdp)
        self.data = data
        # Rank 0 alone writes samples; under FSDP no rank holds the whole weights to generate from.
        texts = dist.is_main and not dist.fsdp
        self.save_fn, self.sample_fn, self.on_step = save, sample if texts else None, on_step
        self.snapshot_fn = snapshot if texts else None
        self.optimizer = make_optimizer(self.model, config, self.device)
        self.data_rng = torch.Generator().manual_seed(dist.seed(config.seed))
        self.step = 0
        self.tokens_seen = 0
        self.elapsed = 0.0
        self.best_val_loss = math.inf
        self.bad_evals = 0
        self._eval_seconds = 0.0
        self._stop: threading.Event | None = None
        self._clock = time.perf_counter()
        self._last_saved_step: int | None = None
        self._last_saved_at = time.monotonic()
        self._agreed_stop = self._agreed_save = False  # what the ranks agreed at the last step
        self.metrics: dict[str, Any] = {}
        torch.manual_seed(dist.seed(config.seed))
        self._wrapped, self._to_save = wrapped, dist.shadow if dist.shadow is not None else self.model
        self._forward = torch.compile(wrapped) if config.compile else wrapped
        self._eval_forward = self._forward if dist.eval_module(self.model, wrapped) is wrapped else self.model
        self.precision = resolve_precision(config.precision, self.device)
        self._autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.precision == "bf16"
                          else nullcontext())

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the weights that a resumed run needs to continue exactly. With several
        processes it is a collective: every rank calls it (the trainer's saves do)."""
        state = {"step": self.step, "tokens_seen": self.tokens_seen, "elapsed": self.elapsed,
                 "best_val_loss": self.best_val_loss, "bad_evals": self.bad_evals,
                 "optimizer": self.dist.optimizer_state(self.model, self.optimizer), **self._rng_states()}
        if self.dist.active:  # each rank's random streams, so the same world size resumes exactly
            state["rank_rngs"] = self.dist.gather(self._rng_states())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A state saved by any world size. Rank r takes rank r's random streams where the saved run
        had that rank; a rank it did not have starts its own stream afresh (gptlab.distributed)."""
        self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])
        self.elapsed, self.best_val_loss = float(state["elapsed"]), float(state["best_val_loss"])
        self.bad_evals = int(state["bad_evals"])
        self.dist.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        ranks = state.get("rank_rngs") or [state]
        if self.dist.rank < len(ranks):
            self._set_rng_states(ranks[self.dist.rank])

    def _rng_states(self) -> dict[str, torch.Tensor]:
        states = {"data_rng": self.data_rng.get_state(), "torch_rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return states

    def _set_rng_states(self, states: dict[str, torch.Tensor]) -> None:
        self.data_rng.set_state(states["data_rng"])
        torch.set_rng_state(states["torch_rng"])
        if "cuda_rng" in states and self.device.type == "cuda":
            torch.cuda.set_rng_state(states["cuda_rng"], self.device)

    # -- pieces of a step --------------------------------------------------------------------

    def _training_time(self) -> float | None:
        """Seconds of the time budget for training steps: the final evaluation must fit in it too."""
        return max(1e-3, self.config.max_time - self._eval_seconds) if self.config.max_time else None

    def _time_fraction(self) -> float:
        budget = self._training_time()
        return self.elapsed / budget if budget else 0.0

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        losses = {}
        try:
            for split in ("train", "val"):
                batches = self.data.eval_batches(split, self.config.batch_size,
                                                 count=self.config.eval_batches * self.config.batch_size)
                losses[split] = (self.dist.evaluate(self._eval_forward, list(batches), self._autocast)
                                 if self.dist.active else self._local_eval(batches))
        finally:
            self.model.train(was_training)
        return losses

    def _local_eval(self, batches) -> float:
        total, n = 0.0, 0
        for x, y in batches:
            self._check_stop()
            with self._autocast:
                _, loss = self._eval_forward(x.to(self.device), y.to(self.device))
            total += loss.item() * x.size(0)
            n += x.size(0)
        return total / n

    def _check_stop(self) -> None:
        """Several ranks stop only where they agreed to (the top of the loop); one stops anywhere."""
        if self._agreed_stop or (not self.dist.active and self._stop is not None and self._stop.is_set()):
            raise _Stopped

    def _tick(self) -> None:
        """The run's clock. Several ranks keep the one they agreed at the last step: a time budget or
        a schedule that follows the clock must not part them."""
        if not self.dist.active:
            self.elapsed = time.perf_counter() - self._clock

    def _save_due(self, here: bool = False) -> bool:
        """Whether checkpoint_seconds have passed since the last save (here, or as the ranks agreed)."""
        if self.dist.active and not here:
            return self._agreed_save
        return self.checkpoint_seconds is not None and time.monotonic() - self._last_saved_at >= self.checkpoint_seconds

    def _train_step(self) -> tuple[float, float, float, int]:
        """One optimiser step over grad_accum_steps micro-batches: (loss, grad norm, lr, tokens)."""
        cfg = self.config
        lr = cfg.lr_at(self.step, self._time_fraction())
        for group in self.optimizer.param_groups:  # Muon's rate scaled alike (gptlab.optim)
            group["lr"] = lr * group.get("lr_scale", 1.0)
        total, tokens = torch.zeros((), device=self.device), 0
        # A stop between micro-batches abandons the step; the random states go back to where it began,
        # so the saved state is that of the last completed step and a resume repeats this one exactly.
        rngs = self._rng_states() if cfg.grad_accum_steps > 1 else None
        try:
            for micro in range(cfg.grad_accum_steps):
                if micro:
                    self._check_stop()
                x, y = self.data.train_batch(cfg.batch_size, self.data_rng)
                tokens += y.numel() * self.dist.world_size
                # The gradients are all-reduced once a step, after its last micro-batch.
                with self.dist.no_sync(self._wrapped, sync=micro == cfg.grad_accum_steps - 1):
                    with self._autocast:
                        _, loss = self._forward(x.to(self.device, non_blocking=True),
                                                y.to(self.device, non_blocking=True))
                    (loss / cfg.grad_accum_steps).backward()
                total += loss.detach()
        except _Stopped:
            self.optimizer.zero_grad(set_to_none=True)
            self._set_rng_states(rngs)
            raise
        # The norm before clipping is what tells a user that training is unstable.
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        if self.dist.active:
            asked = self._stop is not None and self._stop.is_set()
            loss_value, norm_value, self.elapsed, self._agreed_stop, self._agreed_save = self.dist.step_sync(
                total / cfg.grad_accum_steps, norm, time.perf_counter() - self._clock, asked, self._save_due(here=True))
        else:
            loss_value, norm_value = (total / cfg.grad_accum_steps).item(), float(norm)
        if math.isfinite(loss_value) and math.isfinite(norm_value):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, norm_value, lr, tokens

    def model_to_save(self) -> nn.Module:
        """The module whose weights the save callback writes (under FSDP, the gathered copy)."""
        return self._to_save

    def _save(self, label: str) -> Iterator[Event]:
        if self.save_fn is None:
            return
        if not self.dist.active:
            path = self.save_fn(label, self.state_dict(), dict(self.metrics, step=self.step))
            yield CheckpointEvent(self.step, label, str(path))
            return
        # Every rank gathers (FSDP's weights and optimiser state, the random streams); rank 0 writes,
        # then says whether that worked, so a full disk ends every rank, not rank 0 alone.
        self._to_save = self.dist.model_to_save(self.model)
        state, path, error = self.state_dict(), "", ""
        if self.dist.is_main:
            try:
                path = self.save_fn(label, state, dict(self.metrics, step=self.step))
            except SaveError as e:
                error = str(e)
        error = self.dist.agree_error(error)
        if error:
            raise SaveError(error if self.dist.is_main else f"rank 0 could not save a checkpoint: {error}")
        yield CheckpointEvent(self.step, label, str(path))

    def _save_last(self) -> Iterator[Event]:
        """`last`, unless it already holds this step (an evaluation saved it just before the end)."""
        if self._last_saved_step != self.step:
            yield from self._save(LAST)
            self._last_saved_step = self.step
        self._last_saved_at = time.monotonic()

    def _eval_events(self) -> Iterator[Event]:
        started = time.perf_counter()
        losses = self.evaluate()
        # Part of the evaluation's cost, so a time budget keeps room for them at the end too.
        texts = self.snapshot_fn(self.model) if self.snapshot_fn is not None else ()
        self._eval_seconds = self.dist.mean(time.perf_counter() - started)  # the time budget keeps ranks together
        is_best = losses["val"] < self.best_val_loss
        if is_best:
            self.best_val_loss, self.bad_evals = losses["val"], 0
        else:
            self.bad_evals += 1
        self.metrics.update(train_loss=losses["train"], val_loss=losses["val"], best_val_loss=self.best_val_loss)
        yield EvalEvent(self.step, losses["train"], losses["val"], math.exp(min(losses["train"], 50)),
                        math.exp(min(losses["val"], 50)), self.best_val_loss, is_best, self.tokens_seen, self.elapsed)
        for prompt, greedy, sampled in texts:
            yield SnapshotEvent(self.step, losses["val"], prompt, greedy, sampled)
        if is_best and self.step > 0:
            yield from self._save("best")

    def _done(self, status: str, reason: str) -> DoneEvent:
        best = self.best_val_loss if math.isfinite(self.best_val_loss) else None
        return DoneEvent(self.step, status, reason, self.tokens_seen, self.elapsed, best)

    # -- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> Iterator[Event]:
        self._stop = stop
        try:
            try:
                yield from self._loop()
            except _Stopped:
                # Inside an evaluation or mid-step: the weights are those of the last completed step.
                yield from self._stopped()
        except SaveError as e:
            yield self._done("failed", str(e))
        finally:
            self._stop = None

    def _stopped(self) -> Iterator[Event]:
        self.elapsed = time.perf_counter() - self._clock
        yield from self._save_last()
        why = getattr(self._stop, "reason", "")
        yield self._done("stopped", f"stopped by request at step {self.step}" + (f": {why}" if why else ""))

    def _loop(self) -> Iterator[Event]:
        cfg = self.config
        self.model.train()
        self._clock = time.perf_counter() - self.elapsed
        self._last_saved_at = time.monotonic()
        if self.step == 0:
            yield from self._eval_events()  # the loss before learning anything: about ln(vocab)
        window_start, window_steps, window_tokens = time.perf_counter(), 0, 0
        window_clipped = 0  # steps whose norm clipping scaled down, for an honest share of steps clipped
        while True:
            self._tick()
            self._check_stop()
            if self.step >= cfg.max_steps:
                reason = f"reached max_steps ({cfg.max_steps})"
                break
            if cfg.max_time is not None and self.elapsed >= self._training_time():
                reason = f"reached the time budget of {cfg.max_time:g} s"
                break

            loss, norm, lr, tokens = self._train_step()
            if not (math.isfinite(loss) and math.isfinite(norm)):
                what = "loss" if not math.isfinite(loss) else "gradient norm"
                yield self._done("diverged", f"the {what} became {loss if what == 'loss' else norm} at step "
                                 f"{self.step + 1}; the weights were not updated and the last good checkpoint "
                                 f"is kept. Lower the learning rate (it was {lr:.2e}) or turn "
                                 "on gradient clipping.")
                return
            if self.diverge_above is not None and loss > self.diverge_above:
                yield self._done("diverged", f"the loss reached {loss:.2f} at step {self.step + 1}, above "
                                 f"{self.diverge_above:.2f}, past which a run has blown up rather than learnt; the "
                                 f"last good checkpoint is kept. Lower the learning rate (it was {lr:.2e}) or "
                                 "turn on gradient clipping.")
                return
            self.step += 1
            self.tokens_seen += tokens
            if self.on_step is not None:
                # Before the step's events, so a hook that sets the stop flag ends the run at this step.
                self.on_step(self.step)
            window_steps, window_tokens = window_steps + 1, window_tokens + tokens
            window_clipped += int(0 < cfg.grad_clip < norm)
            self._tick()
            self.metrics["train_loss_step"] = loss

            if self.step % cfg.log_interval == 0 or self.step == cfg.max_steps:
                now = time.perf_counter()
                seconds = max(now - window_start, 1e-9)
                yield StepEvent(self.step, loss, lr, norm, self.tokens_seen, window_tokens / seconds,
                                self.elapsed, self._eta(window_steps / seconds),
                                clipped=window_clipped, window=window_steps)
                window_start, window_steps, window_tokens = now, 0, 0
                window_clipped = 0
            evaluated = self.step % cfg.eval_interval == 0
            if evaluated:
                yield from self._eval_events()
                if cfg.patience is not None and self.bad_evals >= cfg.patience:
                    reason = (f"early stopping: the validation loss has not improved for {cfg.patience} "
                              f"evaluation(s); the best was {self.best_val_loss:.4f}")
                    break
            if self.sample_fn is not None and cfg.sample_interval and self.step % cfg.sample_interval == 0:
                yield SampleEvent(self.step, self.sample_fn(self.model))
            if cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0:
                yield from self._save(f"step-{self.step:06d}")
            # Whatever the loss did, so a crash loses one evaluation interval (or checkpoint_seconds) at most.
            if evaluated or self._save_due():
                yield from self._save_last()

        if self.step % cfg.eval_interval != 0:
            yield from self._eval_events()  # so the run always ends with a known validation loss
        yield from self._save_last()
        self.elapsed = time.perf_counter() - self._clock
        yield self._done("finished", reason)

    def _eta(self, steps_per_sec: float) -> float | None:
        cfg = self.config
        by_steps = (cfg.max_steps - self.step) / steps_per_sec if steps_per_sec > 0 else None
        by_time = max(0.0, cfg.max_time - self.elapsed) if cfg.max_time else None  # the final eval included
        candidates = [t for t in (by_steps, by_time) if t is not None]
        return min(candidates) if candidates else None
