"""Keep research from reaching the network or the user's terminal: ``offline()`` and ``quiet()``."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

import transformers

__all__ = ["offline", "quiet"]


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Force transformers / huggingface_hub offline for the block (belt and braces with local_files_only)."""
    saved = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def quiet() -> contextlib.AbstractContextManager[Any]:
    """Silence transformers' and Python's warnings while probing (they are not the user's problem)."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    stack.callback(transformers.logging.set_verbosity, verbosity)
    return stack
