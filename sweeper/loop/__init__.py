"""The training loop every trial runs, whatever the method and the runtime."""
