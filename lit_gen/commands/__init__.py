"""Subcommands that are not Trainer methods; each module has ``main(argv)``."""
