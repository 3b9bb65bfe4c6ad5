"""``python -m stages.download --input URLS --output SHARDS ...`` (``make download``): ``grit download``."""
import sys

from grit_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["download", *sys.argv[1:]]))
