"""The error type of a bad configuration, shared by every layer that checks one."""


class ConfigError(ValueError):
    """A bad key or value in the YAML; the message names the key path."""
