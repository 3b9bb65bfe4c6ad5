"""Every source and sink of the pipeline meets the contract the engines rely on (``pipeline.contracts``):
the methods exist (``isinstance`` on the runtime-checkable protocols) and take the arguments the engines pass.
"""
from __future__ import annotations

import inspect

import pytest
from ray import cloudpickle  # what the Ray engine sends sources and sinks to its workers with

from grit_pipeline.commands.ground import _ImageSource
from grit_pipeline.instruct_build import InstructConfig, InstructSink, InstructSource
from grit_pipeline.pipeline.config import PipelineConfig
from grit_pipeline.pipeline.contracts import SampleSource, ShardSink, ShardSource
from grit_pipeline.pipeline.shards import BuildSink, InputSource, StageSink, StageSource


def protocol_methods(protocol: type) -> list[str]:
    """The methods a protocol declares (its own and those it inherits from other protocols)."""
    return sorted({name for cls in protocol.__mro__ if cls not in (object,) and getattr(cls, "_is_protocol", False)
                   for name, value in vars(cls).items() if inspect.isfunction(value) and not name.startswith("_")})


def signature_problems(obj, protocol: type) -> list[str]:
    """Each method of ``protocol`` that ``obj`` cannot be called with as the protocol declares it: its
    required parameters passed by position, those with a default by name."""
    problems = []
    for name in protocol_methods(protocol):
        declared = inspect.signature(getattr(protocol, name))
        params = [p for p in declared.parameters.values() if p.name != "self"]
        args = [object() for p in params if p.default is inspect.Parameter.empty]
        kwargs = {p.name: None for p in params if p.default is not inspect.Parameter.empty}
        try:
            inspect.signature(getattr(obj, name)).bind(*args, **kwargs)
        except TypeError as error:
            problems.append(f"{type(obj).__name__}.{name}: {error}")
    return problems


@pytest.fixture
def folders(tmp_path):
    config = PipelineConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"))
    instruct = InstructConfig(input=str(tmp_path / "grit"), output=str(tmp_path / "instruct"))
    return config, instruct, str(tmp_path / "work")


def shard_sources(folders):
    config, instruct, work = folders
    return [InputSource(config), StageSource(work, "noun_chunks"), InstructSource(instruct)]


def shard_sinks(folders):
    config, instruct, work = folders
    return [BuildSink(config), StageSink(work, "ground"), InstructSink(instruct)]


def test_the_three_shard_sources_meet_the_shard_source_contract(folders):
    for source in shard_sources(folders):
        assert isinstance(source, ShardSource), type(source).__name__
        assert isinstance(source, SampleSource)
        assert signature_problems(source, ShardSource) == []
        # (the Ray engine sends the source to its workers)
        assert cloudpickle.loads(cloudpickle.dumps(source)).url == source.url


def test_grit_grounds_image_source_meets_the_sample_source_contract():
    source = _ImageSource([], chunk_size=4, workers=1)
    try:
        assert isinstance(source, SampleSource)
        assert signature_problems(source, SampleSource) == []
        assert not isinstance(source, ShardSource)  # no shards, markers or parameters: a stream of chunks
    finally:
        source.close()


def test_the_image_sources_chunks_hold_each_sample_once(tmp_path):
    entries = [{"key": f"{i:03d}", "caption": "a dog", "status": "download_error", "reason": "gone"}
               for i in range(5)]
    source = _ImageSource(entries, chunk_size=5, workers=1)
    try:
        chunks = list(source.read_chunks(next(source.chunks()), 2))
    finally:
        source.close()
    assert [len(chunk) for chunk in chunks] == [2, 2, 1]
    assert [s["key"] for chunk in chunks for s in chunk] == [e["key"] for e in entries]


def test_the_three_sinks_meet_the_shard_sink_contract(folders):
    for sink in shard_sinks(folders):
        assert isinstance(sink, ShardSink), type(sink).__name__
        assert signature_problems(sink, ShardSink) == []
        assert cloudpickle.loads(cloudpickle.dumps(sink)).folder.url == sink.folder.url


def test_the_checks_refuse_a_class_that_breaks_the_contract(folders):
    """The checks above can fail: a missing method or one with other parameters is caught."""
    class NoMarker:  # a sink without ``marker``
        folder = None

        def files(self, shard): ...
        def is_done(self, shard, params): ...
        def clear(self, shard): ...
        def write(self, shard, samples, params, input_description, stream=None): ...

    class WriteWithoutStream(NoMarker):
        def marker(self, shard): ...
        def write(self, shard, samples, params, input_description): ...  # no ``stream``

    assert not isinstance(NoMarker(), ShardSink)
    assert isinstance(WriteWithoutStream(), ShardSink)  # (isinstance sees names only)
    assert signature_problems(WriteWithoutStream(), ShardSink) == [
        "WriteWithoutStream.write: got an unexpected keyword argument 'stream'"]
    assert protocol_methods(ShardSource) == ["describe", "incomplete", "params", "read", "read_chunks", "shards",
                                             "size_hint"]
