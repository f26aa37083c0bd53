"""Errors that are the user's to fix: the CLI prints their message, without a traceback."""
from __future__ import annotations


class UserFacingError(Exception):
    """Base of errors whose message alone tells the user what is wrong and what to do."""


class MissingFilesError(UserFacingError, FileNotFoundError):
    """One or more required files (weights, data lists) are missing; the message lists each with
    what it is and where it comes from."""
