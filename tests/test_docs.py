"""The documentation: the command-line reference agrees with the parser, the README stays
short and its links resolve, and the site builds with --strict and shows in Chromium."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from bwbpf.search.command_line.parser import build_parser
from bwbpf.search.command_line.reference import cli_reference

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reference" / "cli.md"
CHANGELOG_WORDS = re.compile(r"this round|the previous version|an earlier run|rewritten in",
                             re.IGNORECASE)


def test_the_command_line_page_is_what_the_parser_makes() -> None:
    assert PAGE.read_text(encoding="utf-8") == cli_reference(), \
        "docs/reference/cli.md is stale: run `make reference`"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_flag_of_every_subcommand_is_on_the_page() -> None:
    page = PAGE.read_text(encoding="utf-8")
    sections = re.split(r"^## ", page, flags=re.MULTILINE)
    for name, p in _subcommands().items():
        section = next(s for s in sections if s.startswith(f"bwbpf-search {name}\n"))
        for a in p._actions:
            if a.help == argparse.SUPPRESS or isinstance(a, argparse._HelpAction):
                continue
            for flag in a.option_strings:
                assert f"`{flag}`" in section, f"{name} {flag} missing from {PAGE.name}"


def test_the_readme_is_short_and_its_links_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), f"README links to a missing {target}"


def test_no_changelog_language_in_the_user_documentation() -> None:
    # the reference is the parser's help, where "an earlier run" is the user's run in --out
    pages = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if p != PAGE)]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if page.name == "results.md":  # its one "Earlier versions" section may tell history
            text = text.split("## Earlier versions")[0]
        found = CHANGELOG_WORDS.search(text)
        assert found is None, f"{page.relative_to(ROOT)}: {found.group(0)!r}"


# --- the built site, in a real browser ---------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site built with --strict into a temporary folder, served on 127.0.0.1."""
    out = tmp_path_factory.mktemp("site")
    mkdocs = Path(sys.executable).with_name("mkdocs")
    r = subprocess.run([str(mkdocs), "build", "--strict", "--quiet", "-d", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    server = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1",
                               "-d", str(out)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        port = int(re.findall(r"port (\d+)", server.stdout.readline())[0])
        url = f"http://127.0.0.1:{port}"
        end = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                if time.time() > end:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


PAGES = {  # path in the site -> text the page must show
    "": "What it found",
    "reference/cli/": "bwbpf-search run",
    "results/": "Does the default search beat random search?",
}


@pytest.mark.integration
@pytest.mark.parametrize("path", list(PAGES))
def test_the_site_shows_its_pages_in_chromium(site: str, browser, tmp_path: Path,
                                              path: str) -> None:
    browser.open(f"{site}/{path}")
    text = PAGES[path]
    browser.wait_for(f"document.body.innerText.includes({text!r})")
    assert browser.evaluate("document.querySelectorAll('nav a').length") > 5  # the site's nav
    shot = tmp_path / f"{path.strip('/').replace('/', '-') or 'home'}.png"
    browser.screenshot(shot)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    if keep := os.environ.get("BWBPF_SCREENSHOTS"):  # to look at them: a folder to copy into
        shutil.copy(shot, Path(keep) / shot.name)
    assert [e for e in browser.errors() if "favicon" not in e] == []


def test_every_repository_file_the_results_cite_exists() -> None:
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"`((?:benchmarks|docs|search|spaces|trainers|reports|tests)/"
                           r"[\w./-]+\.\w+)`", text))
    assert cited  # the page does cite its scripts and data
    assert sorted(p for p in cited if not (ROOT / p).exists()) == []
