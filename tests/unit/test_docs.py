"""The documentation: README.md stays short, every relative link in it and in docs/ leads somewhere, and the
README's two command blocks are the ones CI runs (.ci/run takes them from the README with an awk rule)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 260

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`[^`]*`")


def prose(path: Path) -> list[str]:
    """The file's lines outside code fences, with inline code removed."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(CODE_SPAN.sub("", line))
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in ``path`` (a repeated heading gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """The relative link targets of ``path``'s prose (web addresses left out)."""
    targets = [m.group(1) for line in prose(path) for m in LINK.finditer(line)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert not broken, broken


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(README)}
    assert not [p.name for p in PAGES[1:] if p.resolve() not in linked]


def test_the_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_the_slug_rule_matches_githubs():
    assert slug("Scale: 10,000 to 300,000 records (`bench/scale.py`)") == "scale-10000-to-300000-records-benchscalepy"
    assert slug('Search by words, dates and "no good match"') == "search-by-words-dates-and-no-good-match"
    assert slug("Gradio endpoints: `/search_by_image`, `/search_by_text`") == \
        "gradio-endpoints-search_by_image-search_by_text"


def ci_block_rule() -> str:
    """The shell function .ci/run extracts a block with."""
    rule = [line for line in CI.read_text(encoding="utf-8").splitlines() if line.startswith("block()")]
    assert len(rule) == 1, ".ci/run no longer defines block()"
    return rule[0]


def readme_block(marker: str) -> str:
    """The block after ``marker`` as this test reads it: the fence's lines after the marker line."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines.count(marker) == 1, f"README.md must hold the line {marker!r} exactly once"
    start = lines.index(marker) + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
    return "\n".join(lines[start:end])


def test_ci_runs_the_readme_blocks():
    ci = CI.read_text(encoding="utf-8")
    assert "# ci:$1" in ci and "block setup" in ci and "block test" in ci and "README.md" in ci
    setup, tests = readme_block("# ci:setup"), readme_block("# ci:test")
    assert setup.endswith(" && python app.py") and "pip install -r requirements.txt" in setup
    assert "python -m pytest" in tests and "ruff check ." in tests and "mypy" in tests
    if shutil.which("awk") is None:
        pytest.skip("awk is not installed")
    for name, expected in (("setup", setup), ("test", tests)):
        got = subprocess.run(["bash", "-c", f"{ci_block_rule()}\nblock {name}"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
        assert got.rstrip("\n") == expected, name


def test_every_setting_is_documented():
    from search.config import Settings

    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    names = [str(field.validation_alias) for field in Settings.model_fields.values()]
    assert names and not [n for n in names if f"`{n}`" not in page]
