"""Placeholder: patches that let vLLM's CPU build serve MiniMax-M2 (filled in by the server tier)."""
