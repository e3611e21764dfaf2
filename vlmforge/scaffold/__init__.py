"""The scaffolder: research a VLM architecture offline and generate its vlmforge family module.

* :func:`vlmforge.scaffold.research.research` answers the seed guide's Phase-1 questions from a config
  (meta device + tiny model), each answer with evidence (a ``ResearchReport``, rendered as Markdown or
  as copier answers); the :mod:`vlmforge.scaffold.research` package has one module per question group;
* :mod:`vlmforge.scaffold.generate` renders the ``family`` copier template, validates and installs it;
* :mod:`vlmforge.scaffold.cli` is the ``scaffold-new-model`` command.

The submodules are not re-exported here on purpose: ``vlmforge.scaffold.research`` must stay the
package, not be shadowed by the function of the same name.
"""

from vlmforge.scaffold.errors import ScaffoldError

__all__ = ["ScaffoldError"]
