"""Schedules and periodic side effects as Lightning Callbacks (each with its own state when it has any)."""
