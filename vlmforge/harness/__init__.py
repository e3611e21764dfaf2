"""The conformance harness: checks that prove an adapter right, and what they need.

* ``checks`` — one function per check (raising ``CheckFailure`` with layer/head/position and the
  max-abs difference); ``measure`` — the three capability flags, measured; ``mutants`` — broken
  adapters the checks must catch; ``tiny`` — offline tiny random models with real processors;
* ``plugin`` — the pytest plugin (``--model``, ``--all-models``, ``--conformance-report``...);
  ``suite`` — the parameterized tests it runs (``pytest --pyargs vlmforge.harness.suite``).
"""
