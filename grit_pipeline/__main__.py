import sys

from grit_pipeline.cli import main

sys.exit(main())
