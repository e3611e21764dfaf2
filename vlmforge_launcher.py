"""The ``scaffold-new-model`` console script, kept outside the ``vlmforge`` package on purpose.

Importing anything under ``vlmforge`` first runs ``vlmforge/__init__.py``, which imports torch and
transformers (seconds). A Ctrl-C during that import would escape as a raw ``KeyboardInterrupt``
traceback before :func:`vlmforge.scaffold.cli.main` could catch it; this module imports nothing heavy,
so it can turn that interrupt into the CLI's usual message and exit code.
"""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130  # the same code as vlmforge.scaffold.errors.EXIT_INTERRUPTED (not imported: heavy)


def scaffold_main() -> int:
    """Import the scaffolder and run it; an interrupt while importing exits 130 without a traceback."""
    try:
        from vlmforge.scaffold.cli import main
    except KeyboardInterrupt:
        print("scaffold-new-model: interrupted while starting; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    return main()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(scaffold_main())
