"""The conformance suite, collected with ``pytest --pyargs vlmforge.harness.suite`` (or re-exported)."""
