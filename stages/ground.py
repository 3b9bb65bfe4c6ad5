"""`python -m stages.ground ARGS` = `grit stage ground ARGS` (the `make ground` target)."""
import sys

from grit_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["stage", "ground", *sys.argv[1:]]))
