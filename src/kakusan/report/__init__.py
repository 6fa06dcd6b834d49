"""Pictures and plots: sample grids, individual PNGs, loss curves."""
from .images import save_grid, save_pngs, to_uint8
from .html import write_report
from .plots import plot_loss

__all__ = ["save_grid", "save_pngs", "to_uint8", "plot_loss", "write_report"]
