"""What survives a crash: exposure numbers, journals, save-points, the outbox, the
instrument lock."""
