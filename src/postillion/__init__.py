"""postillion: a Postfix-compatible mail submission and transfer agent.

Importing this package has no side effects; the version is the only public name here.
"""

__version__ = "0.1.0"
