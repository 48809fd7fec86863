"""`mcrave` command-line entry point.

Each subcommand lives in its own module with a `main(argv) -> int` and is imported only when it
is invoked. Other packages add subcommands through the `mcrave.commands` entry-point group: each
entry names a module with `HELP` (one line) and `main(argv) -> int`. That is how the services
provide `mcrave serve` without the core importing them: the core never depends on gRPC.
"""

from __future__ import annotations

import importlib
import logging
import sys
from importlib.metadata import EntryPoint, entry_points

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "new": ("mcrave.cli.model_commands", "create an untrained model checkpoint"),
    "info": ("mcrave.cli.model_commands", "describe a model (checkpoint or registry entry)"),
    "export": ("mcrave.cli.model_commands", "export a TorchScript .ts that nn~ loads"),
    "publish": ("mcrave.cli.model_commands", "publish a checkpoint into a model registry"),
    "infer": ("mcrave.cli.infer", "infer all channels of a file from the present ones"),
    "synth": ("mcrave.cli.synth", "generate a synthetic multichannel corpus"),
    "prepare": ("mcrave.cli.prepare", "prepare audio files into a training dataset"),
    "train": ("mcrave.cli.train", "train a model"),
    "eval": ("mcrave.cli.evaluate", "evaluate missing-channel inference against baselines"),
}
# entry-point group of the subcommands other installed packages add (`serve`: services/cli.py)
GROUP = "mcrave.commands"


def extensions() -> dict[str, EntryPoint]:
    """Installed subcommands of `GROUP` (a built-in name cannot be taken over)."""
    return {ep.name: ep for ep in entry_points(group=GROUP) if ep.name not in COMMANDS}


def _usage(extra: dict[str, EntryPoint]) -> str:
    helps = {name: help_ for name, (_, help_) in COMMANDS.items()}
    helps |= {name: ep.load().HELP for name, ep in sorted(extra.items())}
    lines = ["usage: mcrave COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, help_ in helps.items()]
    lines += ["", "run `mcrave COMMAND --help` for a command's options"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = extensions()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(extra))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS and name not in extra:
        print(f"mcrave: unknown command {name!r}\n\n{_usage(extra)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format=f"mcrave {name}: %(levelname)s: %(message)s")
    try:
        module = (
            importlib.import_module(COMMANDS[name][0]) if name in COMMANDS else extra[name].load()
        )
        return int(module.main([name, *rest]) or 0)
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's code; outputs are written atomically
        print(f"mcrave {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
