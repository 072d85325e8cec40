"""The package's layers: core maths -> data and models -> pipelines -> interfaces, never upwards."""

import ast
from pathlib import Path

import tripletface

LAYERS = {
    "distances": 1,
    "losses": 1,
    "mining": 1,
    "sampling": 1,
    "metrics": 1,
    "clustering": 1,
    "tracking": 1,
    "errors": 1,
    "confidence": 1,
    "tta": 1,
    "data": 2,
    "models": 2,
    "faces": 2,
    "gallery": 2,
    "search": 2,
    "distributed": 2,
    "cache": 2,
    "outputs": 2,
    "workers": 2,
    "train": 3,
    "finetune": 3,
    "evaluate": 3,
    "recognize": 3,
    "demo": 3,
    "plots": 3,
    "video": 3,
    "cli": 4,
    "service": 4,
}
ROOT = Path(tripletface.__file__).parent


def layer(module: str) -> int:
    """The layer of tripletface.X[.Y]; 0 for the package's own __init__ and __main__."""
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def test_every_module_has_a_layer():
    for path in ROOT.iterdir():
        if path.name.startswith("__") or path.name.endswith(".egg-info"):
            continue
        assert path.stem in LAYERS, f"{path.name} has no layer in tests/test_layers.py"


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in ROOT.rglob("*.py"):
        module = ".".join(("tripletface", *path.relative_to(ROOT).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            imported = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            if imported.startswith("tripletface.") and 0 < layer(module) < layer(imported):
                upward.append(f"{module} imports {imported}")
    assert upward == []
