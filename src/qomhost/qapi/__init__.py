"""QAPI: option-string syntaxes, the JSON dialect, scalar kinds and help."""
