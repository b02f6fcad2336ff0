"""The History tab's charts: one plotext chart per figure, with a time axis and scaled units."""

from __future__ import annotations

from textual_plotext import PlotextPlot

from tui.chartdata import SERIES_NAMES, ChartData

COLOURS = ("cyan", "orange", "green", "magenta")


class HistoryChart(PlotextPlot):
    """A line chart of one or two history series; `show` redraws it from a `ChartData`."""

    def show(self, data: ChartData) -> None:
        """Draw `data`: the heading as title, seconds before now on x, the unit on y."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(data.heading[: max(self.size.width - 4, 10)])
        plt.xlabel("seconds before now")
        for colour, (name, values) in zip(COLOURS, data.lines.items(), strict=False):
            if values:
                plt.plot(data.xs, values, color=colour, label=SERIES_NAMES.get(name, "") if len(data.lines) > 1 else "",
                         marker="braille")
        if data.xs:
            plt.xlim(min(data.xs[0], -1.0), 0.0)
        peak = max((max(v) for v in data.lines.values() if v), default=0.0)
        plt.ylim(0.0, peak * 1.1 if peak > 0 else 1.0)
        self.refresh()
