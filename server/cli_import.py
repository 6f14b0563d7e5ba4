"""`podium import-score`: a Marianne score as a Podium job spec. Runs here, without a
conductor: it only reads the score and writes the spec."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from podium.core.importer import import_score, to_yaml
from podium.core.importer.score import ScoreError, read_score
from podium.server.cli_base import EXIT_USAGE, Context, err, pass_ctx, run_async


@click.command(name="import-score")
@click.argument("score", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(dir_okay=False),
    help="where to write the spec (default: standard output)",
)
@pass_ctx
@run_async
async def import_score_command(ctx: Context, score: str, out: str | None) -> int:
    """Translate a Marianne SCORE into the closest Podium job spec; every field that did not
    carry over is listed on standard error with the reason (`dropped: PATH: why`), and how
    others changed (`note: ...`). The spec written validates (`podium validate OUT`)."""
    del ctx
    source = Path(score).expanduser()
    target = Path(out).expanduser() if out else None
    own_name = target.name if target else f"{source.stem}.podium.yaml"
    try:
        result = import_score(
            read_score(source),
            score_dir=source.parent.absolute(),
            self_names=(own_name, source.name),
        )
    except ScoreError as exc:
        # Printed as is: its paths are the score's fields (`sheet`), not CLI options.
        err.print(f"podium: {exc}", markup=False, soft_wrap=True)
        return EXIT_USAGE
    text = to_yaml(result.spec)
    if target is None:
        sys.stdout.write(text)
    else:
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            err.print(
                f"podium: --output: cannot write {target}: {exc.strerror or exc}",
                markup=False,
                soft_wrap=True,
            )
            return EXIT_USAGE
    where = str(target) if target else "standard output"
    err.print(
        f"import-score: {source} -> {where}: {len(result.dropped)} field(s) dropped",
        markup=False,
        soft_wrap=True,
    )
    for line in result.report():
        err.print(line, markup=False, soft_wrap=True)
    return 0
