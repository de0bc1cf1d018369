"""Real English sentences, offline: the docstrings of standard-library modules (and any texts given).

Used by notebook 06 and bench/sweep.py to sweep MiniLM over a few hundred sentences without a download.
"""

from __future__ import annotations

import importlib
import re

MODULES = ("argparse", "json", "pathlib", "collections", "functools", "itertools", "logging", "unittest",
           "subprocess", "threading", "typing", "dataclasses", "contextlib", "textwrap", "zipfile", "csv",
           "sqlite3", "decimal", "fractions", "statistics", "random", "datetime", "calendar", "shutil",
           "tempfile", "pickle")


def prose_sentences(texts: tuple[str, ...] = (), modules: tuple[str, ...] = MODULES) -> list[str]:
    """Sentences of 6 to 40 words that read as prose (no code, no markup), each once, in order found."""
    texts = list(texts)
    for name in modules:
        module = importlib.import_module(name)
        docs = [module.__doc__] + [getattr(v, "__doc__", None) for k, v in vars(module).items()
                                   if not k.startswith("_") and callable(v)]
        texts += [d for d in docs if isinstance(d, str)]
    found = []
    for text in texts:
        for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
            if 6 <= len(s.split()) <= 40 and s[0].isupper() and s.endswith(".") and not re.search(r"[`<>{}|=#*\[\]]|\.\.\.", s):
                found.append(s)
    return list(dict.fromkeys(found))
