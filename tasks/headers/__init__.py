"""Headers: the cards of an exposure, telemetry snapshots, exact times."""
