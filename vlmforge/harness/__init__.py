"""The conformance harness: checks that prove an adapter right, and what they need.

* ``checks`` — the check registry (``checks.registry``: one ``Check`` record per check, what it
  requires and when it does not apply) and one module per part of the contract; a failing check
  raises ``CheckFailure`` with layer/head/position and the max-abs difference (``compare``);
* ``measure`` — the three capability flags, measured; ``probes`` — the inputs checks feed;
  ``mutants`` — broken adapters the checks must catch; ``tolerances`` — per-dtype tolerances;
* ``plugin`` — the pytest plugin (``--model``, ``--all-models``, ``--conformance-report``...);
  ``suite`` — the tests it parametrizes over models and checks (``pytest --pyargs vlmforge.harness.suite``).
"""
