"""`python -m stages.pipeline ARGS` = `grit run ARGS` (the `make pipeline` target)."""
import sys

from grit_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
