"""One argparse help formatter for every command of the project (stdlib only)."""

from __future__ import annotations

import argparse

__all__ = ["DefaultsHelpFormatter"]


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the meaningless ones: None, flags, required options, and help
    texts that already say their default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if (action.default is None or isinstance(action.default, bool) or action.required
                or "default:" in (action.help or "")):
            return action.help or ""
        return super()._get_help_string(action)
