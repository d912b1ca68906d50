"""Registers every command module with the app. One import per command module."""
from triage.cli import (
    emit_cmd,  # noqa: F401
    evaluate_cmd,  # noqa: F401
    mail_cmd,  # noqa: F401
    parse_cmd,  # noqa: F401
    report_cmd,  # noqa: F401
    review_cmd,  # noqa: F401
    rules_cmd,  # noqa: F401
    scan_cmd,  # noqa: F401
)
