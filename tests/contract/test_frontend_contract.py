"""The gallery shares the contract's names with Python through one generated module.

`frontend/contract.js` is rendered from `tb_batch_images/contract/names.py` by
`tb_batch_images.contract.javascript`; these tests prove the committed file is what the
generator writes today, and that no other frontend module copies a constant by hand.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tb_batch_images.contract import javascript, names
from tb_batch_images.plugin import static

ROOT = Path(__file__).resolve().parents[2]
FRONTEND = ROOT / "frontend"
CONTRACT_JS = FRONTEND / javascript.FILENAME

# A JavaScript array literal of string literals only: ["a", 'b', ...].
_STRING = r"""(?:"[^"\\\n]*"|'[^'\\\n]*')"""
_STRING_ARRAY = re.compile(rf"\[\s*{_STRING}(?:\s*,\s*{_STRING})+\s*,?\s*\]")
_QUOTED = re.compile(_STRING)


def _exported() -> dict[str, object]:
    return {
        name: getattr(names, name)
        for _, constants in javascript.EXPORTS
        for name in constants
    }


def _other_modules() -> list[Path]:
    modules = sorted(path for path in FRONTEND.glob("*.js") if path != CONTRACT_JS)
    assert modules, f"no frontend modules found in {FRONTEND}"
    return modules


def test_committed_contract_js_is_what_the_generator_renders():
    assert CONTRACT_JS.is_file(), (
        f"{CONTRACT_JS} is missing: run `{javascript.COMMAND}`"
    )
    committed = CONTRACT_JS.read_text(encoding="utf-8")
    assert committed == javascript.render(), (
        f"frontend/contract.js is stale or edited by hand; regenerate it with "
        f"`{javascript.COMMAND}` and commit the result"
    )


def test_contract_js_exports_every_listed_constant_with_its_python_value():
    text = javascript.render()
    assert text.startswith(javascript.HEADER + "\n")
    for name, value in _exported().items():
        if isinstance(value, tuple):
            items = ", ".join(f'"{item}"' for item in value)
            expected = f"export const {name} = Object.freeze([{items}]);"
        else:
            expected = f'export const {name} = "{value}";'
        assert expected in text.splitlines(), name


def test_generator_writes_the_file_it_renders(tmp_path: Path):
    target = tmp_path / "contract.js"
    finished = subprocess.run(
        [sys.executable, "-m", "tb_batch_images.contract.javascript", str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    assert target.read_text(encoding="utf-8") == javascript.render()


@pytest.mark.parametrize("path", _other_modules(), ids=lambda path: path.name)
def test_no_frontend_module_copies_a_list_of_the_contract(path: Path):
    """An array literal made only of a contract list's members (FLAGS, MODES, a subset
    of TASKS...) is a copy: import the list, or its members, from contract.js."""
    lists = {
        name: set(value)
        for name, value in _exported().items()
        if isinstance(value, tuple) and all(isinstance(item, str) for item in value)
    }
    text = path.read_text(encoding="utf-8")
    for literal in _STRING_ARRAY.finditer(text):
        items = {item[1:-1] for item in _QUOTED.findall(literal.group())}
        for name, members in lists.items():
            assert not items <= members, (
                f"{path.name} copies {name} of the contract: {literal.group()}; "
                f"import it from ./{javascript.FILENAME}"
            )


@pytest.mark.parametrize("path", _other_modules(), ids=lambda path: path.name)
def test_no_frontend_module_copies_the_plugin_name_or_a_tag(path: Path):
    distinctive = {
        names.PLUGIN_NAME,
        names.BATCHES_TAG,
        names.STATUS_TAG,
        names.SAMPLE_STATS_TAG,
        names.WATCHLIST_TAG,
    }
    text = path.read_text(encoding="utf-8")
    copies = sorted(
        {item for item in _QUOTED.findall(text) if item[1:-1] in distinctive}
    )
    assert not copies, (
        f"{path.name} holds {', '.join(copies)}: import PLUGIN_NAME or the tag "
        f"from ./{javascript.FILENAME}"
    )


def test_frontend_modules_import_only_files_of_the_flat_served_folder():
    """The plugin serves frontend/ flat, by name (plugin/static.py): every relative
    import names a file there (index.js reaches the others under ./static/)."""
    imports = re.compile(r"""(?:from|import)\s*\(?\s*["'](\./[^"']+)["']""")
    for path in sorted(FRONTEND.glob("*.js")):
        for target in imports.findall(path.read_text(encoding="utf-8")):
            name = (
                target.removeprefix("./static/") if path.name == "index.js" else target
            )
            name = name.removeprefix("./")
            assert static.STATIC_NAME.fullmatch(name), f"{path.name} imports {target}"
            assert (FRONTEND / name).is_file(), (
                f"{path.name} imports {target}: no such file"
            )
