"""Errors the user can act on.

Every failure caused by the user's input (a missing directory, a corrupt weights file, a config
the weights disagree with, an empty data file) is raised as a :class:`JetmambaError` whose message
is one line that says what is wrong and, where possible, what to do. The command line prints it
without a traceback and exits non-zero; anything else escaping is a bug in jetmamba.
"""


class JetmambaError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    exit_code = 1


class UsageError(JetmambaError):
    """Arguments that cannot work together (exit status 2, as argparse's own errors)."""

    exit_code = 2


class CheckpointError(JetmambaError):
    """A checkpoint directory that cannot be read as a supported Mamba model."""


class DataError(JetmambaError):
    """Text data that cannot be used for calibration or evaluation."""


class UnsupportedError(JetmambaError):
    """A valid model option that jetmamba does not implement (yet)."""
