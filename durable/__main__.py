"""``python -m durable``: the command line."""

from .cli import main

main()
