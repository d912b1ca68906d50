"""Postfix maps from the rulebook: map text and matching (postfix), installing (install)."""
