#!/usr/bin/env python
"""Train the demo detector on the synthetic world (``make demo-detector``); see grit_pipeline/synth/train.py."""
import sys

from grit_pipeline.synth.train import main

if __name__ == "__main__":
    sys.exit(main())
