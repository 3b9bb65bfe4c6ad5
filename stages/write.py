"""`python -m stages.write ARGS` = `grit stage write ARGS` (the `make write` target)."""
import sys

from grit_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["stage", "write", *sys.argv[1:]]))
