"""The runtime's shape, held as the team agreed it (issue 14): what callbacks and the module
need from the Trainer is public API, and no module grows into a god object again.
(Import cycles and the controller's I/O ban are import-linter contracts: `make lint`.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lightjob"
RUNTIME = PACKAGE / "runtime"
TRAINER = RUNTIME / "trainer.py"


def private_trainer_uses(source: str) -> list[str]:
    """`trainer._x`, `self.trainer._x`, `self._trainer._x`: a private member read through
    something named trainer."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__"):
            continue
        owner = node.value
        name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
        if name in ("trainer", "_trainer"):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_detector_sees_the_private_reaches_there_were() -> None:
    source = (
        "def f(trainer, self):\n"
        "    trainer._has_validation\n"
        "    self._trainer._log('x', 1)\n"
        "    self.trainer._pl_optimizer(opt)\n"
        "    trainer.global_step, self._trainer.current_epoch, trainer.__class__\n"
    )
    assert len(private_trainer_uses(source)) == 3


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if p != TRAINER),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_no_module_outside_the_trainer_touches_its_private_members(path: Path) -> None:
    assert private_trainer_uses(path.read_text()) == []


def test_no_runtime_module_is_a_god_object() -> None:
    sizes = {
        str(p.relative_to(RUNTIME)): len(p.read_text().splitlines()) for p in RUNTIME.rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > 700} == {}
    assert sizes["trainer.py"] <= 600


def test_fit_fits_on_one_screen() -> None:
    tree = ast.parse(TRAINER.read_text())
    trainer = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    fit = next(n for n in trainer.body if isinstance(n, ast.FunctionDef) and n.name == "fit")
    assert fit.end_lineno is not None
    assert fit.end_lineno - fit.lineno + 1 <= 40
