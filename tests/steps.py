"""Shared by the decoding step's tests: small models with wide weights, and a run of tokens fed
through the forward pass and through DecodeStep side by side."""

import torch

from gptlab.config import ModelConfig
from gptlab.decode_step import DecodeStep
from gptlab.model import GPT, KVCache


def model(seed: int = 0, **settings) -> GPT:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=50, block_size=24, n_layer=3, n_head=4, n_embd=32, **settings)
    m = GPT(config).eval()
    with torch.no_grad():  # a wide init, so that the logits are far from uniform and differences show
        for p in m.parameters():
            p.mul_(8.0)
    return m


def steps_both_ways(m: GPT, batch: int, prompt_len: int, steps: int):
    """Feed a random prompt to two caches through the forward pass, then `steps` tokens, one at a
    time, to one cache through the forward pass and to the other through DecodeStep."""
    tokens = torch.randint(0, m.config.vocab_size, (batch, prompt_len + steps), generator=torch.Generator().manual_seed(1))
    dtype = next(m.parameters()).dtype
    reference, fast = (KVCache(m.config, batch, dtype=dtype) for _ in range(2))
    step = DecodeStep(m, fast)
    with torch.inference_mode():
        m(tokens[:, :prompt_len], cache=reference)
        m(tokens[:, :prompt_len], cache=fast)
        for n in range(prompt_len, prompt_len + steps):
            expected = m(tokens[:, n:n + 1], cache=reference, last_only=True)[0][:, -1].float()
            yield expected, step(tokens[:, n]), reference, fast
