"""``python -m noisegrad``: the command line, which lives in :mod:`noisegrad.app.cli`."""
from noisegrad.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
