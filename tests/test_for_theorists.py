"""docs/for_theorists.md's worked examples print what the page says they print.

Every bash and python block runs, in page order, in one directory (later blocks read the files
earlier ones write); its stdout must equal the plain ``` blocks that follow it, joined.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_readme import run_block

PAGE = Path(__file__).resolve().parent.parent / "docs" / "for_theorists.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def examples() -> list[tuple[str, str, str]]:
    """(language, code, expected stdout) of every bash / python block of the page, in page order."""
    out: list[list[str]] = []
    for lang, body in FENCE.findall(PAGE.read_text()):
        if lang in ("bash", "python"):
            out.append([lang, body, ""])
        elif lang == "" and out:
            out[-1][2] += body
        else:
            raise AssertionError(f"a ```{lang} block would go unchecked")
    return [tuple(e) for e in out]


def test_every_example_shows_its_output():
    ex = examples()
    assert len(ex) >= 10 and all(want for _, _, want in ex), "every code block is followed by what it prints"


@pytest.mark.slow
def test_every_example_prints_what_the_page_says(tmp_path):
    for lang, code, want in examples():
        r = run_block(lang, code, tmp_path)
        assert r.returncode == 0, f"{code}\n{r.stderr[-2000:]}"
        assert r.stdout.rstrip("\n") == want.rstrip("\n"), f"{code}\n--- page\n{want}\n--- printed\n{r.stdout}"
