"""`python -m stages.expand ARGS` = `grit stage expand ARGS` (the `make expand` target)."""
import sys

from grit_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["stage", "expand", *sys.argv[1:]]))
