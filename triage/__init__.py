"""triage: Postfix mail.log + leaked spam -> reviewed blacklist rules.

The public Python API lives here; everything returns pandas DataFrames.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__version__ = "0.1.0"

__all__ = ["__version__", "load_history", "read_mailboxes", "read_maillog"]


def read_mailboxes(
    paths: str | Path | Sequence[str | Path],
    role: str | None = None,
    my_hostnames: Sequence[str] | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """Mail folders -> the ``mail`` DataFrame; see ``triage.ingest.mailtable.read_mailboxes``."""
    # Imported on use so that `import triage` (and the CLI's start) stays fast.
    from triage.ingest.mailtable import read_mailboxes as _read_mailboxes

    return _read_mailboxes(paths, role=role, my_hostnames=my_hostnames, **kwargs)


def read_maillog(paths: str | Path | Sequence[str | Path], year: int | None = None,
                 timezone: str | None = None, rule_id_pattern: str | None = None) -> Any:
    """mail.log files -> an object with DataFrames ``.events .sessions .messages .deliveries
    .rejects .unparsed``; see ``triage.ingest.logtables.read_maillog``."""
    from triage.ingest.logtables import read_maillog as _read_maillog

    return _read_maillog(paths, year=year, timezone=timezone, rule_id_pattern=rule_id_pattern)


def load_history(state_dir: str | Path, weeks: Sequence[str] | None = None) -> Any:
    """The history a scan wrote under ``state_dir``: an object with DataFrames ``.sessions
    .messages .deliveries .rejects .mail``; see ``triage.store.load_history``."""
    from triage.store import load_history as _load_history

    return _load_history(state_dir, weeks)
