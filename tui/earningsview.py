"""The earnings tab: the ledger's money, repainted when a new report or car message arrived."""

from __future__ import annotations

from textual.widgets import Static

from tui.earnings import EarningsBook, earnings_lines


class EarningsView(Static):
    """The earnings tab: repaints the ledger's figures when a new report or car message arrived."""

    def __init__(self, book: EarningsBook, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self.book = book
        self._painted = -1

    def on_mount(self) -> None:
        self.repaint()
        self.set_interval(0.5, self.repaint)

    def repaint(self) -> None:
        if self.book.version != self._painted:
            self._painted = self.book.version
            self.update("\n".join(earnings_lines(self.book)))
