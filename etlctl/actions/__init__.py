"""What the commands do: one library call per command, over the store (and the broker)."""
