"""Architectures that `savl.models.io.load_model` can rebuild from a JSON config.

Each model module registers itself on import (`register_architecture(...)` at its end); importing them here
makes every savl architecture loadable by name.
"""

import savl.models.decoder  # noqa: F401
import savl.models.discriminator  # noqa: F401
import savl.models.encoder  # noqa: F401
import savl.models.savl  # noqa: F401
import savl.models.srnet  # noqa: F401
from savl.models.io import register_architecture

__all__ = ["register_architecture"]
