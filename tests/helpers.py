"""Small helpers shared by several test files (pytest puts tests/ on sys.path)."""

from llama_nb.hf import randomise  # the book's own checker (Chapter 5.2), so notebooks and tests cannot drift

__all__ = ["randomise"]
