"""Every code block of the README and of the pages it moved to ``docs/`` runs as written, except those
marked with why a test cannot run them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = (README, *(ROOT / "docs" / f"{name}.md" for name in ("sampler", "integrations", "training", "cluster")))
BLOCK = re.compile(r"(?:^(<!--[^\n]*-->)\n)?^```(python|bash)\n(.*?)^```", re.S | re.M)


def blocks(page: Path = README) -> list[tuple[str, str, str]]:
    """(marker line before the block or '', language, code) of every python / bash block of ``page``."""
    return [(m.group(1) or "", m.group(2), m.group(3)) for m in BLOCK.finditer(page.read_text())]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_block_runs_or_says_why_not(page):
    found = blocks(page)
    fences = re.findall(r"^[ \t]*```[ \t]*[^\s`]", page.read_text(), re.M)  # opening fences, any language
    assert len(fences) == len(found), "a block in another language or indented would go untested"
    assert sum("test-command" in m for m, _, _ in found) == (page == README)
    skipped = [marker for marker, _, _ in found if marker.startswith("<!-- readme-test: skip:")]
    assert found and all(len(m) > len("<!-- readme-test: skip: -->") + 5 for m in skipped)


def test_few_blocks_are_skipped():
    """A new block runs in the test unless it says why it cannot; the skipped ones install or train."""
    skipped = [m for page in PAGES for m, _, _ in blocks(page) if m.startswith("<!-- readme-test: skip:")]
    assert len(skipped) <= 8


RUNNABLE = [(page, i, lang, code) for page in PAGES for i, (marker, lang, code) in enumerate(blocks(page))
            if not marker.startswith("<!-- readme-test: skip:") and "test-command" not in marker]


def run_block(lang: str, code: str, cwd) -> subprocess.CompletedProcess:
    """Run one python / bash block of a doc page in ``cwd`` (bash strict: any failing command fails it)."""
    cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("page, index, lang, code", RUNNABLE,
                         ids=[f"{p.stem}-block{i}-{lang}" for p, i, lang, _ in RUNNABLE])
def test_readme_block_runs_as_written(page, index, lang, code, tmp_path):
    r = run_block(lang, code, tmp_path)
    assert r.returncode == 0, f"{page.name} block {index} ({lang}) failed:\n{code}\n{r.stderr[-2000:]}"
