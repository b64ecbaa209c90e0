"""Small pieces every layer uses; nothing here imports the rest of the package.

``errors``: :class:`ConfigError`, the one error type a bad YAML key or value raises
(data loaders, checkpoint checks, the train and eval commands); ``run_paths``: the
one rule for a run's folder (checkpoints, ``latest``, ``metrics.jsonl``).
"""
