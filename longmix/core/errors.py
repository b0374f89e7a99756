"""User-facing errors: one clear line, exit code 2."""


class UserError(Exception):
    """A mistake the user can fix (bad path, bad recipe, bad input). The CLI prints it as one line."""

    exit_code = 2
