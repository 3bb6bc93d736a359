"""Generation on token ids: greedy, sampling and beam search, with a KV cache.

The engine knows nothing about text: it takes ids and yields ids, one at a time, so a UI can show
each token as it comes (gptlab.textstream turns them into text). The KV cache is on by default;
the naive path that re-runs the whole context every step (use_cache=False) stays as the
reference, and the tests assert both give the same tokens.

End of text: when config.stop_at_eot is set and an `eot` id is given, generation stops when the
model produces it, and the eot token itself is not yielded (it separates documents; it is not
text). So the iterator yields fewer than max_new_tokens ids exactly when the model ended the text.

Context: the model sees at most block_size tokens. Past that, the window slides: each step
conditions on the last block_size tokens, as nanoGPT's generate does. GPT-2 has absolute
position embeddings, so sliding the window moves every cached key to a new position; the cache
is therefore rebuilt from the window at each step past block_size, which costs what the naive
path costs. The cache pays off inside the block, where each step feeds the model one token; that
one-token step goes through gptlab.decode_step, which computes the forward pass's numbers in fewer
calls (a small model's decoding is bound by dispatch, not arithmetic).

Memory: while a generation runs, the Linear weights are also held in oneDNN's blocked layout
(gptlab.kernels.packed_weights), a second copy of them, which streams faster. It is freed when the
iterator finishes or is closed.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F

from gptlab.config import SampleConfig
from gptlab.decode_step import DecodeStep
from gptlab.kernels import pack, packed_weights
from gptlab.model import GPT, KVCache
from gptlab.sampling import greedy_next, logits_processor, process_logits, sample_next

_SHARED = threading.Lock()
_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (its weights' versions, bf16 copy)

# transformers' beam search marks impossible candidates with this score rather than -inf, so that
# arithmetic on it stays finite; we keep the same constant to pick the same beams.
_BEAM_NEG = -1.0e9


class GenerationError(ValueError):
    """The prompt or the arguments cannot be generated from; the message says what to change."""


def generate(model: GPT, prompt_ids: Iterable[int] | torch.Tensor, config: SampleConfig, *,
             eot: int | None = None, generator: torch.Generator | None = None,
             use_cache: bool = True) -> Iterator[int]:
    """Yield up to config.max_new_tokens new token ids that continue `prompt_ids`.

    config.strategy picks greedy decoding, sampling or beam search. Sampling draws from
    `generator`; when it is None and config.seed is set, a generator seeded with config.seed is
    used, so the same seed gives the same text. Beam search cannot know its answer before the end,
    so it yields the best sequence's tokens all at once when it finishes.

    An empty prompt starts from `eot` (GPT-2's way to sample unconditionally); without an eot it
    is an error. The model runs in eval mode under torch.inference_mode while the iterator is
    being consumed, and gets its training mode back when the iterator finishes or is closed.
    """
    ids = _prompt(model, prompt_ids, eot)
    model = generation_copy(model, config.precision)
    if generator is None and config.seed is not None and config.strategy == "sample":
        generator = torch.Generator(device=_device(model)).manual_seed(config.seed)
    if config.strategy == "beam":
        return _beam_search(model, ids, config, eot, use_cache)
    return _decode(model, ids, config, eot, generator, use_cache)


def generation_copy(model: GPT, precision: str) -> GPT:
    """The model to generate from: itself for fp32, or a bfloat16 copy of it.

    Decoding reads every weight once per token, so half the bytes is up to twice the tokens/s where
    the matmuls run natively in bf16. The copy is built on the meta device and then given the
    converted tensors, so no time goes into initialising weights that are overwritten at once. It
    is kept beside the model, with its weights packed for oneDNN, for the next generation (the app
    samples one loaded model many times), and made again once any weight has changed: training in
    between, or a new state dict. For GPT-2 small the two copies hold 0.5 GB."""
    if precision == "fp32" or next(model.parameters()).dtype == torch.bfloat16:
        return model
    version = tuple((id(p), p._version) for p in model.parameters())  # in-place updates bump _version
    with _SHARED:
        kept = _COPIES.get(model)
        if kept is not None and kept[0] == version:
            return kept[1]
    with torch.device("meta"):
        copy = type(model)(model.config)
    copy.load_state_dict({k: v.detach().to(torch.bfloat16) if v.is_floating_point() else v
                          for k, v in model.state_dict().items()}, assign=True)
    pack(copy.eval())  # for good: nothing changes the copy's weights, and packing 124M cost 0.1 s a time
    with _SHARED:
        _COPIES[model] = (version, copy)
    return copy


def next_token_distribution(model: GPT, prompt_ids: Iterable[int] | torch.Tensor, config: SampleConfig,
                            top_n: int = 10, *, eot: int | None = None) -> list[tuple[int, float]]:
    """The top_n most likely next tokens with their probabilities after all of config's processors,
    most likely first: what sampling would draw from. For greedy and beam search, the distribution
    after the repetition penalty and n-gram blocking, at temperature 1. Tokens the filters removed
    (probability 0) are left out."""
    if top_n <= 0:
        raise GenerationError(f"top_n must be a positive whole number, got {top_n}.")
    ids, logits = next_token_logits(model, prompt_ids, eot=eot)
    seq = torch.tensor([ids], dtype=torch.long, device=logits.device)  # (1, T)
    probs = process_logits(logits[None], seq, config).softmax(dim=-1)[0]
    top = torch.topk(probs, min(top_n, probs.numel()))
    return [(int(i), float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist()) if p > 0]


def next_token_logits(model: GPT, prompt_ids: Iterable[int] | torch.Tensor, *,
                      eot: int | None = None) -> tuple[list[int], torch.Tensor]:
    """(the prompt's ids as the model reads them, the model's float logits (V,) for the next token):
    an empty prompt starts from eot, as generate does."""
    ids = _prompt(model, prompt_ids, eot)
    with _inference(model), torch.inference_mode():
        seq = torch.tensor([ids], dtype=torch.long, device=_device(model))  # (1, T)
        logits, _ = model(seq[:, -model.config.block_size:], last_only=True)
    return ids, logits[0, -1].float().clone()  # a plain tensor, usable outside inference mode


# --------------------------------------------------------------------------------------------
# Internals


def _device(model: GPT) -> torch.device:
    return next(model.parameters()).device


def _prompt(model: GPT, prompt_ids, eot: int | None) -> list[int]:
    vocab = model.config.vocab_size
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dim() != 1:
            raise GenerationError(f"prompt_ids must be one sequence of token ids (1-D), got a tensor of shape "
                                  f"{tuple(prompt_ids.shape)}; generate one prompt at a time.")
        prompt_ids = prompt_ids.tolist()
    ids = [int(i) for i in prompt_ids]
    if eot is not None and not 0 <= eot < vocab:
        raise GenerationError(f"The end-of-text id {eot} is outside the model's vocabulary of {vocab} tokens; "
                              "pass the eot of the tokenizer the model was trained with, or None.")
    if not ids:
        if eot is None:
            raise GenerationError("The prompt is empty and this tokenizer has no end-of-text token to start from; "
                                  "give at least one token of text.")
        ids = [eot]
    bad = sorted({i for i in ids if not 0 <= i < vocab})
    if bad:
        raise GenerationError(f"Token id(s) {bad[:10]} are outside the model's vocabulary of {vocab} tokens; "
                              "encode the prompt with the tokenizer this model was trained with.")
    return ids


class _inference:
    """Eval mode and packed weights for the duration. Generations from one model may run at once
    (the app shares a loaded model between requests): the first one in sets the model up, and the
    last one out gives it its own mode back and frees the packed copy, so no generation changes the
    model while another uses it, and each computes exactly what it would alone."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __enter__(self):
        with _SHARED:
            users = getattr(self.model, "_inference_users", 0)
            if users == 0:
                self.model._inference_mode = self.model.training
                self.model.eval()
                self.model._inference_packing = packed_weights(self.model)
                self.model._inference_packing.__enter__()
            self.model._inference_users = users + 1

    def __exit__(self, *exc):
        with _SHARED:
            self.model._inference_users -= 1
            if self.model._inference_users == 0:
                self.model._inference_packing.__exit__(None, None, None)
                self.model.train(self.model._inference_mode)


class _Context:
    """Feeds the model the part of the sequence it has not seen yet and returns the next-token logits,
    keeping the context to the last block_size tokens.

    With a cache, `seen` counts the tokens of the sequence the cache covers; rows of the cache
    follow rows of the sequences (reorder keeps them aligned in beam search). Without one, every
    call recomputes the window: the slow, obvious reference.
    """

    def __init__(self, model: GPT, batch_size: int, use_cache: bool):
        self.model = model
        self.block = model.config.block_size
        self.cache = self.step = None
        if use_cache:
            p = next(model.parameters())
            self.cache = KVCache(model.config, batch_size, device=p.device, dtype=p.dtype)
            self.step = DecodeStep(model, self.cache)  # one new token at a time: the forward pass, cheaper
        self.seen = 0

    def next_logits(self, seq: torch.Tensor) -> torch.Tensor:
        """seq (B, n): the whole sequences so far. Returns float logits (B, vocab) for position n."""
        n = seq.size(1)
        if self.cache is None:
            logits, _ = self.model(seq[:, -self.block:], last_only=True)
        else:
            new = n - self.seen
            if self.cache.pos + new > self.block:
                # The window slides, so every cached key would sit at the wrong absolute position.
                self.cache.pos = 0
                new = min(n, self.block)
            self.seen = n
            if new == 1:
                return self.step(seq[:, n - 1])
            logits, _ = self.model(seq[:, n - new:], cache=self.cache, last_only=True)
        return logits[:, -1].float()

    def reorder(self, index: torch.Tensor) -> None:
        if self.cache is not None:
            self.cache.reorder(index)


@torch.inference_mode()
def _decode(model: GPT, ids: list[int], config: SampleConfig, eot: int | None,
            generator: torch.Generator | None, use_cache: bool) -> Iterator[int]:
    """Greedy decoding or sampling, one token per step."""
    with _inference(model):
        device = _device(model)
        start = len(ids)
        seq = torch.empty(1, start + config.max_new_tokens, dtype=torch.long, device=device)  # (1, max length)
        seq[0, :start] = torch.tensor(ids, dtype=torch.long)
        context = _Context(model, 1, use_cache)
        stop_id = eot if config.stop_at_eot else None
        process, sampling = logits_processor(config), config.strategy == "sample"
        for n in range(start, start + config.max_new_tokens):
            so_far = seq[:, :n]
            scores = process(context.next_logits(so_far), so_far)
            token = sample_next(scores, generator) if sampling else greedy_next(scores)
            token_id = int(token.item())
            if token_id == stop_id:
                return
            seq[0, n] = token_id
            yield token_id


def _beam_search(model: GPT, ids: list[int], config: SampleConfig, eot: int | None,
                 use_cache: bool) -> Iterator[int]:
    """The new tokens of the best hypothesis, without its final eot, once the search has finished."""
    found = beam_search(model, ids, config, eot=eot, use_cache=use_cache)
    yield from found[0].tokens if found else ()


@dataclass(frozen=True)
class Beam:
    """A finished hypothesis of beam search."""
    tokens: tuple[int, ...]  # the new tokens, without a final eot
    score: float  # sum_logprobs / length ** length_penalty: what the beams are ranked by
    sum_logprobs: float  # of the new tokens after the processors, the eot included
    length: int  # new tokens, the eot included (as transformers counts it)
    ended: bool  # it ended with eot, rather than at the length limit


@torch.inference_mode()
def beam_search(model: GPT, prompt_ids: Iterable[int] | torch.Tensor, config: SampleConfig, *,
                eot: int | None = None, use_cache: bool = True) -> list[Beam]:
    """Beam search with the semantics of transformers' generate(num_beams=..., do_sample=False);
    returns the finished hypotheses, best first (up to num_beams; their scores are transformers'
    sequences_scores).

    Each step takes the best 2 * num_beams continuations over all beams; those ending in eot (or
    reaching the length limit) compete, scored as sum of log-probs / length ** length_penalty,
    for the num_beams places of finished hypotheses, and the best num_beams of the rest keep
    running. Scores include the eot token in the length, as transformers counts it. With
    early_stopping the search ends once num_beams hypotheses have finished; without it, when no
    running beam can still beat the worst finished one (transformers' heuristic, judged at the
    current length).
    """
    ids = _prompt(model, prompt_ids, eot)
    if config.strategy != "beam":
        raise GenerationError(f"beam_search needs strategy 'beam', got '{config.strategy}'.")
    with _inference(model):
        device = _device(model)
        beams, lp = config.num_beams, config.length_penalty
        start = len(ids)
        max_len = start + config.max_new_tokens
        keep = 2 * beams  # enough candidates that num_beams stay running even if num_beams of them end here
        stop_id = eot if config.stop_at_eot else None
        first_k = torch.arange(keep, device=device) < beams

        seqs = torch.zeros(beams, max_len, dtype=torch.long, device=device)  # running hypotheses
        seqs[:, :start] = torch.tensor(ids, dtype=torch.long)
        scores = torch.full((beams,), _BEAM_NEG, device=device)
        scores[0] = 0.0  # all beams start equal; only the first may expand, or they would all pick the same
        done_seqs = seqs.clone()  # finished hypotheses, best first
        done_scores = torch.full((beams,), _BEAM_NEG, device=device)
        done_flags = torch.zeros(beams, dtype=torch.bool, device=device)
        done_lens = torch.zeros(beams, dtype=torch.long, device=device)  # new tokens in each
        done_sums = torch.zeros(beams, device=device)  # their raw sums of log-probs
        improvable = True

        context = _Context(model, 1, use_cache)
        for n in range(start, max_len):
            if n == start:
                # The beams share the prompt: run it once, then copy its cache to every beam.
                logits = context.next_logits(seqs[:1, :n]).expand(beams, -1)
                context.reorder(torch.zeros(beams, dtype=torch.long, device=device))
            else:
                logits = context.next_logits(seqs[:, :n])
            logprobs = process_logits(F.log_softmax(logits, dim=-1), seqs[:, :n], config, warp=False)  # (beams, V)
            V = logprobs.size(-1)
            total = (logprobs + scores[:, None]).view(-1)  # (beams * V,)
            top_scores, top_idx = torch.topk(total, keep)
            source = top_idx // V
            candidates = seqs[source]  # (keep, max_len)
            candidates[:, n] = top_idx % V
            ended = candidates[:, n] == stop_id if stop_id is not None else torch.zeros_like(first_k)
            ended |= n + 1 >= max_len

            # The best candidates that did not end keep running.
            running_scores = top_scores + ended.float() * _BEAM_NEG
            pick = torch.topk(running_scores, beams).indices
            seqs, scores = candidates[pick], running_scores[pick]

            # Candidates that ended among the top num_beams compete with the finished ones.
            just_done = ended & first_k
            final = top_scores / ((n + 1 - start) ** lp)
            if config.early_stopping and bool(done_flags.all()):
                final = final + _BEAM_NEG
            if not improvable:
                final = final + _BEAM_NEG
            final = final + (~just_done).float() * _BEAM_NEG
            best = torch.topk(torch.cat((done_scores, final)), beams).indices
            done_seqs = torch.cat((done_seqs, candidates))[best]
            done_scores = torch.cat((done_scores, final))[best]
            done_flags = torch.cat((done_flags, just_done))[best]
            done_lens = torch.cat((done_lens, torch.full((keep,), n + 1 - start, device=device)))[best]
            done_sums = torch.cat((done_sums, top_scores))[best]

            context.reorder(source[pick])
            # Can a running beam still beat the worst finished hypothesis? Judged at the current length.
            best_running = scores[0] / ((n + 1 - start) ** lp)
            worst_done = torch.where(done_flags, done_scores.min(), torch.tensor(_BEAM_NEG, device=device))
            improvable = improvable and bool((best_running > worst_done).any())
            all_done = config.early_stopping and bool(done_flags.all())
            if not improvable or all_done or bool(ended.all()):
                break

        found = []
        for seq, score, total, length, flag in zip(done_seqs.tolist(), done_scores.tolist(), done_sums.tolist(),
                                                   done_lens.tolist(), done_flags.tolist()):
            if not flag:
                continue
            new = seq[start:start + length]
            ended = stop_id is not None and bool(new) and new[-1] == stop_id
            found.append(Beam(tuple(new[:-1] if ended else new), score, total, length, ended))
        return found
