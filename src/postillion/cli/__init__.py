"""The postillion command: the composition root, the only code that wires modules together."""
