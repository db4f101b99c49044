"""nexus-example: the Example Widgets provider and a template for plugin authors.

This module is what the ``nexus`` entry point loads, so it stays cheap to import (the simulator,
which imports the test harness, is loaded only by ``nexus simulate`` and tests).
"""

from nexus_example.connector import ExampleConnector

__version__ = "0.2.0"
__all__ = ["ExampleConnector", "__version__"]
