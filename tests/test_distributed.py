"""Several processes, one run: real torchrun jobs of 2 gloo processes on a tiny model (the CPU is
all CI has; NCCL and FSDP on GPUs are not exercised here).

Each job is a subprocess with a timeout and OMP_NUM_THREADS=1 per rank, so the 2 shared cores are
not oversubscribed and a hang fails the test instead of stalling the suite.
"""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gptlab.checkpoint import load_checkpoint
from gptlab.data import load_texts, prepare_data
from gptlab.distributed import Dist
from gptlab.events import DoneEvent, EvalEvent, StepEvent
from gptlab.report import run_report
from gptlab.runfolder import read_events
from gptlab.trainer import Trainer
from gptlab.training import TrainingRun
from tests.conftest import TINY_TEXT

REPO = Path(__file__).resolve().parent.parent
SEED, BATCH = 7, 8
TRAIN = ["--preset", "tiny", "--device", "cpu", "--sample-interval", "0", "--snapshot-tokens", "0", "--dropout", "0",
         "--batch-size", BATCH, "--seed", SEED, "--eval-interval", 10, "--warmup-steps", 2,
         "--eval-batches", 3]  # 3 batches on 2 ranks: one rank evaluates a padding batch at weight 0


def torchrun_command(*argv, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "--monitor-interval=0.2", "-m", "gptlab", "train", *map(str, argv)]


def env():
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "GPTLAB_DIST_TIMEOUT": "60"}


