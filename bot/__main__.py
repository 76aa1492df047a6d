"""``python -m bot``: the ``stancebot`` command (:mod:`bot.cli`)."""

from bot.cli import main

if __name__ == "__main__":
    main(prog_name="stancebot")
