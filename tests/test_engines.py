"""The engines' plans and the default engine rule: which engine runs a job when none is named, how the
Ray engine fuses stages into operators and sizes its pool, and the streaming plan (used with GPUs)
giving the local engine's build."""
from __future__ import annotations

import pytest

from grit_pipeline.pipeline import PipelineConfig, run_pipeline
from grit_pipeline.pipeline.engine_choice import RAY_FIXED_S, choose_engine, estimate_images, ray_gain
from grit_pipeline.pipeline.ray_operators import ACTOR_MEMORY_BYTES, fused_pool, plan_operators
from grit_pipeline.pipeline.stages import FUSED, STAGE_CLASSES, ExpandStage, GroundStage, NounChunkStage
from tests.test_pipeline import NOOP_FLAGS, clean_build, clean_world, local_config, snapshot  # noqa: F401


class FakeSource:
    def __init__(self, sizes: dict[str, int | None]):
        self.sizes = sizes
        self.asked: list[str] = []

    def size_hint(self, shard):
        self.asked.append(shard)
        return self.sizes[shard]


def shards(n: int, size: int | None = 10_000) -> FakeSource:
    return FakeSource({f"{i:05d}": size for i in range(n)})


def choose(source: FakeSource, **config) -> tuple[str, str]:
    values = dict(input="in", output="out", num_cpus=2) | config
    return choose_engine(PipelineConfig(**values), source, sorted(source.sizes))


