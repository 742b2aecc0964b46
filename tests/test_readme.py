"""Every code block of the README runs as written, except those marked with why a test cannot run them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(?:^(<!--[^\n]*-->)\n)?^```(python|bash)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str, str]]:
    """(marker line before the block or '', language, code) of every python / bash block."""
    return [(m.group(1) or "", m.group(2), m.group(3)) for m in BLOCK.finditer(README.read_text())]


def test_every_block_runs_or_says_why_not():
    found = blocks()
    fences = re.findall(r"^[ \t]*```[ \t]*[^\s`]", README.read_text(), re.M)  # opening fences, any language
    assert len(fences) == len(found), "a README block in another language or indented would go untested"
    assert sum("test-command" in m for m, _, _ in found) == 1
    skipped = [marker for marker, _, _ in found if marker.startswith("<!-- readme-test: skip:")]
    assert len(found) >= 10 and all(len(m) > len("<!-- readme-test: skip: -->") + 5 for m in skipped)
    assert len(skipped) <= 6  # a new block runs in the test unless it says why it cannot


RUNNABLE = [(i, lang, code) for i, (marker, lang, code) in enumerate(blocks())
            if not marker.startswith("<!-- readme-test: skip:") and "test-command" not in marker]


def run_block(lang: str, code: str, cwd) -> subprocess.CompletedProcess:
    """Run one python / bash block of a doc page in ``cwd`` (bash strict: any failing command fails it)."""
    cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("index, lang, code", RUNNABLE, ids=[f"block{i}-{lang}" for i, lang, _ in RUNNABLE])
def test_readme_block_runs_as_written(index, lang, code, tmp_path):
    r = run_block(lang, code, tmp_path)
    assert r.returncode == 0, f"README block {index} ({lang}) failed:\n{code}\n{r.stderr[-2000:]}"
