"""nexus-example: a synthetic-data provider and a template for plugin authors.

This module is what the ``nexus`` entry point loads, so it stays cheap to import.
"""

from nexus_example.connector import ExampleConnector

__version__ = "0.1.0"
__all__ = ["ExampleConnector", "__version__"]
