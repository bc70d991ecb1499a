"""bench/RESULTS.md's "Latest figures" table: every row points at a section of the file that exists (GitHub's
heading anchors) and whose heading carries the row's date, and says whether its target was met."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "RESULTS.md"


def anchors(text: str) -> dict[str, str]:
    """GitHub's heading anchors (lowercase, punctuation dropped, spaces to '-', repeats suffixed -1, -2...)."""
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    for m in re.finditer(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out[slug if n == 0 else f"{slug}-{n}"] = m.group(1)
    return out


def latest_rows(text: str) -> list[list[str]]:
    section = text.split("## Latest figures", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| figure")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]


def test_the_latest_figures_table_links_to_dated_sections() -> None:
    text = RESULTS.read_text()
    assert text.split("\n## ", 1)[1].startswith("Latest figures\n"), "the table is the first section"
    heads = anchors(text)
    rows = latest_rows(text)
    assert len(rows) >= 12
    for figure, value, target, met, source in rows:
        assert value and target and figure
        assert met in ("met", "NOT met", "—") or met.startswith("met ("), (figure, met)
        assert (met == "—") == target.startswith("—"), figure
        links = re.findall(r"\[([^\]]+)\]\(#([^)]+)\)", source)
        assert links, figure
        for label, anchor in links:
            assert anchor in heads, (figure, anchor)
            date = re.search(r"(\d{4}-\d{2}-\d{2})?\s*(\d{2}:\d{2})?", label)
            assert date is not None
            for part in date.groups():
                if part and not (figure.startswith("HPA") and ":" in part):  # the HPA runs are dated in its table
                    assert part.replace(":", "") in anchor or part in heads[anchor], (figure, label, heads[anchor])
