"""Errors that are the user's to fix: a path, a name or a value they gave.

Library code raises a :class:`UserError` (or a subclass: ``ConfigError``, ``ManifestError``, ``StoreError``,
``ClusterError`` ...) with a message that names the input and says what to do; the command line prints that
one line and exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user gave; the message names the input and the fix, on one line."""
