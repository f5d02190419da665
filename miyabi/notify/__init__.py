"""Notifications: happenings told to Slack, Discord, ntfy and JSON webhooks (see :mod:`miyabi.notify.notifier`)."""
