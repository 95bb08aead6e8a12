"""Runs written in other libraries' formats, and read back from them (Hugging Face transformers)."""
