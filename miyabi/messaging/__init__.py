"""Messages: Maildir inboxes (the store), delivery into panes, first messages, and
waking deliverers when mail arrives."""
