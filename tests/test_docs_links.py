"""Every relative link in README.md and docs/*.md resolves: the file exists and, for
`#anchor`, the page has a heading with that GitHub anchor."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def github_anchor(heading: str) -> str:
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
  text = heading.strip().lower().replace("`", "")
  return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: pathlib.Path) -> set:
  seen, out = {}, set()
  for match in re.finditer(r"^#{1,6}\s+(.*)$", FENCE.sub("", page.read_text()), re.M):
    slug = github_anchor(match.group(1))
    out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
    seen[slug] = seen.get(slug, 0) + 1
  return out


def test_github_anchor_rules():
  assert github_anchor("The BN transform (`bn_inception/batchnorm.py`)") == \
      "the-bn-transform-bn_inceptionbatchnormpy"
  assert github_anchor("2. Figures 2–3: fewer steps (Sec. 4.2.2) — partly") == \
      "2-figures-23-fewer-steps-sec-422--partly"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
  broken = []
  for target in LINK.findall(FENCE.sub("", page.read_text())):
    if re.match(r"[a-z]+:", target):
      continue  # http(s), mailto
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
      broken.append(f"{target}: no such file")
    elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
      broken.append(f"{target}: no heading with that anchor in {dest.name}")
  assert not broken, f"{page.name}: " + "; ".join(broken)
