"""SASL server side: sans-IO mechanisms, the AUTH exchange, and the password verifiers.

Owns: nothing itself; import from the submodules (``sasl.exchange``, ``sasl.verifiers`` ...).
Must not import: anything at import time (importing this package has no side effects).
Follows: RFC 4422 (SASL), RFC 4954 (SMTP AUTH), Postfix SASL_README.
"""
