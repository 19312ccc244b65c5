"""outcomes: audit a fractional-laser treatment protocol and track what patients get out of it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("outcomes")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
