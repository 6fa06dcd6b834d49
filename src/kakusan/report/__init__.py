"""Reports: the one-page HTML report and the sample report. Grids, PNGs and loss plots live low, in
:mod:`kakusan.utils.images` and :mod:`kakusan.utils.plots`, because every stage writes them."""
from ..utils.images import save_grid, save_pngs, to_uint8
from ..utils.plots import plot_loss
from .html import write_report

__all__ = ["save_grid", "save_pngs", "to_uint8", "plot_loss", "write_report"]
