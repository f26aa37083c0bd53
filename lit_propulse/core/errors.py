"""Errors that are the user's to fix: the CLI prints their message as one ``error:`` line, without a
traceback. One family, :class:`UserFacingError`; the subclasses say what kind of thing is wrong."""

from __future__ import annotations

from collections.abc import Sequence


class UserFacingError(Exception):
    """Base of errors whose message alone tells the user what is wrong and what to do."""


class MissingFilesError(UserFacingError, FileNotFoundError):
    """One or more required files (weights, data lists) are missing; the message lists each with
    what it is and where it comes from."""


class WeightsFileError(UserFacingError, ValueError):
    """A weights file that exists but cannot be used (unreadable, not a state dict, other keys or
    shapes, a class it may not build); the message names the file and what was expected."""


class CheckpointError(WeightsFileError):
    """A StyleGAN2 checkpoint that cannot be used: missing, unreadable, foreign, or mismatched. The
    message names the file and what was expected."""


class BadImageError(UserFacingError, RuntimeError):
    """One or more image files cannot be read; ``bad`` lists every one with its reason."""

    def __init__(self, message: str, bad: Sequence = ()) -> None:
        super().__init__(message)
        self.bad = list(bad)


class DivergedError(UserFacingError, FloatingPointError):
    """Training produced a non-finite loss or weight: the message names the step, the term or the
    tensors, and says what was kept (the last good checkpoint) and what was not written."""
