"""The sky and the site: the night's Sun events."""
