"""The ``bsns`` command line: composes the command groups in ``coordinator.commands``.

User errors (``BsnsError`` and its subclasses, e.g. a contract revert or an invalid spec) are
printed as one line and exit with status 1; nothing else is swallowed. Logging goes through
``node.daemon.logs``: project warnings as ``warning: ...`` lines, library output only with
``BSNS_LOG_LEVEL=debug`` (``bsns node run`` sets up the daemon's own logs over it).
"""

from __future__ import annotations

import importlib
import sys

import typer

from node.errors import BsnsError

COMMAND_MODULES = (
    "chain", "governance", "node", "daemon", "wait", "train", "bench", "adapter", "adapter_remote", "status", "demo",
    "fedpeat",
)

app = typer.Typer(
    name="bsns",
    help="Fine-tune a sharded language model across a network of nodes coordinated on chain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the bsns version."""
    from importlib.metadata import version as _v

    typer.echo(_v("bsns"))


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"coordinator.commands.{_name}")
    except ModuleNotFoundError as exc:  # a command group not built yet
        if exc.name != f"coordinator.commands.{_name}":
            raise
        continue
    _module.register(app)


def main() -> None:
    from node.daemon.logs import setup_cli_logging

    setup_cli_logging()
    try:
        app()
    except BsnsError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