def torchrun(cwd, *argv, timeout=120):
    return subprocess.run(torchrun_command(*argv), cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    (root / "t.txt").write_text(TINY_TEXT * 20, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def ddp_run(corpus):
    """20 steps on 2 processes, into the default run folder (runs/<time>), with step-10 kept."""
    job = torchrun(corpus, *TRAIN, "--data", "t.txt", "--max-steps", 20, "--checkpoint-interval", 10)
    assert job.returncode == 0, job.stderr[-3000:]
    runs = list((corpus / "runs").iterdir())
    return job, runs


def test_two_processes_write_one_run_folder_and_say_their_world_size(ddp_run):
    job, runs = ddp_run
    assert len(runs) == 1  # rank 0's generated name reached rank 1: no second folder
    run = runs[0]
    assert sorted(p.name for p in run.iterdir() if (p / "config.json").is_file()) == ["best", "init", "last", "step-000010", "step-000020"]
    assert "world size 2 (gloo, DDP)" in job.stderr and f"{BATCH} x 1 x 2" in job.stderr
    record = load_checkpoint(run / "last").extra["distributed"]
    assert record["world_size"] == 2 and record["global_batch"] == 2 * BATCH and record["backend"] == "gloo"
    events = read_events(run)
    steps = [e.step for e in events if isinstance(e, StepEvent)]
    assert steps == list(range(1, 21))  # logged once, by rank 0 alone
    assert events[-1].status == "finished"
    # Both ranks trained: each saved its own random streams, and they differ.
    streams = load_checkpoint(run / "last").trainer_state()["rank_rngs"]
    assert len(streams) == 2 and not torch.equal(streams[0]["data_rng"], streams[1]["data_rng"])
    losses = [e.loss for e in events if isinstance(e, StepEvent)]
    assert losses[-1] < losses[0] - 0.3

    hardware = run_report(run).section("Hardware").body  # the run report names the world and its batch
    assert "2 (gloo, DDP)" in hardware and f"{BATCH} x 1 x 2" in hardware


def test_the_first_step_and_the_evaluation_match_one_process_on_the_same_global_batch(ddp_run, corpus):
    run = ddp_run[1][0]
    events = read_events(run)
    first = next(e for e in events if isinstance(e, StepEvent))
    init = load_checkpoint(run / "init")
    data = prepare_data(load_texts([corpus / "t.txt"]), init.tokenizer, init.model_config.block_size,
                        init.train_config.val_fraction)
    # The oracle: one process, one model, the two ranks' windows; DDP averages the ranks' gradients.
    model = init.load_model()
    model.train()
    losses = []
    for rank in range(2):
        x, y = data.dataset.train_batch(BATCH, torch.Generator().manual_seed(Dist(rank, 2).seed(SEED)))
        losses.append(model(x, y)[1])
    loss = sum(losses) / 2
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)
    assert first.loss == pytest.approx(loss.item(), rel=1e-5)
    assert first.grad_norm == pytest.approx(norm.item(), rel=1e-4)
    # Step 0's evaluation, split across the ranks and all-reduced, is one process's figure.
    trainer = Trainer(init.load_model(), init.train_config, data.dataset, device=torch.device("cpu"))
    alone = trainer.evaluate()
    shared = next(e for e in events if isinstance(e, EvalEvent))
    assert (shared.train_loss, shared.val_loss) == (pytest.approx(alone["train"], rel=1e-6),
                                                    pytest.approx(alone["val"], rel=1e-6))


def test_a_resume_on_the_same_world_size_repeats_the_run_exactly(ddp_run, corpus):
    run = ddp_run[1][0]
    job = torchrun(corpus, "--resume", run / "step-000010", "--out", corpus / "again")
    assert job.returncode == 0, job.stderr[-3000:]
    before = {e.step: e.loss for e in read_events(run) if isinstance(e, StepEvent)}
    after = {e.step: e.loss for e in read_events(corpus / "again") if isinstance(e, StepEvent)}
    assert sorted(after) == list(range(1, 21))
    assert [after[s] for s in range(11, 21)] == pytest.approx([before[s] for s in range(11, 21)], rel=1e-6)


def test_a_two_process_checkpoint_resumes_in_one_process(ddp_run, corpus, tmp_path):
    run = ddp_run[1][0]
    resumed = TrainingRun.resume(run / "last", out_dir=tmp_path / "one", max_steps=26)
    adam = resumed.trainer.optimizer.state_dict()["state"]
    assert adam and all(int(s["step"]) == 20 for s in adam.values())  # the moments came along
    done = [e for e in resumed.events() if isinstance(e, DoneEvent)][-1]
    assert (done.status, done.step) == ("finished", 26)
    events = read_events(tmp_path / "one")
    assert [e.step for e in events if isinstance(e, StepEvent)] == list(range(1, 27))
    assert load_checkpoint(tmp_path / "one" / "last").extra["distributed"]["world_size"] == 1


NEEDS_PROC = pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
                                reason="finds torchrun's workers through /proc/<pid>/task/<pid>/children")


