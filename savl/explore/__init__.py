"""Explorers for the book's chapters: controls, a pure compute function and a draw function per view, wired to
ipywidgets in JupyterLab (:func:`interactive`) and drawn as a static grid for the rendered book
(:func:`static_twin`). See :mod:`savl.explore.widgets` for the pattern; one module per chapter topic:
:mod:`~savl.explore.bounds` (chapter 2), :mod:`~savl.explore.attention` (chapter 5) and
:mod:`~savl.explore.representation` (chapters 4 and 8).
"""

from savl.explore.widgets import MAX_WIDTH, Choice, Explorer, ExplorerWidget, Slider, Text, interactive, static_twin

__all__ = ["MAX_WIDTH", "Choice", "Explorer", "ExplorerWidget", "Slider", "Text", "interactive", "static_twin"]
