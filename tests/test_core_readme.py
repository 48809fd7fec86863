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


# how an example is made to run on tiny data: long settings shortened, nothing else changed
SHORTER = {"--minutes": "0.2"}
APPENDED = {"train": ["--steps", "1"]}  # the preset's 13 000 steps, cut to one


def runnable(words: list[str]) -> bool:
    """Local `mcrave` examples (services have their own tests with real servers)."""
    return words[0] == "mcrave" and words[1] != "serve"


def test_readme_mcrave_examples_run_on_tiny_data(tmp_path, monkeypatch, capsys):
    """Every local `mcrave` example runs as written (in order, in a scratch folder holding the
    shipped models, a tiny in.wav, in_dir/ and data/heldout/), with only SHORTER/APPENDED."""
    import numpy as np
    import soundfile as sf

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").symlink_to(README.parent / "models")
    stereo = (np.random.default_rng(0).standard_normal((88200, 2)) * 0.1).astype(np.float32)
    for path, seconds in (("in.wav", 0.25), ("in_dir/a.wav", 0.25), ("data/heldout/a.wav", 2)):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / path, stereo[: int(seconds * 44100)], 44100)
    examples = [w for w in documented_commands() if runnable(w)]
    assert len(examples) >= 10
    for words in examples:
        args = [SHORTER.get(prev, w) for prev, w in zip(["", *words], words, strict=False)][1:]
        args += APPENDED.get(args[0], [])
        if "big.ckpt" in args:  # the README's "a large model" stand-in
            args[args.index("big.ckpt")] = "m.ckpt"
        code = mcrave_main(args)
        assert code == 0, f"{' '.join(words)}: {capsys.readouterr().err}"
