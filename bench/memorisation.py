"""The memorisation meter on a 20 MB corpus: how long the index takes to build (once per run) and how
long one sample takes to check (every time a user asks; it must stay under a second).

    python bench/memorisation.py              # 20 MB: tinyshakespeare repeated, every copy perturbed
    python bench/memorisation.py --mb 2       # a quicker run

The corpus is made in memory from ../shared/data/tinyshakespeare.txt, each copy with about one
character in 200 changed, so that the copies differ and the suffix array has long ties to refine
(the hard case for prefix doubling); it is never written to disk. Samples are 500 characters, half
copied from the corpus with a few changes, half words shuffled (mostly novel 8-grams).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gptlab.insight.memorise import build_index, load_index, memorisation, save_index  # noqa: E402
from gptlab.tokenizers import CharTokenizer  # noqa: E402

TINYSHAKESPEARE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tinyshakespeare.txt"


def corpus(mb: float, rng: random.Random) -> str:
    base = TINYSHAKESPEARE.read_text(encoding="utf-8")
    letters = "abcdefghijklmnopqrstuvwxyz"
    copies = []
    while sum(map(len, copies)) < mb * 1e6:
        chars = list(base)
        for i in rng.sample(range(len(chars)), len(chars) // 200):
            chars[i] = rng.choice(letters)
        copies.append("".join(chars))
    return "".join(copies)[: int(mb * 1e6)]


def samples(text: str, count: int, rng: random.Random) -> list[str]:
    out = []
    words = text[:200_000].split()
    for k in range(count):
        if k % 2 == 0:
            start = rng.randrange(len(text) - 500)
            chars = list(text[start:start + 500])
            for i in rng.sample(range(500), 3):
                chars[i] = "#"  # never in the corpus: the copy breaks there
            out.append("".join(chars))
        else:
            out.append(" ".join(rng.choice(words) for _ in range(120))[:500])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=20.0, help="corpus size in MB (default 20)")
    parser.add_argument("--samples", type=int, default=10, help="samples to check (default 10)")
    args = parser.parse_args()
    rng = random.Random(0)
    text = corpus(args.mb, rng)
    tokenizer = CharTokenizer.from_text(text + "#")

    start = time.perf_counter()
    ids = np.asarray(tokenizer.encode(text), dtype=np.int32)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    index = build_index(ids)
    build_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.npz"
        start = time.perf_counter()
        save_index(index, path)
        save_s = time.perf_counter() - start
        size_mb = path.stat().st_size / 1e6
        start = time.perf_counter()
        index = load_index(path)
        load_s = time.perf_counter() - start

    times, rows = [], []
    for sample in samples(text, args.samples, rng):
        start = time.perf_counter()
        result = memorisation(index, tokenizer.encode(sample))
        times.append(time.perf_counter() - start)
        rows.append((result.longest.length, result.novel_share))
    print(f"corpus: {len(text) / 1e6:.1f} MB, {ids.size:,} tokens (char tokenizer)")
    print(f"encode {encode_s:.1f} s · build index (depth {index.depth}) {build_s:.1f} s · save {save_s:.1f} s "
          f"({size_mb:.0f} MB file) · load {load_s:.2f} s")
    print(f"query, 500-character samples: mean {np.mean(times):.3f} s, max {np.max(times):.3f} s")
    for (length, share), t in zip(rows, times):
        print(f"  longest copy {length:4d} chars · novel 8-grams {share:6.1%} · {t:.3f} s")


if __name__ == "__main__":
    main()
