"""The train command: YAML -> typed config -> builders -> Composer Trainer.

``train.py`` at the repository root is a shim over :func:`vlmo_composer.training.train.main`;
the dry run, run checks, run report and the curves drawing belong to the same command.
"""
