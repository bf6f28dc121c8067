"""The interp version (also the package version in ``pyproject.toml``)."""

__version__ = "0.2.0"
