"""Kept for the SQS source, which still imports the translator from here: use esm.aws.errors."""

from esm.aws.errors import translate_error

__all__ = ["translate_error"]
