"""The QMP protocol core and its server side."""
