"""Domain logic: prompts, stance classification, tallies and digests. Never imports discord."""
