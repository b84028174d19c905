"""Overlays, plots and the HTML run report (numpy + PIL; no matplotlib needed)."""

from .overlay import label_color, render_overlay, save_overlay

__all__ = ["label_color", "render_overlay", "save_overlay"]
