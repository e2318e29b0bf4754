"""Library code logs through transformers' logging (so its verbosity controls apply); only entry points print."""

from __future__ import annotations

import ast
import logging
import os
from contextlib import contextmanager

import pytest
from transformers.utils import logging as transformers_logging

from possam.log import get_logger


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY_FOLDERS = ("modeling_possam", "configuration", "processing", "training")


@contextmanager
def captured_logs():
    """Messages that reach transformers' library logger (which does not propagate to the root logger)."""
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    library_logger = logging.getLogger("transformers")
    library_logger.addHandler(handler)
    try:
        yield messages
    finally:
        library_logger.removeHandler(handler)


def print_calls_outside_entry_points(path: str) -> list[int]:
    """Lines of `print(...)` calls that are not inside a command-line entry point (a module-level `main` function or a
    `*_cli.py` / `cli.py` / `__main__.py` module)."""
    if os.path.basename(path) in ("cli.py", "__main__.py") or path.endswith("_cli.py"):
        return []
    tree = ast.parse(open(path, encoding="utf-8").read())
    allowed = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            allowed.update(id(child) for child in ast.walk(node))
    return [
        node.lineno for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print" and id(node) not in allowed
    ]


def test_library_code_does_not_print():
    offenders = {}
    for folder in LIBRARY_FOLDERS:
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    if lines := print_calls_outside_entry_points(path):
                        offenders[os.path.relpath(path, ROOT)] = lines
    assert offenders == {}


def test_the_checker_finds_a_print_in_library_code(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("def helper():\n    print('x')\n\ndef main():\n    print('ok')\n")
    assert print_calls_outside_entry_points(str(module)) == [2]


@pytest.mark.parametrize("verbosity, shown", [("error", []), ("warning", ["a warning"]), ("info", ["some info", "a warning"])])
def test_transformers_verbosity_controls_possam_logs(verbosity, shown):
    logger = get_logger("possam.training.example")
    previous = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity(getattr(transformers_logging, verbosity.upper()))
    try:
        with captured_logs() as messages:
            logger.info("some info")
            logger.warning("a warning")
    finally:
        transformers_logging.set_verbosity(previous)
    assert messages == shown
