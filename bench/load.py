"""Load test: the app on 127.0.0.1, driven by gradio_client, while one run trains.

1. Training alone for `--seconds`, then training while `--samplers` clients sample in a loop
   (each its own browser, each sampling a checkpoint zip it uploaded); the training's tokens/s in
   both phases, and the samplers' latency (p50, p95), errors and cross-talk (the same prompt and
   seed must give every client the same text).
2. Three clients press Start at once with the server's limit at one training: one trains, the
   others are told the server is busy.

Everything is bounded: each phase by its seconds, each call by a timeout. tests/robustness runs a
short version (`run_load(seconds=2, samplers=3, ...)`).

    python bench/load.py [--seconds 20] [--samplers 8]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

os.environ.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", MPLBACKEND="Agg",
                  NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gradio_client import Client, handle_file  # noqa: E402

from gptlab.events import StepEvent  # noqa: E402
from gptlab.service import Lab, Limits  # noqa: E402

TEXT = ("ROMEO: But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.\n"
        "JULIET: O Romeo, Romeo, wherefore art thou Romeo? Deny thy father and refuse thy name.\n") * 40
MODEL = dict(n_layer=2, n_head=2, n_embd=64, block_size=64, dropout=0.0, bias=True, activation="gelu",
             architecture="gpt2")  # pinned: the default preset is nanochat, slower per step
TRAIN = dict(batch_size=16, grad_accum_steps=1, learning_rate=3e-3, min_lr=3e-4, lr_schedule="cosine",
             warmup_steps=10, weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0, eval_interval=100_000,
             eval_batches=2, patience=0, sample_interval=0, seed=1, precision="auto", optimizer="adamw",
             snapshot_tokens=0)  # throughput under load is what this measures; the time machine's cost is app_overhead's
DECODING = dict(strategy="sample", temperature=0.8, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                no_repeat_ngram_size=0, num_beams=4, length_penalty=1.0, seed=7, stop="")


@dataclass
class LoadReport:
    alone_tokens_per_s: float = 0.0
    loaded_tokens_per_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # refusals ("the server is busy") included
    distinct_texts: int = 0  # 1 when every client got the same text for the same prompt and seed
    starts: list[str] = field(default_factory=list)  # "trained" or the refusal, one per simultaneous start

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_s) if self.latencies_s else float("nan")

    @property
    def p95(self) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(client: Client, owner: str, **settings):
    return client.submit(owner=owner, source="Paste text", files=None, pasted=TEXT, tokenizer="char",
                         start_from="Scratch (random weights)", **{**MODEL, **TRAIN, **settings}, api_name="/train")


def _tokens_per_s(lab: Lab, owner: str, run_id: str, since: float) -> float:
    """Mean throughput of the steps that ended after `since` seconds into the run."""
    steps = [e for e in lab.registry.events(owner, run_id) if isinstance(e, StepEvent) and e.elapsed >= since]
    return statistics.fmean(e.tokens_per_sec for e in steps) if steps else 0.0


def _timed_run(lab: Lab, client: Client, seconds: float) -> tuple[str, str, object]:
    owner = Lab.owner_or_new("")
    job = _train(client, owner, max_steps=100_000, max_time=seconds)
    deadline = time.monotonic() + 60
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.05)
    _, run_id = job.outputs()[0][:2]
    return owner, run_id, job


def _samplers(url: str, checkpoint: str, count: int, new_tokens: int, stop, results) -> None:
    """`count` clients, each its own browser sampling an uploaded checkpoint in a loop until `stop`;
    one that is told the server is busy waits half a second, as a person would, and tries again.
    Puts (latencies, errors, texts) on `results`."""
    latencies, errors, texts, lock = [], [], [], threading.Lock()

    clients = [Client(url, verbose=False) for _ in range(count)]
    results.put("ready")

    def sampler(me: Client) -> None:
        mine = Lab.owner_or_new("")
        while not stop.is_set():
            begun = time.perf_counter()
            try:
                text = me.predict(owner=mine, run_id=None, which="uploaded .zip", upload=handle_file(checkpoint),
                                  prompt="ROMEO:", **DECODING, max_new_tokens=new_tokens, api_name="/sample")
            except Exception as e:  # counted, never raised: the report says what failed
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                time.sleep(0.5)
                continue
            with lock:
                latencies.append(time.perf_counter() - begun)
                texts.append(text)

    with ThreadPoolExecutor(count) as pool:
        for me in clients:
            pool.submit(sampler, me)
    results.put((latencies, errors, texts))


def run_load(seconds: float = 20.0, samplers: int = 8, new_tokens: int = 100, warmup_s: float = 1.0) -> LoadReport:
    report = LoadReport()
    with tempfile.TemporaryDirectory(prefix="gptlab-load-") as tmp:
        from gptlab.ui import build_demo, launch

        lab = Lab(Path(tmp) / "runs", max_concurrent=1, limits=Limits(poll_seconds=0.5))
        demo = build_demo(lab)
        _, url, _ = launch(demo, lab, server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True,
                           quiet=True)
        try:
            client = Client(url, verbose=False)
            # A checkpoint for the samplers: each uploads it, as a stranger with a zip would.
            owner = Lab.owner_or_new("")
            *_, (owner, run_id, *_) = _train(client, owner, max_steps=30, max_time=0)
            checkpoint = client.predict(owner=owner, run_id=run_id, api_name="/downloads")[0]

            owner, run_id, job = _timed_run(lab, client, seconds)
            job.result(timeout=seconds + 60)
            report.alone_tokens_per_s = _tokens_per_s(lab, owner, run_id, warmup_s)

            # The samplers run in a process of their own, as remote browsers would: client threads in
            # the server's process would compete with it for the interpreter lock.
            context = multiprocessing.get_context("spawn")
            results, stop = context.Queue(), context.Event()
            child = context.Process(target=_samplers, args=(url, checkpoint, samplers, new_tokens, stop, results))
            child.start()
            assert results.get(timeout=120) == "ready"
            owner, run_id, job = _timed_run(lab, client, seconds)
            job.result(timeout=seconds + 60)
            stop.set()
            report.latencies_s, report.errors, texts = results.get(timeout=120)
            child.join(30)
            report.loaded_tokens_per_s = _tokens_per_s(lab, owner, run_id, warmup_s)
            report.distinct_texts = len(set(texts))

            # Three Starts at once, one training allowed.
            def press_start(i: int) -> str:
                try:
                    _train(Client(url, verbose=False), Lab.owner_or_new(""), max_steps=20, max_time=0).result(
                        timeout=120)
                    return "trained"
                except Exception as e:
                    return str(e)

            with ThreadPoolExecutor(3) as pool:
                report.starts = list(pool.map(press_start, range(3)))
        finally:
            for info in lab.registry._all():
                lab.registry.stop(info.owner, info.id)
                lab.registry.wait(info.id, 30)
            demo.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each training phase")
    parser.add_argument("--samplers", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=100)
    args = parser.parse_args()
    r = run_load(args.seconds, args.samplers, args.new_tokens)
    print(f"training alone:          {r.alone_tokens_per_s:,.0f} tokens/s")
    print(f"training with {args.samplers} samplers: {r.loaded_tokens_per_s:,.0f} tokens/s "
          f"({r.loaded_tokens_per_s / max(r.alone_tokens_per_s, 1):.2f} of alone)")
    print(f"samples: {len(r.latencies_s)} in {args.seconds:g} s; latency p50 {r.p50:.2f} s, p95 {r.p95:.2f} s; "
          f"errors {len(r.errors)}; distinct texts for one prompt and seed: {r.distinct_texts}")
    for e in sorted(set(r.errors))[:5]:
        print(f"  error: {e}")
    print("three simultaneous starts: " + "; ".join(s if s == "trained" else "refused: " + s[:80] for s in r.starts))


if __name__ == "__main__":
    main()
