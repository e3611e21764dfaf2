"""The one error type the scaffolder raises for bad input.

The CLI turns a :class:`ScaffoldError` into a one-paragraph message and exit code 2, never a traceback:
every raise site must therefore say what was wrong *and* what to do instead.
"""

from __future__ import annotations

from vlmforge.core.errors import VLMForgeError

__all__ = ["EXIT_BAD_INPUT", "EXIT_VERIFY_FAILED", "ScaffoldError"]

EXIT_BAD_INPUT = 2
EXIT_VERIFY_FAILED = 1


class ScaffoldError(VLMForgeError):
    """Bad input or an environment problem the user can fix; the message is the whole explanation."""
