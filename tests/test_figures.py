"""Figures point to recorded rows: every ``bench/results/...`` file named in the README, the
bench README, the package, the scripts or the tests exists, and a section quoted after it
(``bench/results/defaults.md, "Photo classes"``) is a heading of that file."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CITATION = re.compile(r"(?:bench/)?results/([\w.-]+\.(?:md|json))`?((?:,\s*\"[^\"]+\")*)")
SECTION = re.compile(r"\"([^\"]+)\"")


def citing_files() -> list[Path]:
    return [REPO / "README.md", REPO / "bench" / "README.md",
            *(p for folder in ("capforge", "bench", "tests") for p in (REPO / folder).rglob("*.py"))]


def citations() -> list[tuple[Path, str, list[str]]]:
    """(citing file, results file name, quoted sections) for every citation."""
    found = []
    for path in citing_files():
        text = re.sub(r"\s*\n\s*#?\s*", " ", path.read_text(encoding="utf-8"))  # join wrapped lines
        for match in CITATION.finditer(text):
            found.append((path, match.group(1), SECTION.findall(match.group(2))))
    return found


def test_every_cited_result_and_section_exists() -> None:
    cited = citations()
    assert len(cited) >= 10  # the README and the package cite them: a broken pattern finds none
    for path, name, sections in cited:
        if path == Path(__file__):
            continue
        target = REPO / "bench" / "results" / name
        assert target.is_file(), f"{path.relative_to(REPO)} cites bench/results/{name}, which does not exist"
        headings = [line.lstrip("#").strip() for line in target.read_text(encoding="utf-8").splitlines()
                    if line.startswith("#")]
        for section in sections:
            assert any(section in heading for heading in headings), (
                f"{path.relative_to(REPO)} cites \"{section}\" in bench/results/{name}, which has no such heading")


def test_a_missing_result_is_caught() -> None:
    """The pattern reads a citation the way the files write them, wrapped lines included."""
    text = 'figures (bench/results/nothing.md,\n    # "A section") and results/other.json'
    joined = re.sub(r"\s*\n\s*#?\s*", " ", text)
    assert [(m.group(1), SECTION.findall(m.group(2))) for m in CITATION.finditer(joined)] == [
        ("nothing.md", ["A section"]), ("other.json", [])]
