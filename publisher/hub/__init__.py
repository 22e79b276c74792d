"""Everything that talks to the Hub for writing. Only the pipeline calls it."""
