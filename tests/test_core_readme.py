"""The README's command examples stay true: every documented subcommand exists and takes every
flag the example passes (checked against its own --help, in-process)."""

import re
from pathlib import Path

import pytest
from mcrave_client.cli import main as client_main

from mcrave.cli.main import main as mcrave_main

README = Path(__file__).resolve().parents[1] / "README.md"
SERVICES = ("encoder", "decoder", "trainer")


def documented_commands() -> list[list[str]]:
    """Indented example lines of README.md that run `mcrave` or `mcrave-client`, comment cut."""
    lines = []
    for line in README.read_text().splitlines():
        words = line.split("#")[0].split()
        if line.startswith("    ") and words and words[0] in ("mcrave", "mcrave-client"):
            lines.append(words)
    return lines


def help_text(words: list[str], capsys) -> str:
    entry = mcrave_main if words[0] == "mcrave" else client_main
    command = words[1:2] + [w for w in words[2:3] if w in SERVICES]
    with pytest.raises(SystemExit) as stop:
        entry([*command, "--help"])
    assert stop.value.code == 0, words
    return capsys.readouterr().out


def test_readme_documents_commands():
    assert len(documented_commands()) >= 10


@pytest.mark.parametrize("words", documented_commands(), ids=" ".join)
def test_every_readme_example_uses_real_flags(words, capsys):
    text = help_text(words, capsys)
    for flag in (w for w in words if w.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), f"{flag} in {words}"
