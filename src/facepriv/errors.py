"""User-facing errors.

Every problem caused by the user's input (a file, a parameter, a config) raises a subclass of
:class:`FacePrivError` whose message names the file or parameter and the problem. The CLI turns
these into a one-line message and exit code 2, never a traceback.
"""

from __future__ import annotations


class FacePrivError(Exception):
    """Base class of errors that are the user's to fix (bad input, bad parameter)."""


class InputFileError(FacePrivError, ValueError):
    """A file is missing, unreadable or does not hold what it should."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ParameterError(FacePrivError, ValueError):
    """A parameter or config value is invalid.

    ``param`` names the component parameter at fault (when there is one), so the CLI can say
    which flag and a config which entry it came from.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


class PluginError(FacePrivError, ImportError):
    """A plugin (entry point or ``module:Name`` reference) cannot be loaded or breaks its protocol."""


class OutputExistsError(FacePrivError, FileExistsError):
    """An output already exists and overwriting was not requested."""

    def __init__(self, path: object) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: already exists; pass --overwrite to replace it")


class MissingArtifactError(FacePrivError, RuntimeError):
    """A model file or package needed for a component is not installed or cannot be fetched."""
