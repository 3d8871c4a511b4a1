"""The package's layering holds, and the checks that hold it can fail.

- `lint-imports` (the contracts of `.importlinter`) passes on the package, and fails
  on a copy of it where the plugin imports the capture side, or the reader Keras;
- no module reads another object's private attributes (`obj._name`,
  `getattr(obj, "_name")`) outside the one door to Keras's internals
  (`tb_batch_images/capture/keras_internals.py`), and the scan finds a planted one.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "tb_batch_images"
DOOR = Path("capture") / "keras_internals.py"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: pip install -e '.[dev]'")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(
        PACKAGE,
        tmp_path / "tb_batch_images",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_the_import_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        (
            "plugin/store.py",
            "from tb_batch_images.capture import specs  # noqa",
            "Reader side",
        ),
        ("reader/batches.py", "import keras  # noqa", "Reader side"),
        ("contract/names.py", "import tensorflow  # noqa", "The contract imports"),
        (
            "capture/specs.py",
            "from tb_batch_images.host import record  # noqa",
            "Writer side",
        ),
    ],
)
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, bad_import, contract):
    copy = _copy_of_the_package(tmp_path)
    path = copy / "tb_batch_images" / module
    path.write_text(path.read_text() + f"\n{bad_import}\n")
    result = _lint_imports(copy)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if "BROKEN" in line]
    assert any(contract in line for line in broken), result.stdout


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_reaches(source: str) -> list[tuple[int, str]]:
    """(line, code) of every access to another object's private attribute."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            found.append((node.lineno, ast.unparse(node)))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            target = node.args[0]
            if isinstance(target, ast.Name) and target.id in ("self", "cls"):
                continue
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_module_reads_another_objects_private_state():
    reaches = {
        str(path.relative_to(PACKAGE)): private_reaches(path.read_text())
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE) != DOOR
    }
    assert {path: found for path, found in reaches.items() if found} == {}


def test_the_private_state_scan_finds_a_planted_reach():
    planted = (
        "def f(logger, model):\n"
        "    self_like = logger._writer\n"
        "    return getattr(model, '_metrics', None), self_like\n"
    )
    assert [line for line, _ in private_reaches(planted)] == [2, 3]


def test_only_the_door_imports_keras_internals():
    importers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            if any(
                name == "keras.src" or name.startswith("keras.src.") for name in names
            ):
                importers.append(str(path.relative_to(PACKAGE)))
    assert set(importers) <= {str(DOOR)}
