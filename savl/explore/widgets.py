"""The explorer pattern of the book: one view function, two front ends.

An :class:`Explorer` is a set of named controls (sliders, choices, a text box) and two pure functions:
``compute(**values) -> result`` (numbers and images, testable headless) and ``draw(result, axes)`` (draws the
result into ``panels`` matplotlib axes). :func:`interactive` wires the controls to ipywidgets for JupyterLab;
:func:`static_twin` draws a small grid, one row per chosen setting, with the same two functions, for the
rendered book where no kernel runs.

The rule the chapters follow: the interactive front end draws nothing until a control moves. A headless run
(papermill, the book build) therefore never waits on an Output widget; the static twin, drawn next to it,
shows the starting views.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from savl.errors import ConfigError, SavlError

#: Widest figure an explorer draws, in inches: the book's main column at the chapters' usual scale.
MAX_WIDTH = 8.4


@dataclass(frozen=True)
class Slider:
    """A number between ``low`` and ``high`` (``integer`` for whole numbers, ``log`` for a log-spaced slider)."""

    low: float
    high: float
    default: float
    step: float | None = None
    integer: bool = False
    log: bool = False
    label: str | None = None

    def __post_init__(self):
        if not self.low <= self.default <= self.high:
            raise ConfigError(f"slider default {self.default} lies outside [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ConfigError(f"a log slider needs a positive lower end, got {self.low}")

    def check(self, name: str, value) -> float | int:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if not (self.low <= number <= self.high) or math.isnan(number):
            raise ConfigError(f"{name} = {value!r} lies outside [{self.low:g}, {self.high:g}]")
        if self.integer:
            if number != int(number):
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
            return int(number)
        return number


@dataclass(frozen=True)
class Choice:
    """One of ``options`` (strings)."""

    options: tuple[str, ...]
    default: str
    label: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "options", tuple(self.options))
        if self.default not in self.options:
            raise ConfigError(f"choice default {self.default!r} is not one of {list(self.options)}")

    def check(self, name: str, value) -> str:
        if value not in self.options:
            raise ConfigError(f"{name} = {value!r} is not one of {', '.join(map(str, self.options))}")
        return value


@dataclass(frozen=True)
class Text:
    """Free text (a file path); the empty string means "not given"."""

    default: str = ""
    label: str | None = None
    placeholder: str = ""

    def check(self, name: str, value) -> str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value.strip()


Control = Slider | Choice | Text


@dataclass
class Explorer:
    """Named controls and the two functions of one view; see the module docstring.

    ``compute(**values)`` receives every control by name; ``draw(result, axes)`` gets ``panels`` axes of one row.
    ``panel_size`` is (width, height) of one panel in inches; a row wider than :data:`MAX_WIDTH` is scaled down.
    ``caption(values)`` (optional) names a row of the static twin; by default the values themselves.
    """

    title: str
    controls: dict[str, Control]
    compute: Callable[..., Any]
    draw: Callable[[Any, Sequence], None]
    panels: int
    panel_size: tuple[float, float] = (2.6, 2.6)
    caption: Callable[[dict], str] | None = None
    extra: dict = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        """The starting value of every control."""
        return {name: c.default for name, c in self.controls.items()}

    def values(self, **changes) -> dict[str, Any]:
        """The defaults with ``changes`` applied, each checked against its control (one-line ConfigError)."""
        unknown = sorted(set(changes) - set(self.controls))
        if unknown:
            known = ", ".join(self.controls)
            raise ConfigError(f"{self.title}: unknown control(s) {', '.join(unknown)}; known: {known}")
        merged = {**self.defaults(), **changes}
        return {name: self.controls[name].check(name, v) for name, v in merged.items()}

    def figure_size(self, rows: int = 1) -> tuple[float, float]:
        w, h = self.panel_size
        shrink = min(1.0, MAX_WIDTH / (w * self.panels))
        return w * self.panels * shrink, h * rows * shrink

    def label(self, values: Mapping[str, Any]) -> str:
        if self.caption is not None:
            return self.caption(dict(values))
        return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items() if v != "")

    def view(self, **changes) -> Figure:
        """One view as a figure: compute with the checked values, then draw into one row of panels."""
        values = self.values(**changes)
        fig, axes = plt.subplots(1, self.panels, figsize=self.figure_size(1), squeeze=False)
        self.draw(self.compute(**values), list(axes[0]))
        fig.tight_layout()
        return fig


def static_twin(explorer: Explorer, settings: Sequence[Mapping[str, Any]], row_titles: bool = False) -> Figure:
    """The explorer's static twin: one row per setting (changes to the defaults), drawn by ``explorer.draw``.

    With ``row_titles`` each row is labelled above its first panel with the setting (or ``explorer.caption``);
    leave it off when the draw function already titles its panels with the values. Returns the figure.
    """
    settings = list(settings)
    if not settings:
        raise ConfigError(f"{explorer.title}: the static twin needs at least one setting")
    rows = [explorer.values(**s) for s in settings]
    fig, axes = plt.subplots(len(rows), explorer.panels, figsize=explorer.figure_size(len(rows)), squeeze=False)
    for values, row in zip(rows, axes):
        explorer.draw(explorer.compute(**values), list(row))
        if row_titles and len(rows) > 1:
            row[0].annotate(
                explorer.label(values),
                xy=(0, 1),
                xycoords="axes fraction",
                xytext=(0, 22),
                textcoords="offset points",
                fontsize=8,
                fontweight="bold",
                ha="left",
                va="bottom",
                annotation_clip=False,
            )
    fig.tight_layout()
    return fig


@dataclass
class ExplorerWidget:
    """The live explorer: ``box`` (display it), ``controls`` (name -> widget), ``output`` (where views go).

    ``draws`` counts the views drawn so far and ``last_values`` holds the values of the latest one (tests and
    the chapters' headless runs check that nothing is drawn before a control moves)."""

    explorer: Explorer
    box: Any
    controls: dict[str, Any]
    output: Any
    draws: int = 0
    last_values: dict | None = None
    last_error: str | None = None

    def current(self) -> dict[str, Any]:
        return {name: w.value for name, w in self.controls.items()}

    def redraw(self, _change=None) -> None:
        """Draw the view for the controls' current values into ``output``; a library error becomes one line."""
        from IPython.display import display

        values = self.current()
        with self.output:
            self.output.clear_output(wait=True)
            try:
                fig = self.explorer.view(**values)
            except SavlError as err:  # a bad path or value: say so in the output, keep the explorer alive
                self.last_error = str(err)
                print(f"{self.explorer.title}: {err}")
                return
            self.last_error = None
            display(fig)
            plt.close(fig)
        self.draws += 1
        self.last_values = values


def _widget_for(name: str, control: Control, value):
    import ipywidgets as widgets

    description = control.label or name
    style = {"description_width": "initial"}
    if isinstance(control, Choice):
        return widgets.Dropdown(options=list(control.options), value=value, description=description, style=style)
    if isinstance(control, Text):
        return widgets.Text(
            value=value,
            description=description,
            placeholder=control.placeholder,
            continuous_update=False,
            style=style,
        )
    common = dict(description=description, continuous_update=False, style=style)
    if control.integer:
        step = int(control.step or 1)
        return widgets.IntSlider(value=int(value), min=int(control.low), max=int(control.high), step=step, **common)
    if control.log:
        lo, hi = math.log10(control.low), math.log10(control.high)
        step = control.step or (hi - lo) / 40
        return widgets.FloatLogSlider(value=value, base=10, min=lo, max=hi, step=step, **common)
    step = control.step or (control.high - control.low) / 100
    return widgets.FloatSlider(value=value, min=control.low, max=control.high, step=step, **common)


def interactive(explorer: Explorer, columns: int = 2, **start) -> ExplorerWidget:
    """ipywidgets controls for ``explorer`` (starting at the defaults updated by ``start``) and an Output area.

    Sliders report on release (``continuous_update=False``), so a model runs once per move. Nothing is drawn
    until a control moves: a headless run never waits on the Output widget. Needs ipywidgets (ImportError
    otherwise; the chapters then show only the static twin)."""
    import ipywidgets as widgets

    values = explorer.values(**start)
    controls = {name: _widget_for(name, c, values[name]) for name, c in explorer.controls.items()}
    output = widgets.Output()
    items = list(controls.values())
    rows = [widgets.HBox(items[i : i + columns]) for i in range(0, len(items), columns)]
    box = widgets.VBox([widgets.HTML(f"<b>{explorer.title}</b>"), *rows, output])
    live = ExplorerWidget(explorer, box, controls, output)
    for w in controls.values():
        w.observe(live.redraw, names="value")
    return live
