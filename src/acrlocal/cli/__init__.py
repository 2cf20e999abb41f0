"""The ``acrlocal`` command line, shaped like ``az``."""
