"""The documentation: a README short enough to read, a docs site that builds with every link and anchor
resolved (`mkdocs build --strict`), and a recipe reference that is the schema's, not a stale copy."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli

DOCS = ROOT / "pipeline" / "docs"
CONFIG = ROOT / "pipeline" / "mkdocs.yml"


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    # not -q: mkdocs 1.6.1 drops warnings below its log level before --strict counts them, so a quiet
    # strict build passes with broken links
    mkdocs = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    return subprocess.run(mkdocs, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = build(CONFIG, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_the_readme_is_a_front_page_not_a_log():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    text = "\n".join(lines)
    for must in ("## Two commands", "## Quantize your own model", "pipeline init", "pipeline publish", "| format |"):
        assert must in text


def test_the_site_builds_strictly_and_a_broken_anchor_fails_it(site, tmp_path):
    assert (site / "reference" / "index.html").exists() and (site / "estimates" / "index.html").exists()
    # the same site with one link to an anchor no page has: --strict must refuse it
    copy = tmp_path / "pipeline"
    shutil.copytree(DOCS, copy / "docs")
    shutil.copy(CONFIG, copy / "mkdocs.yml")
    page = copy / "docs" / "cli.md"
    page.write_text(page.read_text() + "\nSee [nowhere](estimates.md#no-such-section).\n")
    proc = build(copy / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0 and "no-such-section" in proc.stderr


def test_every_readme_link_into_the_docs_lands_on_a_page_and_its_anchor(site):
    links = re.findall(r"\]\((pipeline/docs/[^)#]+)(?:#([^)]+))?\)", (ROOT / "README.md").read_text())
    assert len(links) >= 10
    for target, anchor in links:
        assert (ROOT / target).exists(), target
        if anchor:
            html = (site / Path(target).relative_to("pipeline/docs").with_suffix("") / "index.html").read_text()
            assert f'id="{anchor}"' in html, f"{target}#{anchor}"


def test_the_recipe_reference_is_generated_from_the_schema():
    proc = cli("schema", "--markdown")
    assert proc.returncode == 0, proc.stderr
    assert (DOCS / "reference.md").read_text() == proc.stdout, (
        "pipeline/docs/reference.md is stale: python -m pipeline schema --markdown > pipeline/docs/reference.md"
    )
