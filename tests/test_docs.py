"""The README against the code it describes (issue 22): every kvcpu-dev
option in its table, what the test set-up installs with its size and how
long the suite takes, and links that lead somewhere."""

from __future__ import annotations

import pathlib
import re

import click

from kvcpu_dev.daemon.cli import main as kvcpu_dev

REPO = pathlib.Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def test_every_kvcpu_dev_option_is_in_the_readme_table():
    table = [line for line in README.splitlines() if line.startswith("| `--")]
    options = [opt for p in kvcpu_dev.params if isinstance(p, click.Option) for opt in p.opts
               if opt.startswith("--") and opt not in ("--help", "--version")]
    assert {"--log-file", "--poll-us", "--cdi", "--cdi-dir"} <= set(options)
    missing = [opt for opt in options if not any(f"`{opt}" in line or f", `{opt}" in line for line in table)]
    assert not missing, f"kvcpu-dev options not in the README's table: {missing}"


def test_the_readme_says_what_the_test_setup_installs_and_how_long_the_suite_takes():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    packages = re.findall(r"\|\| missing\+=\(([\w.-]+)\)", setup.split("if ((test_setup)); then", 1)[1])
    assert {"user-mode-linux", "docker.io", "mmdebstrap", "podman"} <= set(packages)
    section = _section("The two commands")
    for what in [*packages, "promtool", "the eval extra"]:
        rows = [line for line in section.splitlines() if line.startswith("|") and what in line]
        assert rows and re.search(r"\| ~?[\d.]+ MB \|$", rows[0]), f"no size for {what} in the README"
    assert "enables and starts no service" in section
    assert re.search(r"The whole suite \(\d+ tests\) took \d+ minutes", section)


def test_readme_links_lead_to_files():
    for target in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#[\w-]+)?\)", README):
        assert (REPO / target).is_file(), target