def _workers(parent: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes."""
    found = {}
    for pid in map(int, Path(f"/proc/{parent}/task/{parent}/children").read_text().split()):
        environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
        if "RANK" in environ:
            found[int(environ["RANK"])] = pid
    return found


def _start_long_job(cwd, out):
    job = subprocess.Popen(torchrun_command(*TRAIN, "--data", "t.txt", "--out", out, "--max-steps", 100000),
                           cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until it trains: a few steps are in the log
        steps = [e for e in read_events(cwd / out) if isinstance(e, StepEvent)] if (cwd / out).is_dir() else []
        if len(steps) >= 3:
            return job, _workers(job.pid)
        if job.poll() is not None:
            pytest.fail(job.stderr.read()[-3000:])
        time.sleep(0.2)
    job.kill()
    pytest.fail("the job did not start training within 60 s")


@NEEDS_PROC
def test_sigterm_on_one_rank_stops_every_rank_with_a_checkpoint(corpus):
    job, workers = _start_long_job(corpus, "stopped")
    os.kill(workers[1], signal.SIGTERM)
    _, err = job.communicate(timeout=60)
    done = read_events(corpus / "stopped")[-1]
    assert isinstance(done, DoneEvent) and done.status == "stopped", err[-3000:]
    assert load_checkpoint(corpus / "stopped" / "last").step == done.step > 0


@NEEDS_PROC
def test_killing_one_rank_ends_the_job_with_an_error_not_a_hang(corpus):
    job, workers = _start_long_job(corpus, "killed")
    started = time.monotonic()
    os.kill(workers[1], signal.SIGKILL)
    _, err = job.communicate(timeout=90)
    assert job.returncode != 0 and time.monotonic() - started < 60
    assert "SIGKILL" in err or "Signal 9" in err  # torchrun names the rank that died and how


@pytest.fixture(scope="module")
def fsdp_run(corpus, ddp_run):
    """The DDP run's settings, sharded with FSDP (fully_shard on gloo)."""
    job = torchrun(corpus, *TRAIN, "--data", "t.txt", "--max-steps", 20, "--checkpoint-interval", 10, "--fsdp",
                   "--out", "fsdp")
    assert job.returncode == 0, job.stderr[-3000:]
    assert "world size 2 (gloo, FSDP)" in job.stderr
    return corpus / "fsdp"


def test_fsdp_trains_as_ddp_does_and_gathers_ordinary_checkpoints(fsdp_run, ddp_run):
    ddp = ddp_run[1][0]
    losses = {name: [e.loss for e in read_events(run) if isinstance(e, StepEvent)] for name, run in
              (("ddp", ddp), ("fsdp", fsdp_run))}
    assert losses["fsdp"] == pytest.approx(losses["ddp"], rel=1e-4)
    # One ordinary file: the gathered weights load in one process, as export and the app read them.
    gathered, replicated = load_checkpoint(fsdp_run / "last").load_model(), load_checkpoint(ddp / "last").load_model()
    for (name, a), b in zip(gathered.state_dict().items(), replicated.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name
    # The optimiser state is by position, as one process keeps it, and resumes there.
    resumed = TrainingRun.resume(fsdp_run / "last", out_dir=fsdp_run.parent / "fsdp-one", max_steps=22)
    assert resumed.train_config.fsdp and not resumed.trainer.dist.fsdp  # one process shards nothing
    assert all(int(s["step"]) == 20 for s in resumed.trainer.optimizer.state_dict()["state"].values())
    assert [e for e in resumed.events() if isinstance(e, DoneEvent)][-1].step == 22


def test_an_fsdp_resume_on_the_same_world_size_repeats_the_run_exactly(fsdp_run):
    job = torchrun(fsdp_run.parent, "--resume", fsdp_run / "step-000010", "--out", fsdp_run.parent / "fsdp-again")
    assert job.returncode == 0, job.stderr[-3000:]
    before = {e.step: e.loss for e in read_events(fsdp_run) if isinstance(e, StepEvent)}
    after = {e.step: e.loss for e in read_events(fsdp_run.parent / "fsdp-again") if isinstance(e, StepEvent)}
    assert [after[s] for s in range(11, 21)] == pytest.approx([before[s] for s in range(11, 21)], rel=1e-6)


# --------------------------------------------------------------------------------------------
# The trainer's agreement, on a model that is no GPT: a NaN or a stop on one rank ends every rank

WORKER = """
import json, math, sys
import torch
from gptlab import distributed
from gptlab.config import TrainConfig
from gptlab.events import DoneEvent
from gptlab.trainer import StopFlag, Trainer

dist = distributed.init(torch.device("cpu"))

class Line(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(4, 1)

    def forward(self, x, y):
        return None, ((self.w(x).squeeze(-1) - y) ** 2).mean()

class Data:
    def __init__(self, poison_at=None):
        self.calls, self.poison_at = 0, poison_at

    def train_batch(self, batch_size, generator=None):
        self.calls += 1
        x = torch.randn(batch_size, 4, generator=generator)
        if self.calls == self.poison_at:
            x[0, 0] = math.nan
        return x, x.sum(-1)

    def eval_batches(self, split, batch_size, *, count=None):
        g = torch.Generator().manual_seed(0)
        for _ in range(count // batch_size):
            x = torch.randn(batch_size, 4, generator=g)
            yield x, x.sum(-1)

config = TrainConfig(max_steps=50, eval_interval=5, eval_batches=3, batch_size=4, device="cpu", warmup_steps=0,
                     sample_interval=0, snapshot_tokens=0, grad_accum_steps=2)
out = {}
poisoned = Trainer(Line(), config, Data(poison_at=5 if dist.rank == 1 else None), dist=dist)
out["nan"] = [e.as_dict() for e in poisoned.run() if isinstance(e, DoneEvent)][-1]
stop = StopFlag()
hook = (lambda step: stop.set("asked on rank 1") if step == 2 else None) if dist.rank == 1 else None
stopped = Trainer(Line(), config, Data(), dist=dist, on_step=hook)
out["stop"] = [e.as_dict() for e in stopped.run(stop) if isinstance(e, DoneEvent)][-1]
out["eval"] = stopped.evaluate()
with open(sys.argv[1] + f"/rank{dist.rank}.json", "w") as f:
    json.dump(out, f)
distributed.shutdown(dist)
"""


def test_a_nan_or_a_stop_on_one_rank_ends_every_rank_at_the_same_step(tmp_path):
    import json

    (tmp_path / "worker.py").write_text(WORKER, encoding="utf-8")
    job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(tmp_path / "worker.py"), str(tmp_path)], cwd=REPO, env=env(), capture_output=True,
                         text=True, timeout=120)
    assert job.returncode == 0, job.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # Rank 1's third step (its fifth micro-batch) met a NaN; rank 0 saw it too, and neither updated.
    for rank in ranks:
        assert (rank["nan"]["status"], rank["nan"]["step"]) == ("diverged", 2), rank
        assert "nan" in rank["nan"]["reason"]
    # Rank 1 asked to stop after step 2; both ranks stopped at the end of the next step, together.
    assert {(r["stop"]["status"], r["stop"]["step"]) for r in ranks} == {("stopped", 3)}
    assert ranks[0]["eval"] == ranks[1]["eval"]  # the shared evaluation is one figure on every rank


