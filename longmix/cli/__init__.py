"""The command line (`longmix ...`): `app.py` mounts the commands of the modules beside it."""

from longmix.cli.app import app, main

__all__ = ["app", "main"]
