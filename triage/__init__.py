"""triage: Postfix mail.log + leaked spam -> reviewed blacklist rules.

The public Python API lives here; everything returns pandas DataFrames.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
