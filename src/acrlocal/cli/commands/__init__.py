"""The command groups of ``acrlocal``, one module each, named as az names them."""
