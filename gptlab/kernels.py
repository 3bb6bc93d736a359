"""CPU speed: a Linear layer whose float32 matmuls run on oneDNN instead of MKL, and an allocator
setting that stops a training step from paying page faults.

PyTorch hands float32 CPU matmuls to MKL, and MKL runs its AVX2 code on processors that are not
Intel's. oneDNN picks its kernels by instruction set alone: on an AVX-512 AMD EPYC it measured about
2x MKL for every matmul of a training step (forward, input gradient, weight gradient) and for the
matrix-vector products of generation. The arithmetic stays float32. On an AVX2 EPYC, where MKL's
AVX2 code is the CPU's best, oneDNN trained no faster, and its fixed cost per call made a small
model's generation take twice as long, so there it is used for one case alone: a few rows
times a weight too large for the caches (decoding a GPT-2-sized model), where it streams the
weight from memory about twice as fast as MKL.

The fast path is taken only where it applies: an AVX-512 CPU (or the AVX2 case above), float32, no
autocast, not under torch.compile (which picks its own kernels). Everything else goes to F.linear.
Set GPTLAB_ONEDNN=0 to turn it off.

For inference, `packed_weights` also lends each layer a copy of its weight in oneDNN's own layout.
Where bf16 is emulated (no native bf16, see `native_bf16`), a bf16 model's attention and its
products of many rows run in float32 (`attention_dtype`, `upcast_bf16`).
`keep_freed_memory` is the allocator setting (see its docstring).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

ONEDNN_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_ONEDNN_ALLOWED = ONEDNN_AVAILABLE and os.environ.get("GPTLAB_ONEDNN", "1") != "0"
ONEDNN_LINEAR = _ONEDNN_ALLOWED and torch.backends.cpu.get_cpu_capability() == "AVX512"
# On AVX2: a float32 weight of at least STREAM_BYTES times at most STREAM_ROWS rows, without autograd.
ONEDNN_STREAMING = _ONEDNN_ALLOWED and torch.backends.cpu.get_cpu_capability() == "AVX2"
STREAM_BYTES, STREAM_ROWS = 2 * 2**20, 4


def _matmul_t(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b.T (+ bias) through oneDNN; a is (..., k), b is (n, k), either may be a strided view."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _matmul_t(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_2d = grad.reshape(-1, grad.size(-1))  # (N, out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _matmul_t(grad, weight.t())  # (..., in)
        if ctx.needs_input_grad[1]:
            # oneDNN copies a transposed first operand into place, so the narrower of x and grad goes first.
            x_2d = x.reshape(-1, x.size(-1))  # (N, in)
            if x_2d.size(1) <= grad_2d.size(1):
                grad_w = _matmul_t(x_2d.t(), grad_2d.t()).t()  # (in, out) -> (out, in)
            else:
                grad_w = _matmul_t(grad_2d.t(), x_2d.t())  # (out, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_2d.sum(0)
        return grad_x, grad_w, grad_b


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX-512 with BF16 or AMX, or AVX-NE-CONVERT), as
    oneDNN judges it. Elsewhere PyTorch emulates bf16 matrix products, and on an AVX2 EPYC a 128x384
    by 384x128 product took ten times as long as in float32: code that would choose bf16 for speed
    asks here first."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


# The weight types oneDNN takes in its blocked layout; it refuses to pack bf16 without native bf16.
PACKABLE = (torch.float32, torch.bfloat16) if native_bf16() else (torch.float32,)
UPCAST_ROWS = 8  # see upcast_bf16


def emulated_bf16(dtype: torch.dtype, device: torch.device | str) -> bool:
    """Whether bfloat16 arithmetic of `dtype` on `device` is emulated: bf16 on a CPU without native bf16."""
    return dtype == torch.bfloat16 and torch.device(device).type == "cpu" and not native_bf16()


def attention_dtype(dtype: torch.dtype, device: torch.device | str) -> torch.dtype:
    """The dtype a KV cache keeps a model's keys and values in, and attention over them computes in:
    float32 where bf16 is emulated, whose attention took several times as long as float32's over a
    few hundred cached positions (and grew with every token); the model's own dtype elsewhere."""
    return torch.float32 if emulated_bf16(dtype, device) else dtype


