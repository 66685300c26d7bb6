"""Moved: the turn view is pages/ui/turn_view.py, its pictures pages/ui/pictures.py.

`display_image` stays importable from here for pages/library_view.py.
"""
from __future__ import annotations

from pages.ui.pictures import display_image  # noqa: F401
