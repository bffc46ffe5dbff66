"""Splitting Postfix list values: commas and whitespace separate, ``{ ... }`` groups stay whole.

Owns: the one tokenizer main.cf lists and lookup-table specs share (``split_words``).
Must not import: anything (it sits beside ``errors`` at the bottom of the layers).
Follows: Postfix util/mystrtok.c ``mystrtokq()`` with the separators ", \\t\\r\\n"; an
unbalanced ``}`` is an ordinary character, as there.
"""

from __future__ import annotations

SEPARATORS = ", \t\r\n"


def split_words(text: str) -> list[str]:
    """``"a, {b c}  d"`` -> ``["a", "{b c}", "d"]``."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in SEPARATORS:
            i += 1
        if i >= n:
            break
        start, depth = i, 0
        while i < n:
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}" and depth > 0:
                depth -= 1
            elif depth == 0 and c in SEPARATORS:
                break
            i += 1
        words.append(text[start:i])
    return words
