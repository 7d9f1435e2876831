"""The commands, one module each; every command is a `run` function with explicit parameters."""
