"""Federation gateway of a regional medical consortium."""
__version__ = "0.1.0"
__all__ = ["__version__"]
