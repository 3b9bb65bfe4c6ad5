"""The synthetic grounded world: scenes, captions with exact truth spans, img2dataset-layout shards.

A toy world for demos and tests (``grit synth``); real runs read real img2dataset downloads.
"""
from .captions import Caption, Mention, make_caption
from .scene import Scene, SceneObject, random_scene, render_scene
from .writer import IMG2DATASET_SCHEMA, SynthSample, make_sample, truth_record, write_synthetic_world

__all__ = ["Caption", "Mention", "make_caption", "Scene", "SceneObject", "random_scene", "render_scene",
           "IMG2DATASET_SCHEMA", "SynthSample", "make_sample", "truth_record", "write_synthetic_world"]
