"""esm: a self-hosted AWS Lambda event source mapping."""

__version__ = "0.1.0"
