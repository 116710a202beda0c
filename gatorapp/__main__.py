"""``python -m gatorapp``: the same as the ``gatorapp`` command."""

from .cli import run

run()
