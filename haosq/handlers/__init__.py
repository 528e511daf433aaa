"""Job handlers: the registry and the built-in job types."""
