"""gptlab.hub is the only part of gptlab that imports huggingface_hub (slow to import) and httpx2, its
HTTP client: the CLI, the checkpoint format and the run registry load them only when a command needs
the Hub. Kept apart from test_hub.py, which needs transformers, so that these run without it."""

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HUB_PACKAGES = ("huggingface_hub", "httpx2")


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a file imports anywhere, function bodies included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_gptlab_hub_imports_huggingface_hub():
    hub = REPO / "gptlab" / "hub"
    outside = [p for p in [*(REPO / "gptlab").rglob("*.py"), REPO / "app.py"] if hub not in p.parents]
    assert len(outside) > 10 and (hub / "download.py").is_file()
    offenders = {str(p.relative_to(REPO)): sorted(imported_packages(p) & set(HUB_PACKAGES)) for p in outside}
    assert {k: v for k, v in offenders.items() if v} == {}
    # The weight mapping needs no Hub client (though importing it through the package loads one).
    assert imported_packages(hub / "convert.py") & set(HUB_PACKAGES) == set()
    assert imported_packages(hub / "download.py") >= set(HUB_PACKAGES)


def test_importing_cli_checkpoint_and_runs_leaves_huggingface_hub_unloaded():
    # A fresh interpreter, so that nothing this test session imported counts.
    code = ("import json, sys\n"
            "loaded = {}\n"
            "for module in ('gptlab.cli', 'gptlab.checkpoint', 'gptlab.runs', 'gptlab.hub'):\n"
            "    __import__(module)\n"
            f"    loaded[module] = sorted(m for m in {HUB_PACKAGES!r} if m in sys.modules)\n"
            "print(json.dumps(loaded))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"gptlab.cli": [], "gptlab.checkpoint": [], "gptlab.runs": [],
                                      "gptlab.hub": sorted(HUB_PACKAGES)}