# --------------------------------------------------------------------------------------------
# The app's path: Lab.start(processes=N) launches a torchrun job and watches its run folder


def test_the_service_trains_on_two_processes_and_its_stop_reaches_every_rank(tmp_path, monkeypatch):
    from gptlab.service import Lab, Limits, SOURCES, START_FROM
    from tests.forms import hyper

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    lab = Lab(tmp_path / "runs", limits=Limits(poll_seconds=0.1, max_processes=2))
    views = lab.start(owner="", source=SOURCES[2], files=None, pasted=TINY_TEXT * 20, tokenizer="char",
                      start_from=START_FROM[0], settings=hyper(max_steps=100000, snapshot_tokens=0), processes=2)
    seen = []
    for view in views:
        seen.append(view)
        if len(seen) == 1:
            run_id, owner = view.run_id, view.owner
        steps = [e.step for e in lab.registry.events(owner, run_id) if isinstance(e, StepEvent)]
        if len(steps) >= 3 and lab.registry.get(owner, run_id).status == "running":
            assert lab.stop(owner=owner, run_id=run_id).startswith("Stopping")
    info = lab.registry.get(owner, run_id)
    assert (info.status, info.processes) == ("stopped", 2) and not lab.registry.is_training(run_id)
    folder = lab.registry.folder(owner, run_id)
    done = read_events(folder)[-1]
    assert isinstance(done, DoneEvent) and done.status == "stopped" and info.step == done.step
    assert load_checkpoint(folder / "last").step == done.step
    assert load_checkpoint(folder / "last").extra["distributed"]["world_size"] == 2
    assert "stopped" in seen[-1].status and "on 2 processes" in seen[-1].status  # read from the folder, as any run
    # Resume keeps the run's two processes, and continues its log from the checkpoint.
    list(lab.resume(owner=owner, run_id=run_id, max_steps=done.step + 3, max_time=0))
    info = lab.registry.get(owner, run_id)
    assert (info.status, info.step, info.processes, info.train["max_steps"]) == ("finished", done.step + 3, 2,
                                                                               done.step + 3)
    steps = [e.step for e in read_events(folder) if isinstance(e, StepEvent)]
    assert steps == list(range(1, done.step + 4))