def test_a_named_engine_or_a_cluster_address_decides(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    small, large = shards(1, 10), shards(100)
    assert choose(large, engine="local") == ("local", "--engine")
    assert choose(small, engine="ray") == ("ray", "--engine")
    assert choose(small, ray_address="10.0.0.1:6379")[0] == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert choose(small)[0] == "ray"


def test_on_one_machine_ray_only_when_its_cores_win_back_its_start_up(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # 1,024 demo images in 4 shards on 2 cores: ~5 s of work, Ray would save ~2 s but costs ~4 s.
    engine, why = choose(shards(4, 256), detector="demo")
    assert engine == "local" and "1,024 images of demo" in why and "2 of 2 cores" in why
    # 100 shards of 10,000: Ray's two actors save far more than its start-up.
    assert choose(shards(100), detector="demo")[0] == "ray"
    assert choose(shards(100), detector="noop")[0] == "ray"
    # One shard: Ray's actors work on whole shards, so only one would work.
    assert choose(shards(1, 1_000_000), detector="demo")[0] == "local"
    # One core: nothing to gain.
    assert choose(shards(100), detector="demo", num_cpus=1)[0] == "local"
    # A detector without a measured cost (a real model on CPU): Ray from a few hundred images.
    assert choose(shards(4, 64), detector="hf")[0] == "ray"


def test_ray_gain_is_zero_without_parallel_cores_and_grows_with_the_work():
    assert ray_gain(1000.0, cores=1, shards=10) == 0.0
    assert ray_gain(1000.0, cores=8, shards=1) == 0.0
    assert 0 < ray_gain(10.0, cores=2, shards=4) < ray_gain(100.0, cores=2, shards=4) < 100.0
    assert ray_gain(100.0, cores=8, shards=8) > ray_gain(100.0, cores=2, shards=8)
    assert RAY_FIXED_S > 0


def test_the_job_size_is_estimated_from_a_sample_of_shard_footers():
    source = shards(100, 500)
    assert estimate_images(source, sorted(source.sizes)) == 50_000
    assert len(source.asked) == 8
    assert estimate_images(FakeSource({"a": None, "b": 30}), ["a", "b"]) == 60
    assert estimate_images(FakeSource({"a": None}), ["a"]) == 0
    assert estimate_images(shards(3), []) == 0


def test_the_input_source_reads_shard_sizes_from_the_parquet_footer(clean_world):
    from grit_pipeline.pipeline.shards import InputSource

    source = InputSource(local_config(clean_world, "unused"))
    assert [source.size_hint(s) for s in source.shards()] == [5, 5, 5]


def test_without_gpus_every_stage_is_one_operator_that_reads_and_writes():
    (operator,) = plan_operators(FUSED, gpus=False)
    assert operator.stages == FUSED and operator.reads and operator.writes and not operator.gpu
    assert operator.name == "ReadNounChunkGroundExpandWrite"
    (write,) = plan_operators(STAGE_CLASSES["write"], gpus=False)
    assert write.stages == () and write.reads and write.writes


def test_with_gpus_the_detector_has_its_own_operator():
    read, ground, write = plan_operators(FUSED, gpus=True)
    assert (read.stages, ground.stages, write.stages) == ((NounChunkStage,), (GroundStage,), (ExpandStage,))
    assert read.reads and not read.writes and ground.gpu and not ground.reads and write.writes
    config = PipelineConfig(text_pool=3, ground_pool=2)
    assert [op.pool_size(config) for op in (read, ground, write)] == [3, 2, 1]
    # the expansion and part-writing actors follow the GPUs (one per 8) unless --write-pool says
    assert write.pool_size(PipelineConfig(ground_pool=8)) == 1 and write.pool_size(PipelineConfig(ground_pool=9)) == 2
    assert write.pool_size(PipelineConfig(ground_pool=64)) == 8
    assert write.pool_size(PipelineConfig(ground_pool=64, write_pool=3)) == 3
    (alone,) = plan_operators(STAGE_CLASSES["ground"], gpus=True)
    assert alone.gpu and alone.reads and alone.writes


def test_the_fused_pool_has_one_actor_per_cpu_within_shards_and_memory():
    assert fused_pool(units=4, cpus=2, memory_bytes=None) == (2, 0.75)  # half a CPU left for commits
    assert fused_pool(units=1, cpus=16, memory_bytes=None) == (1, 1.0)
    assert fused_pool(units=100, cpus=16, memory_bytes=4 * ACTOR_MEMORY_BYTES)[0] == 4
    assert fused_pool(units=3, cpus=1, memory_bytes=None) == (1, 0.5)


def test_the_default_engine_is_printed(clean_world, tmp_path, capsys, monkeypatch):
    from grit_pipeline.cli import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["run", "--input", str(clean_world), "--output", str(tmp_path / "grit"), *NOOP_FLAGS]) == 0
    err = capsys.readouterr().err
    assert "engine: local (one machine: 15 images of noop" in err


@pytest.mark.ray
def test_the_streaming_plan_gives_the_local_build(clean_world, clean_build, tmp_path, monkeypatch):
    """The plan used with GPUs (three operators through Ray Data), run here on CPUs."""
    import ray

    from grit_pipeline.pipeline import engine_ray

    plan = engine_ray.plan_operators
    monkeypatch.setattr(engine_ray, "plan_operators", lambda classes, gpus: plan(classes, gpus=True))
    ray.init(address="local", num_cpus=4, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        output = tmp_path / "grit"
        summary = run_pipeline(local_config(clean_world, output, engine="ray", text_batch_size=2))
    finally:
        ray.shutdown()
    assert summary.engine == "ray" and len(summary.shards_written) == 3
    assert snapshot(output) == snapshot(clean_build)
    assert not (output / "_parts").exists()


@pytest.mark.ray
def test_a_ray_the_run_started_is_stopped_with_every_process_it_started(clean_world, clean_build, tmp_path,
                                                                          monkeypatch):
    """The run's own local Ray is killed at the end, the raylet's agents and workers too: none outlives it."""
    import psutil
    import ray

    from grit_pipeline.pipeline import engine_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.shutdown()  # a Ray left by another test: this run starts its own
    started, below = [], []
    stop = engine_ray.stop_ray

    def stop_and_watch():
        from ray._private.worker import _global_node

        for infos in _global_node.all_processes.values():
            for info in infos:
                top = psutil.Process(info.process.pid)
                started.append(top)
                below.extend(top.children(recursive=True))
        stop()

    monkeypatch.setattr(engine_ray, "stop_ray", stop_and_watch)
    output = tmp_path / "grit"
    summary = run_pipeline(local_config(clean_world, output, engine="ray"))
    assert summary.engine == "ray" and snapshot(output) == snapshot(clean_build)
    assert not ray.is_initialized()
    assert len(started) >= 4 and below  # GCS, raylet, dashboard, monitors; the raylet's agents
    def running(process) -> bool:
        try:
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    assert [p for p in started + below if running(p)] == []
