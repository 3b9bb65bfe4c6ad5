"""`python -m stages.noun_chunks ARGS` = `grit stage noun-chunks ARGS` (the `make noun-chunks` target)."""
import sys

from grit_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["stage", "noun-chunks", *sys.argv[1:]]))
