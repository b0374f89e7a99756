"""User-facing errors: one clear line, exit code 2."""


class UserError(Exception):
    """A mistake the user can fix (bad path, bad recipe, bad input). The CLI prints it as one line."""

    exit_code = 2


class BuildFailed(UserError):
    """A UserError raised while a flow ran, with the reports of the stages that had finished (what did finish
    explains what failed, e.g. ingest's quarantine counts)."""

    def __init__(self, error: UserError, reports: dict) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code
        self.reports = reports
