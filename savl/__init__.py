"""savl: a tested implementation of SAVL (Spatially Amortized Variational Learning, ICLR 2026)."""

__version__ = "0.1.0"

from savl.errors import SavlError  # noqa: E402


def __getattr__(name):
    # Lazy so that `import savl` stays cheap; `savl.imresize(...)` is the public spelling (docs/architecture.md).
    if name == "imresize":
        from savl.imresize import imresize

        return imresize
    raise AttributeError(f"module 'savl' has no attribute {name!r}")


__all__ = ["SavlError", "__version__", "imresize"]
