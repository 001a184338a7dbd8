"""``python -m alignfw``: see :mod:`alignfw.cli`."""

from alignfw.cli import main

if __name__ == "__main__":
    main()