def upcast_bf16(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether x @ weight.T runs from float32 copies of a bf16 x and weight: where bf16 is emulated,
    for more than UPCAST_ROWS rows, without autograd. The emulated product reads the whole weight
    once per row; a float32 copy costs about two reads, and float32's matmul reuses it for every
    row (a bf16 model's prompt). One row at a time (decoding) stays in bf16, at half the bytes."""
    return (weight.dtype == x.dtype and emulated_bf16(x.dtype, x.device) and not torch.is_grad_enabled()
            and x.numel() > UPCAST_ROWS * x.size(-1))


def upcast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear of bf16 tensors, computed in float32 and rounded back to bf16 (see upcast_bf16)."""
    return linear(x.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)


def use_onednn(x: torch.Tensor, weight: torch.Tensor, dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> bool:
    """Whether oneDNN computes x @ weight.T here; `dtypes` are the weight types the caller can give it
    (training: float32 alone; a packed copy for inference: PACKABLE)."""
    if not (x.device.type == "cpu" and x.dtype == weight.dtype and weight.dtype in dtypes and x.numel() > 0
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()):
        return False
    return ONEDNN_LINEAR or (ONEDNN_STREAMING and weight.dtype == torch.float32 and not torch.is_grad_enabled()
                             and weight.nbytes >= STREAM_BYTES and x.numel() <= STREAM_ROWS * x.size(-1))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, computed by oneDNN where that is faster (see the module docstring), or in float32
    where bf16 is emulated and that is faster (upcast_bf16)."""
    if upcast_bf16(x, weight):
        return upcast_linear(x, weight, bias)
    if use_onednn(x, weight):
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
            return _OneDNNLinear.apply(x, weight, bias)
        # Generation makes ~50 of these calls per token: without autograd's bookkeeping, GPT-2-sized
        # greedy decoding went from 55 to 63 tokens/s in one run.
        return _matmul_t(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state dict) computed by `linear`."""

    packed_weight: torch.Tensor | None = None  # set by `pack` (for a block: `packed_weights`)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed_weight is not None and not torch.is_grad_enabled() and use_onednn(x, self.weight, PACKABLE):
            return _matmul_t(x, self.packed_weight, self.bias)
        return linear(x, self.weight, self.bias)


def inference_linear(layer: Linear, rows: int = 1) -> Callable[[torch.Tensor], torch.Tensor]:
    """What `layer(x)` computes without autograd for x (rows, in_features) of the layer's own dtype
    and device, with Linear.forward's choice of kernel made once: a decoding step calls each layer
    once per token (rows: one per sequence), and choosing cost about as much as a small layer's
    matmul. Off oneDNN it is the addmm (or mm) that F.linear itself runs for a 2-D input, without
    F.linear's dispatch and transpose in front of it. Holds the packed weight the layer has now, so
    build it inside `packed_weights`, and again once the weights change."""
    weight, bias, packed = layer.weight, layer.bias, layer.packed_weight
    probe = weight.new_empty(rows, layer.in_features)
    with torch.no_grad():
        if packed is not None and use_onednn(probe, weight, PACKABLE):
            return functools.partial(_matmul_t, b=packed, bias=bias)
        if upcast_bf16(probe, weight):
            return functools.partial(upcast_linear, weight=weight, bias=bias)
        if use_onednn(probe, weight):
            return functools.partial(_matmul_t, b=weight, bias=bias)
    if bias is None:
        return functools.partial(torch.mm, mat2=weight.t())
    return functools.partial(torch.addmm, bias, mat2=weight.t())


def pack(module: nn.Module) -> list[Linear]:
    """Give each Linear layer of `module` that has none a copy of its weight in oneDNN's blocked
    layout, used for inference from then on; returns the layers it packed. See `packed_weights`."""
    if not (ONEDNN_LINEAR and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        return []
    layers = [m for m in module.modules()
              if isinstance(m, Linear) and m.packed_weight is None and m.weight.device.type == "cpu"
              and m.weight.dtype in PACKABLE and m.weight.numel() > 0]
    with torch.no_grad():
        for m in layers:
            m.packed_weight = torch.ops.mkldnn._reorder_linear_weight(m.weight)
    return layers


@contextlib.contextmanager
def packed_weights(module: nn.Module):
    """Inside the block, the Linear layers of `module` compute from a copy of their weights in
    oneDNN's blocked layout, for inference.

    Generation is bound by memory bandwidth: each token streams every weight once. oneDNN streams
    its own blocked layout faster than PyTorch's row-major one (GPT-2's layers measured 1.2x in
    float32 and 1.4x in bfloat16, one row at a time), but packing 124M weights costs 0.1-0.2 s, so
    it pays only when many forward passes share one copy. The copies are a snapshot: the caller must
    not change the weights inside the block. Weights in float32 and bfloat16 are packed; outside
    oneDNN's reach (GPU, float64, no oneDNN) it does nothing. Layers packed before the block stay so.
    """
    layers = pack(module)
    try:
        yield
    finally:
        for m in layers:
            m.packed_weight = None


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_kept = False


def keep_freed_memory() -> bool:
    """Have glibc keep freed blocks for reuse instead of handing them back to the OS. Returns whether
    the setting is in force (glibc on Linux only; GPTLAB_MALLOPT=0 turns it off).

    glibc serves blocks above a threshold (at most 32 MiB, set by the sizes it has seen) with their
    own mmap, and unmaps them when freed; it also returns the top of its heap once more than a
    threshold is free. A training step allocates and frees its activations, megabytes each, every
    step, so every step paid the page faults of touching fresh memory again: at the default preset
    that was about 7,000 page faults and a third of the step. With both thresholds raised the blocks
    stay in the heap and are reused. The price: the process keeps its peak heap until it exits.
    """
    global _kept
    if _kept or os.environ.get("GPTLAB_MALLOPT", "1") == "0" or not sys.platform.startswith("linux"):
        return _kept
    try:
        libc = ctypes.CDLL("libc.so.6")
        _kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc (musl, say): its allocator keeps its own counsel
        _kept = False
    return _kept
