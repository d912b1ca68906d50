"""Registers every command module with the app. One import per command module."""
