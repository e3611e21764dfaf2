"""The one error type the scaffolder raises for bad input.

The CLI turns a :class:`ScaffoldError` into a one-paragraph message and exit code 2, never a traceback:
every raise site must therefore say what was wrong *and* what to do instead.
"""

from __future__ import annotations

from vlmforge.core.errors import VLMForgeError

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_VERIFY_FAILED",
    "GenerationError",
    "InstalledThenInterrupted",
    "ScaffoldError",
]

EXIT_BAD_INPUT = 2
EXIT_VERIFY_FAILED = 1
EXIT_INTERRUPTED = 130


class ScaffoldError(VLMForgeError):
    """Bad input or an environment problem the user can fix; the message is the whole explanation."""


class GenerationError(ScaffoldError):
    """The template rendered something that does not parse, import or register; nothing was written."""


class InstalledThenInterrupted(KeyboardInterrupt):
    """Ctrl-C arrived after the install committed: the family *is* installed (``written``)."""

    def __init__(self, written: list) -> None:
        super().__init__(written)
        self.written = written
