"""Generation speed on CPU: our KV cache against the naive recompute, and against transformers'
generate and llama.cpp (through llama-cpp-python, on our GGUF export) on the same weights. Greedy
decoding, batch 1, random weights, eos turned off so every run produces exactly --tokens new tokens.
llama.cpp runs the f32 file (the same numbers as ours) and the f16 and q8_0 files a user would
download; it is skipped when gguf or llama_cpp is not installed.

    python bench/generate.py            # GPT-2 small shape (124M) and tiny models, 200 new tokens
    python bench/generate.py --quick    # a smoke run in seconds
    python bench/generate.py --sizes tiny --tokens 500 --repeats 5

Runs are interleaved (ours, transformers, ours, ...) and the best of --repeats is reported, so
that other work on a shared machine disturbs both sides alike.

Decoding one token at batch 1 reads every weight once, so memory bandwidth bounds it: the run also
measures this machine's copy bandwidth (a 512 MiB tensor copied, bytes read plus written, best of 5,
before the runs and after them, the higher of the two taken) and reports each path's tokens/s as a fraction of bandwidth / bytes of weights per token (4 bytes a
weight for fp32, 2 for bf16 and f16, 34/32 for q8_0; the position table is read one row at a time and left
out). A copy is a floor on what the memory delivers, not a ceiling: kernels that prefetch well can
read faster than it moves bytes, so a fraction a little above 1 means the path is at the bound.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gptlab.config import ModelConfig, SampleConfig  # noqa: E402
from gptlab.generate import generate  # noqa: E402
from gptlab.hub import from_hf_state_dict  # noqa: E402
from gptlab.model import GPT  # noqa: E402

SIZES = {
    "124m": ModelConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
    "tiny": ModelConfig(vocab_size=65, block_size=512, n_layer=4, n_head=4, n_embd=128),
    # The app's default architecture at the same size, against transformers' NanoChatForCausalLM.
    "tiny-nanochat": ModelConfig(vocab_size=65, block_size=512, n_layer=4, n_head=4, n_embd=128,
                                 architecture="nanochat"),
}


def build(config: ModelConfig, seed: int):
    """A random transformers GPT-2 (or NanoChat) and our copy of it."""
    from transformers import GPT2Config, GPT2LMHeadModel, NanoChatConfig, NanoChatForCausalLM

    torch.manual_seed(seed)
    if config.architecture == "nanochat":
        hf = NanoChatForCausalLM(NanoChatConfig(
            vocab_size=config.vocab_size, max_position_embeddings=config.block_size, hidden_size=config.n_embd,
            intermediate_size=4 * config.n_embd, num_hidden_layers=config.n_layer,
            num_attention_heads=config.n_head, bos_token_id=0, eos_token_id=None, pad_token_id=0)).eval()
    else:
        hf = GPT2LMHeadModel(GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size,
                                        n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
                                        bos_token_id=0, eos_token_id=None, pad_token_id=0)).eval()
    ours = GPT(config)
    ours.load_state_dict(from_hf_state_dict(hf.state_dict()))
    return hf, ours.eval()


@contextlib.contextmanager
def last_position_logits(model: GPT):
    """What computing lm_head on the last position only would save: a hook narrows ln_f's output
    to the last position, so lm_head runs on (B, 1, C) instead of (B, T, C)."""
    handle = model.transformer.ln_f.register_forward_hook(lambda mod, args, out: out[:, -1:])
    try:
        yield
    finally:
        handle.remove()


def llama_cpp_runs(config: ModelConfig, ours: GPT, prompt: torch.Tensor, tokens: int, folder: Path) -> dict:
    """Greedy generation in llama.cpp from our model exported as GGUF, one run per weight type; {}
    when gguf or llama-cpp-python is missing, or for nanochat, which llama.cpp has no architecture for."""
    if config.architecture == "nanochat":
        return {}
    try:
        import gguf  # noqa: F401
        import llama_cpp
    except ImportError as e:
        print(f"note: llama.cpp skipped ({e.name} is not installed: pip install -r requirements-dev.txt)",
              file=sys.stderr)
        return {}
    from gptlab.checkpoint import save_checkpoint
    from gptlab.gguf_export import export_gguf
    from gptlab.tokenizers import CharTokenizer, GPT2Tokenizer

    tokenizer = GPT2Tokenizer() if config.vocab_size == 50257 else CharTokenizer([chr(33 + i) for i in
                                                                                 range(config.vocab_size)])
    save_checkpoint(folder / "ckpt", ours, config, tokenizer)
    threads = torch.get_num_threads()
    ids = prompt.tolist()
    runs = {}
    for dtype in ("f32", "f16", "q8_0"):
        llm = llama_cpp.Llama(model_path=str(export_gguf(folder / "ckpt", folder / f"{dtype}.gguf", dtype=dtype)),
                              n_ctx=config.block_size, n_threads=threads, n_threads_batch=threads, verbose=False)

        def run(llm=llm, n=tokens):
            out = []
            for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, min_p=0.0, reset=True):
                out.append(token)
                if len(out) == n:
                    return out

        run(n=4)  # warm up
        runs[f"llama.cpp ({dtype} GGUF, llama-cpp-python)"] = run
    return runs


def copy_bandwidth(mib: int = 512, repeats: int = 5) -> float:
    """Bytes per second that torch's own copy moves (read + write) between two large tensors."""
    a = torch.ones(mib * 2**20 // 4)
    b = torch.empty_like(a)
    b.copy_(a)  # first touch: page faults are not bandwidth
    best = min(timed(lambda: b.copy_(a))[0] for _ in range(repeats))
    return 2 * a.numel() * a.element_size() / best


def weight_bytes_per_token(config: ModelConfig, label: str) -> float:
    """Bytes of weights one decoding step reads, by the path's number format (see the docstring)."""
    per_weight = 2.0 if "f16" in label else 34 / 32 if "q8_0" in label else 4.0
    position_table = 0 if config.architecture == "nanochat" else config.block_size * config.n_embd
    return per_weight * (config.num_params() - position_table)


def timed(fn) -> tuple[float, list[int]]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_size(name: str, config: ModelConfig, args) -> list[tuple[str, str, float]]:
    hf, ours = build(config, args.seed)
    prompt = torch.randint(0, config.vocab_size, (args.prompt,), generator=torch.Generator().manual_seed(1))
    tokens = args.tokens
    if args.prompt + tokens > config.block_size:
        raise SystemExit(f"--prompt + --tokens ({args.prompt + tokens}) exceeds the {name} model's context "
                         f"({config.block_size}); transformers cannot go past it.")
    sample = SampleConfig(strategy="greedy", max_new_tokens=tokens)

    def ours_cache():
        return list(generate(ours, prompt, sample, use_cache=True))

    def ours_bf16():  # the copy is made inside, so its cost is counted
        return list(generate(ours, prompt, sample.replace(precision="bf16"), use_cache=True))

    def ours_naive():
        return list(generate(ours, prompt, sample, use_cache=False))

    def ours_naive_last():
        with last_position_logits(ours):
            return list(generate(ours, prompt, sample, use_cache=False))

    def transformers_cache():
        x = prompt[None]
        with torch.inference_mode():
            out = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=tokens,
                              min_new_tokens=tokens, pad_token_id=0)
        return out[0, x.size(1):].tolist()

    runs = {"ours, KV cache": ours_cache, "ours, KV cache, bf16 copy (precision=bf16)": ours_bf16,
            "transformers generate": transformers_cache, "ours, no cache": ours_naive}
    if not args.skip_last:
        runs["ours, no cache, lm_head on last position (hook)"] = ours_naive_last
    folder = Path(tempfile.mkdtemp(prefix="gptlab-bench-"))
    runs.update(llama_cpp_runs(config, ours, prompt, tokens, folder))
    # Warm up every path (allocator, thread pool, lazy imports) on a few tokens.
    small = SampleConfig(strategy="greedy", max_new_tokens=4)
    list(generate(ours, prompt, small))
    list(generate(ours, prompt, small.replace(precision="bf16")))
    list(generate(ours, prompt, small, use_cache=False))
    hf.generate(prompt[None], attention_mask=torch.ones(1, args.prompt, dtype=torch.long), max_new_tokens=4,
                do_sample=False, pad_token_id=0)

    best: dict[str, float] = {}
    outputs: dict[str, list[int]] = {}
    for _ in range(args.repeats):
        for label, fn in runs.items():
            if label.startswith("ours, no cache") and label in best:
                continue  # the naive path on the 124M model takes minutes; once shows the gap
            seconds, outputs[label] = timed(fn)
            best[label] = min(best.get(label, float("inf")), seconds)
    shutil.rmtree(folder, ignore_errors=True)
    reference = outputs["ours, KV cache"]
    for label, out in outputs.items():
        if out != reference and "f16" not in label and "q8_0" not in label:  # rounded weights may choose otherwise
            print(f"warning: {name} '{label}' produced different tokens from ours with the cache", file=sys.stderr)
    return [(name, label, tokens / best[label], weight_bytes_per_token(config, label)) for label in runs]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=sorted(SIZES))
    parser.add_argument("--tokens", type=int, default=200, help="new tokens per run (default 200)")
    parser.add_argument("--prompt", type=int, default=16, help="prompt length in tokens (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per path; the best is reported (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-last", action="store_true", help="skip the lm_head-on-last-position measurement")
    parser.add_argument("--quick", action="store_true", help="tiny model, 32 tokens, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.tokens, args.repeats = ["tiny"], 32, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    before = copy_bandwidth()
    rows = []
    for name in args.sizes:
        rows += bench_size(name, SIZES[name], args)
    after = copy_bandwidth()  # a neighbour's load moves it by a third on a shared machine
    bandwidth = max(before, after)

    print(f"\nGreedy generation, CPU ({torch.get_num_threads()} threads), batch 1, prompt {args.prompt}, "
          f"{args.tokens} new tokens, best of {args.repeats} (naive paths: 1 run), torch {torch.__version__}")
    print(f"memory bandwidth (torch copy, read + write): {before / 1e9:.1f} GB/s before the runs, "
          f"{after / 1e9:.1f} GB/s after; the bounds use the higher")
    header = (f"| {'model':<13} | {'path':<48} | {'tokens/s':>9} | {'vs transformers':>15} | "
              f"{'vs ours, no cache':>17} | {'bound tok/s':>11} | {'of bound':>8} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, label, rate, weight_bytes in rows:
        ref = next(r for n, lab, r, _ in rows if n == name and lab == "transformers generate")
        naive = next(r for n, lab, r, _ in rows if n == name and lab == "ours, no cache")
        bound = bandwidth / weight_bytes
        print(f"| {name:<13} | {label:<48} | {rate:>9.1f} | {rate / ref:>14.2f}x | {rate / naive:>16.2f}x | "
              f"{bound:>11.0f} | {rate / bound:>8.2f} |")


if __name__ == "__main__":
    main()
