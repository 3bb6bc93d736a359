"""The nanochat model's elementwise steps with hand-written backward passes.

Autograd builds RMSNorm and ReLU² out of generic ops (pow, mean, rsqrt, mul; relu, pow) and runs
one backward op for each: a dozen full passes over the activations per norm. On a CPU, at the
default preset's size, those passes cost more than the matmuls around them. The functions here
compute the same forward values and the textbook gradients in about a third of the passes.

Each has the plain composition beside it (`*_reference`): the tests hold the fast path to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def relu_squared_reference(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


def rms_norm_reference(x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),), eps=eps)


class _ReLUSquared(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        r = torch.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, grad):
        (r,) = ctx.saved_tensors
        return (r * grad).mul_(2.0)  # d(r²)/dx = 2r, and r is already 0 where relu cut x off


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, eps):
        rstd = torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)  # (..., 1)
        y = x * rstd
        ctx.save_for_backward(y, rstd)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, rstd = ctx.saved_tensors
        # y = x·rstd with rstd depending on x: dx = rstd·(g − y·mean(g·y)).
        dot = (grad * y).mean(-1, keepdim=True)
        return torch.addcmul(grad, y, dot, value=-1.0).mul_(rstd), None


def _fast(x: torch.Tensor) -> bool:
    # Outside autograd there is no backward to save; under compile, inductor fuses the plain ops itself.
    return x.requires_grad and torch.is_grad_enabled() and not torch.compiler.is_compiling()


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    return _ReLUSquared.apply(x) if _fast(x) else relu_squared_reference(x)


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension without a learned scale, computed in float32 at least.

    Without autograd (or under compile, which fuses it) it is transformers' NanoChatRMSNorm formula in
    four ops: F.rms_norm dispatches through a dozen (two of them copies), which made RMSNorm a third of
    a small model's generation."""
    dtype = x.dtype
    x = x.float() if dtype in (torch.float16, torch.bfloat16) else x
    y = _RMSNorm.apply(x, eps) if _fast(x) else x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
    return y if y.dtype == dtype else y.to(dtype)
