"""The `openvlt` command line.

    openvlt run RECIPE.yaml [key.sub=value ...]     run (or resume) the SFT+GRPO loop
    openvlt data toyworld --n N --seed S --out DIR  write toy-world problem records
    openvlt model tiny --out DIR                    build the tiny offline student
    openvlt rewards score|list ...                  score responses with a reward plugin

Each subcommand's module is imported only when it is used, so `openvlt --help` stays fast and
a command never pulls in a heavy stack it does not need.
"""
from __future__ import annotations

import argparse
import logging
import sys


def _rewards(argv: list[str]) -> int:
    from rewards.cli import main as rewards_main

    return rewards_main(argv)


COMMANDS = {
    "rewards": ("score responses with a reward plugin; list plugins", _rewards),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "openvlt COMMAND [ARGS]\n\ncommands:\n" + "\n".join(
        f"  {name:<10} {help_}" for name, (help_, _) in COMMANDS.items()
    )
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    if argv[0] not in COMMANDS:
        print(f"openvlt: unknown command {argv[0]!r}\n\n{usage}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return COMMANDS[argv[0]][1](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
