"""The layout's rules, checked: only gptlab/ui imports gradio, huggingface_hub arrives only with
gptlab.hub, and every command a newcomer types first (--help) prints its help."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gptlab"
LIBRARY = sorted("gptlab." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
                 for p in PACKAGE.rglob("*.py") if "ui" not in p.relative_to(PACKAGE).parts[:1]
                 and p.name != "__main__.py")


def loaded_after_import(modules: list[str], watched: tuple[str, ...]) -> dict[str, bool]:
    """Which of `watched` a fresh interpreter has loaded once `modules` are imported."""
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            f"print(','.join(str(w in sys.modules) for w in {watched!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return dict(zip(watched, (flag == "True" for flag in out.stdout.strip().split(","))))


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_ui_package_imports_gradio_anywhere_in_its_source():
    offenders = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
                 if {"gradio", "gradio_client"} & imported_names(p) and "ui" not in p.relative_to(PACKAGE).parts[:1]]
    assert offenders == []


def test_importing_every_library_module_loads_neither_gradio_nor_the_hub_client():
    modules = [m for m in LIBRARY if not m.startswith("gptlab.hub")]
    assert "gptlab.service" in modules and "gptlab.cli" in modules
    assert loaded_after_import(modules, ("gradio", "huggingface_hub")) == {"gradio": False, "huggingface_hub": False}


def test_optional_packages_arrive_only_with_the_feature_that_uses_them():
    assert loaded_after_import(LIBRARY, ("gguf", "llama_cpp")) == {"gguf": False, "llama_cpp": False}


def test_gradio_arrives_with_the_ui():
    assert loaded_after_import(["gptlab.ui"], ("gradio",)) == {"gradio": True}


def test_app_py_is_only_the_entry_point():
    source = (ROOT / "app.py").read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 30 and "gptlab.ui" in source and "gradio" not in imported_names(ROOT / "app.py")


def test_no_library_module_is_longer_than_about_400_lines():
    lengths = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in lengths.items() if n > 420} == {}


@pytest.mark.parametrize("command", [["app.py"], ["-m", "gptlab"]] + [
    ["-m", "gptlab", sub] for sub in ("train", "sample", "presets", "info", "runs", "sweep", "import", "export", "push")])
def test_help_of_every_command_prints_and_exits_0(command):
    out = subprocess.run([sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:") and "Traceback" not in out.stderr
