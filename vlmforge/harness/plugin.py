"""vlmforge pytest plugin (conformance harness)."""