def test_the_launch_command_spells_out_every_setting(tmp_path):
    from gptlab.cli import _overrides, build_parser
    from gptlab.config import DEFAULT_PRESET, ModelConfig, TrainConfig
    from gptlab.launch import train_command

    model = ModelConfig.preset("tiny", n_layer=3, bias=False, dropout=0.1)
    train = TrainConfig.preset("tiny", learning_rate=1e-4, min_lr=1e-5, patience=3, max_time=12.5, fsdp=True, lr_schedule="wsd")
    command = train_command(tmp_path / "run", 2, model_config=model, train_config=train, data_paths=["a.txt"])
    assert command[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = build_parser().parse_args(command[command.index("gptlab") + 1:])
    # Read back over another preset, the flags give these configs and nothing of that preset's.
    assert ModelConfig.preset(DEFAULT_PRESET, **_overrides(args, ModelConfig)) == model
    assert TrainConfig.preset(DEFAULT_PRESET, **_overrides(args, TrainConfig)) == train
    assert (args.data, args.out) == (["a.txt"], str(tmp_path / "run"))


def test_the_service_refuses_more_processes_than_the_server_has(tmp_path):
    from gptlab.data import DataError
    from gptlab.service import Lab, Limits, SOURCES, START_FROM
    from tests.forms import hyper

    lab = Lab(tmp_path / "runs", limits=Limits(max_processes=1))
    for bad in (2, 0, 1.5, "two"):
        with pytest.raises(DataError, match="1 to 1 process"):
            next(lab.start(owner="", source=SOURCES[0], files=None, pasted=None, tokenizer="char",
                           start_from=START_FROM[0], settings=hyper(), processes=bad))


def test_a_job_that_ends_without_a_word_fails_with_its_last_lines_and_one_stopped_early_is_stopped(tmp_path):
    import threading

    from gptlab.launch import Job

    crashed = Job([sys.executable, "-c", "import sys; print('rank 1 failed: out of memory'); sys.exit(3)"], tmp_path / "a")
    status, reason = crashed.wait(threading.Event(), poll_s=0.05)
    assert status == "failed" and "exit status 3" in reason and "rank 1 failed: out of memory" in reason
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    slow = Job([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "b")
    assert slow.wait(stop, poll_s=0.05) == ("stopped", "stopped by request before training began")
    assert time.monotonic() - started < 10


@NEEDS_PROC
def test_a_server_that_starts_again_stops_the_job_its_dead_predecessor_left_training(tmp_path):
    import json

    from gptlab.launch import PID_FILE, Job
    from gptlab.runs import STATUS_FILE, RunInfo, RunRegistry

    folder = tmp_path / "runs" / "abc123"
    # Stands in for a torchrun job (the id is trusted only while its command line names torchrun).
    job = Job([sys.executable, "-c", "import time; time.sleep(60)", "torch.distributed.run"], folder)
    info = RunInfo(id="abc123", owner="o" * 20, name="run", status="running", created=time.time(), processes=2)
    (folder / STATUS_FILE).write_text(json.dumps(info.__dict__), encoding="utf-8")
    while b"torch.distributed.run" not in Path(f"/proc/{job.process.pid}/cmdline").read_bytes():
        time.sleep(0.01)  # until the child has become that program
    registry = RunRegistry(tmp_path / "runs")
    assert job.process.wait(timeout=10) == -signal.SIGTERM and not (folder / PID_FILE).exists()
    assert registry.get("o" * 20, "abc123").status == "interrupted"
