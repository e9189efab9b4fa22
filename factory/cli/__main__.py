"""`python -m factory.cli`: the `duplex-factory` command."""

from factory.cli import app

app()
