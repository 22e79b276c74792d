"""The model card: a pure function of `results.json` plus card settings."""

from .render import CardSettings, load_card_settings, render_card, write_card

__all__ = ["CardSettings", "load_card_settings", "render_card", "write_card"]
