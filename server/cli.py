"""The `podium` command line (click): the same conductor as the MCP tools, for people.

Every command that changes something talks to the home's conductor over MCP, starting one
(detached) when none runs. Pure reads (`list`, `status`, `logs`, `snapshots`) go through the
running conductor too; when none runs they read the store directly, read-only, and say so.
"""

from __future__ import annotations

import importlib

import click

from podium.server.cli_base import Context
from podium.server.logging_setup import configure_logging

# Each command's module, imported only when that command runs (or help lists them all): a
# command then costs no import it does not use (`podium status` skips the score importer,
# the dashboard and the spec tools). tests/test_cli.py checks that every command of these
# modules is listed here.
COMMANDS: dict[str, tuple[str, str]] = {
    "start": ("cli_conductor", "start"),
    "stop": ("cli_conductor", "stop"),
    "restart": ("cli_conductor", "restart"),
    "serve": ("cli_conductor", "serve"),
    "reload": ("cli_conductor", "reload"),
    "top": ("cli_conductor", "top"),
    "run": ("cli_jobs", "run"),
    "list": ("cli_jobs", "list_command"),
    "status": ("cli_jobs", "status"),
    "logs": ("cli_jobs", "logs"),
    "pause": ("cli_control", "pause"),
    "resume": ("cli_control", "resume"),
    "cancel": ("cli_control", "cancel"),
    "approve": ("cli_control", "approve"),
    "clear": ("cli_control", "clear"),
    "snapshots": ("cli_control", "snapshots"),
    "instruments": ("cli_control", "instruments"),
    "validate": ("cli_insight", "validate"),
    "estimate": ("cli_insight", "estimate"),
    "diagnose": ("cli_insight", "diagnose"),
    "import-score": ("cli_import", "import_score_command"),
    "dashboard": ("cli_dashboard", "dashboard"),
}
COMMAND_MODULES = sorted({module for module, _ in COMMANDS.values()})


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(f"podium.server.{module}"), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(
    cls=LazyGroup,
    invoke_without_command=True,
    context_settings={"show_default": True, "help_option_names": ["-h", "--help"]},
)
@click.option(
    "--home",
    envvar="PODIUM_HOME",
    show_envvar=True,
    help="Podium home (state directory).  [default: ~/.podium]",
    show_default=False,
)
@click.version_option(package_name="podium")
@click.pass_context
def main(ctx: click.Context, home: str | None) -> None:
    """Durable job orchestration for AI agents: one conductor per home runs the jobs; MCP
    sessions (`podium serve`) and these commands attach to it."""
    ctx.obj = Context(home)
    if ctx.invoked_subcommand not in ("start", "serve"):
        # Commands other than the engine's own log warnings only, to stderr.
        configure_logging(None, level="WARNING")
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(0)


if __name__ == "__main__":
    main()
