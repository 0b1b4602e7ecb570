"""Architectures that `savl.models.io.load_model` can rebuild from a JSON config."""

from savl.models.io import register_architecture

__all__ = ["register_architecture"]
