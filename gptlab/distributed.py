"""Several processes, one run: the process group's set-up and tear-down, the rank helpers, and the
few collectives the trainer needs. PyTorch does the rest (DistributedDataParallel, or FSDP's
`fully_shard`); there is no engine of our own here.

`torchrun --nproc_per_node=N -m gptlab train ...` starts N processes and tells each its RANK,
LOCAL_RANK and WORLD_SIZE; `init()` reads them (nanochat's compute_init is the model). Without
torchrun there is one process and `LOCAL`, whose methods do nothing, so the trainer has one code path.

How the ranks stay in step: once per optimiser step they all-reduce one small tensor that holds the
loss, the gradient norm, the elapsed time and two flags (a stop was asked for here; a timed save is
due here). That is the step's one host sync, which the NaN guard needs anyway, and it makes every
decision that could part the ranks (stop, diverge, time budget, learning rate, a timed save) the same
on all of them. Rank 0 alone logs, samples and writes checkpoints; each save ends with rank 0 telling
the others whether it worked, the one place where they wait for it.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import gc
import os
from typing import Any, Sequence

import torch
import torch.distributed as tdist
import torch.nn as nn

from gptlab.kernels import native_bf16

# A peer that died is seen at once (its socket closes, or torchrun ends the job); this bounds what is
# left, a peer stuck without dying. It must outlast rank 0's longest save, which the others wait for.
TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("GPTLAB_DIST_TIMEOUT", 900)))
# Mixed into the seed so that rank r's windows differ from rank 0's and from those of seed + r.
RANK_SEED_STRIDE = 0x9E3779B97F4A7C15


def launched() -> bool:
    """True in a process that torchrun started."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto.")
        if name == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device 'mps' was asked for, but this machine has no usable Apple GPU; use cpu or auto.")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """bf16 autocast where the hardware has it; fp32 otherwise. A CPU without native bf16 would
    emulate it many times slower than fp32, so 'bf16' falls back to fp32 there."""
    if precision == "fp32" or device.type not in ("cuda", "cpu"):
        return "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if precision == "bf16" and native_bf16() else "fp32"


class Dist:
    """One process's place in a run. With world_size 1 (the default, LOCAL) every method is a no-op
    or the identity, and no process group exists."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, backend: str = "",
                 device: torch.device | None = None):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.backend, self.device = backend, device
        self.fsdp = False  # set by wrap: a run's own setting, so a resumed run keeps it
        # FSDP: rank 0's unsharded copy on the CPU, which checkpoints are written from (it holds the
        # starting weights until the first gather, so init/ needs no collective).
        self.shadow: nn.Module | None = None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self, batch_size: int, grad_accum_steps: int, block_size: int | None = None) -> dict[str, Any]:
        """What the run's config and log record: the world size and the global batch it makes."""
        windows = batch_size * grad_accum_steps * self.world_size
        info = {"world_size": self.world_size, "backend": self.backend or "none", "fsdp": self.fsdp,
                "global_batch": windows, "global_batch_formula": f"{batch_size} x {grad_accum_steps} x {self.world_size}"}
        if block_size:
            info["tokens_per_step"] = windows * block_size
        return info

    def seed(self, seed: int) -> int:
        """This rank's seed for its data windows and dropout: rank 0 keeps `seed`, so a single
        process trains exactly as it did before there were ranks."""
        return (seed + self.rank * RANK_SEED_STRIDE) % 2**63

    # -- the model -----------------------------------------------------------------------------

    def wrap(self, model: nn.Module, device: torch.device, *, fsdp: bool = False) -> tuple[nn.Module, nn.Module]:
        """(the model on `device`, the module to train through): DDP around the model; or with `fsdp`
        the model itself, sharded in place by fully_shard (each child of a ModuleList, the
        transformer blocks, is one unit, then the root), which moves each block's shard to the device
        in turn, so the whole model never has to fit on one. One process ignores `fsdp`."""
        if not self.active or not fsdp:
            model = model.to(device)
            if not self.active:
                return model, model
            from torch.nn.parallel import DistributedDataParallel as DDP

            # No buffer sync in forward: evaluation shards its windows unevenly, and a forward that
            # syncs would wait for peers that have none left.
            return model, DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                              forward_sync_buffers=False)
        from torch.distributed.fsdp import fully_shard

        self.fsdp = True
        if self.is_main:  # from where the model was built (the CPU, in a TrainingRun), before it moves
            self.shadow = copy.deepcopy(model).to("cpu")
        from torch.distributed.device_mesh import init_device_mesh

        # Named, not left to FSDP's default (the machine's accelerator): a CPU run on a GPU machine stays on the CPU.
        mesh = init_device_mesh(device.type, (self.world_size,))
        for module in list(model.modules()):
            if isinstance(module, nn.ModuleList):
                for block in module:
                    fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model, model

    def eval_module(self, model: nn.Module, wrapped: nn.Module) -> nn.Module:
        """DDP evaluates with the bare module (no hooks, no collectives); FSDP must go through its
        shards, so every rank runs the same number of forwards (see shard)."""
        return wrapped if self.fsdp else model

    def no_sync(self, wrapped: nn.Module, sync: bool):
        """Skip the gradient all-reduce on an accumulation micro-step (sync=False)."""
        if not self.active or sync:
            if self.fsdp:
                wrapped.set_requires_gradient_sync(True)
            return contextlib.nullcontext()
        if self.fsdp:
            wrapped.set_requires_gradient_sync(False)
            return contextlib.nullcontext()
        return wrapped.no_sync()

    def shard(self, batches: Sequence) -> list[tuple[Any, float]]:
        """This rank's share of the evaluation batches as (batch, weight): every world_size-th one. A
        rank with one fewer repeats a batch at weight 0, so all ranks run as many forwards (FSDP's
        all-gathers need that)."""
        if not self.active:
            return [(b, 1.0) for b in batches]
        mine = [(b, 1.0) for b in batches[self.rank::self.world_size]]
        rounds = -(-len(batches) // self.world_size)
        return mine + [(batches[-1], 0.0)] * (rounds - len(mine))

    def evaluate(self, forward, batches: Sequence, autocast) -> float:
        """The mean loss of forward(x, y) over `batches`, each rank taking its share (see shard) and
        the sums all-reduced: the single-process figure on these weights, up to the order of additions."""
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        for (x, y), weight in self.shard(batches):
            with autocast:
                _, loss = forward(x.to(self.device), y.to(self.device))
            n = torch.tensor(float(x.size(0)), dtype=torch.float64, device=self.device)
            total += torch.stack([loss.detach().double() * n, n]) * weight
        loss_sum, count = self.sum(total)
        return loss_sum / count

    # -- collectives ---------------------------------------------------------------------------

    def sum(self, values: torch.Tensor) -> list[float]:
        """The sum over ranks of a small tensor, as floats: one all-reduce and one host sync."""
        values = values.detach().double() if values.device.type != "mps" else values.detach()
        if self.active:
            tdist.all_reduce(values)
        return values.tolist()

    def mean(self, value: float) -> float:
        """The mean over ranks of one number (one rank's clock, say), the same on every rank."""
        return self.sum(torch.tensor([value], device=self.device))[0] / self.world_size if self.active else value

    def step_sync(self, loss: torch.Tensor, norm: torch.Tensor, elapsed: float, stop: bool, save_due: bool):
        """The step's one host sync: (loss, grad norm, elapsed, stop, save_due), the first three the
        mean over ranks and the flags true if any rank raised them. A NaN on any rank is a NaN here."""
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: a sharded norm
        packed = torch.stack([loss.float(), norm.float().to(loss.device),
                              *torch.tensor([elapsed, float(stop), float(save_due)], device=loss.device)])
        total = self.sum(packed)
        n = self.world_size
        return total[0] / n, total[1] / n, total[2] / n, total[3] > 0, total[4] > 0

    def agree_error(self, error: str) -> str:
        """Rank 0's sentence ("" if all went well) on every rank: after a save only rank 0 wrote."""
        if not self.active:
            return error
        box = [error if self.is_main else None]
        tdist.broadcast_object_list(box, src=0)
        return box[0] or ""

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value of a small picklable thing (a run folder's generated name) on every rank."""
        if not self.active:
            return value
        box = [value]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's value of a small picklable thing, in rank order."""
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    # -- checkpoints ---------------------------------------------------------------------------

    def model_to_save(self, model: nn.Module) -> nn.Module:
        """The module whose weights a checkpoint holds. With FSDP every rank takes part in gathering
        the full weights, which land in rank 0's unsharded copy; the file is the ordinary one."""
        if not self.fsdp:
            return model
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.is_main:
            self.shadow.load_state_dict(full)
            return self.shadow
        return model

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimiser's state as optimizer.state_dict() gives it in one process (parameters by
        position), so any world size, FSDP or not, resumes from it. Under FSDP it is gathered first."""
        if not self.fsdp:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.is_main:
            return {}
        index = {name: i for i, name in enumerate(self._names(model, optimizer))}
        return {"state": {index[name]: value for name, value in full["state"].items()},
                "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]]}

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        if not self.fsdp:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = self._names(model, optimizer)
        full = {"state": {names[i]: value for i, value in state["state"].items()},
                "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]}
        set_optimizer_state_dict(model, optimizer, full, options=StateDictOptions(full_state_dict=True))

    @staticmethod
    def _names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
        """The parameters' names in the optimiser's order: the positions optimizer.state_dict() uses."""
        by_id = {id(p): name for name, p in model.named_parameters()}
        return [by_id[id(p)] for group in optimizer.param_groups for p in group["params"]]


LOCAL = Dist()


def init(device: torch.device) -> Dist:
    """This process's Dist. Under torchrun: joins the process group (NCCL on CUDA, gloo on CPU) and
    takes the GPU numbered LOCAL_RANK (Dist.device); otherwise LOCAL."""
    if not launched():
        return LOCAL
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"torchrun runs train on CUDA GPUs or on CPUs, not on {device.type}; "
                         "pass --device cuda or --device cpu.")
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(f"torchrun started process {local} on a node with {torch.cuda.device_count()} GPU(s); "
                             "set --nproc_per_node to at most the number of GPUs.")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend, timeout=TIMEOUT, **({"device_id": device} if backend == "nccl" else {}))
    return Dist(rank, world, local, backend=backend, device=device)


def shutdown(dist: Dist, *, wait: bool = True) -> None:
    """Leave the process group. `wait`: first wait for every rank, so none leaves while rank 0
    still writes the last checkpoint (a leaver would make torchrun end the others)."""
    if dist is not LOCAL and tdist.is_initialized():  # torchrun with one process has a group too
        if wait and dist.active:
            try:
                tdist.barrier()
            except Exception:  # a peer already gone: its failure, reported by torchrun, is the story
                pass
        # A trainer and its run refer to each other, so DDP's reducer is freed by the garbage collector,
        # which may run only as the interpreter exits: free it while the group it uses still exists.
        gc.collect()
        tdist.destroy_process_group()
