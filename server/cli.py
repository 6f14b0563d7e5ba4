"""The `podium` command line (click): the same conductor as the MCP tools, for people.

Every command that changes something talks to the home's conductor over MCP, starting one
(detached) when none runs. Pure reads (`list`, `status`, `logs`, `snapshots`) go through the
running conductor too; when none runs they read the store directly, read-only, and say so.
"""

from __future__ import annotations

import click

from podium.server import cli_conductor, cli_dashboard, cli_import, cli_insight, cli_jobs
from podium.server.cli_base import Context
from podium.server.logging_setup import configure_logging


@click.group(
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


for _module in (cli_conductor, cli_jobs, cli_insight, cli_import, cli_dashboard):
    for _command in list(vars(_module).values()):
        if isinstance(_command, click.Command):
            main.add_command(_command)


if __name__ == "__main__":
    main()
