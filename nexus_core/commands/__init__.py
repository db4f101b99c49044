"""One module per ``nexus`` command group, imported lazily by :mod:`nexus_core.cli`."""
