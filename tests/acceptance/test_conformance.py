"""The conformance suite on this repository's models: ``pytest tests/acceptance --model <alias> -v``.

Without ``--model`` it runs on the tiny model of every registered family (the CI matrix).
"""

from vlmforge.harness.suite.test_conformance import *  # noqa: F403 - re-export the suite's tests
from vlmforge.harness.suite.test_properties import *  # noqa: F403
