"""Errors vlmforge raises on bad input: each one says what was wrong and what to do."""

from __future__ import annotations


class VLMForgeError(Exception):
    """Base class of vlmforge's own errors."""


class UnknownModelError(VLMForgeError, KeyError, ValueError):
    """A model name that is neither a supported id, an alias, a tiny model nor a local checkpoint.

    A ``ValueError`` as VLM Spectra raises for an unknown id (and a ``KeyError``, as before).
    """

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnsupportedArchitectureError(VLMForgeError):
    """A checkpoint whose architecture has no registered family."""


class UnsupportedReleaseError(UnsupportedArchitectureError):
    """A registered family that the installed transformers release cannot run (a defect of that release,
    see :data:`vlmforge.core.versions.BROKEN_FORWARDS`); the message names the releases that work.

    ``reason`` is the short form the harness reports a skipped cell with ("not applicable on transformers
    5.24: ...").
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class CheckpointLoadError(VLMForgeError, OSError):
    """A supported checkpoint whose files cannot be found or read (offline, not cached, bad path)."""


class AdapterDiscoveryError(VLMForgeError, ImportError):
    """An adapter module failed to import (a real bug, never swallowed)."""


class ContractError(VLMForgeError, AttributeError):
    """An adapter cannot resolve part of the contract (a module path or config value is wrong)."""


class InvalidHookError(VLMForgeError, ValueError):
    """A hook name that does not exist."""


class InputError(VLMForgeError, ValueError):
    """Bad prompt / image / batch input."""


class DeviceError(VLMForgeError, ValueError):
    """A device that is not a valid torch device or is not available on this machine."""
