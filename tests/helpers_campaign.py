"""Hand-written mail rows for the proposal tests (RFC 5737 addresses, example.* names)."""

from __future__ import annotations

import pandas as pd

COLUMNS = ["role", "received_time", "client_ip", "client_name", "helo", "envelope_sender",
           "from_address", "from_domain", "message_id", "x_mailer", "list_id", "host"]


def row(role: str, day: int, ip: str, name: str | None, helo: str, sender: str,
        x_mailer: str | None = None, list_id: str | None = None) -> dict[str, object]:
    """One ``mail`` row; ``day`` counts from Monday 2025-09-01 (ISO week 2025-W36)."""
    domain = sender.rpartition("@")[2]
    return {"role": role, "received_time": pd.Timestamp("2025-09-01 10:00", tz="UTC")
            + pd.Timedelta(days=day), "client_ip": ip, "client_name": name, "helo": helo,
            "envelope_sender": sender, "from_address": sender, "from_domain": domain,
            "message_id": f"{day}.{ip}@{domain}", "x_mailer": x_mailer, "list_id": list_id,
            "host": "mx.example.org"}


def frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)
