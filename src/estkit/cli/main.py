"""The ``estkit`` command: a thin dispatcher to one module per command group.

Groups are imported lazily so ``estkit client ...`` never pays for importing the server, and a
broken optional dependency of one group cannot break the others.
"""

from __future__ import annotations

import importlib

import click

from estkit import __version__

# command name -> (module, attribute); each module owns its group and nothing else.
_COMMANDS: dict[str, tuple[str, str]] = {
    "server": ("estkit.cli.server", "server"),
    "client": ("estkit.cli.client", "client"),
    "nmos": ("estkit.cli.nmos", "nmos"),
    "test-server": ("estkit.cli.conformance", "test_server"),
    "demo": ("estkit.cli.demo", "demo"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="estkit")
def cli() -> None:
    """estkit: EST (RFC 7030) client, server + CA, NMOS BCP-003-03 node and conformance suite."""


def main() -> None:
    cli(prog_name="estkit")


if __name__ == "__main__":
    main()
