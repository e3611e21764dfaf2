"""One module per VLM family: a ``FamilySpec`` and a registration, nothing else.

Every module in this package is imported by ``ModelRegistry.discover()``; a module that fails to
import is reported by name (``AdapterDiscoveryError``), never skipped. ``scaffold-new-model`` writes
new modules here.
"""
