# grit: every target installs what it needs first (make setup is idempotent).
# Every command runs as `$(PY) -m MODULE`: the pipeline stages through their stages/ entry points,
# the other commands through `grit_pipeline` (= the `grit` command) and `kosmos` (= the `kosmos` command).
SHELL := /bin/bash
export NO_ALBUMENTATIONS_UPDATE := 1
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Pipeline variables (override on the command line: make ground INPUT=... OUTPUT=...)
INPUT ?= demo_out/shards
OUTPUT ?= demo_out/grit
DETECTOR ?= demo
MODEL ?=
BOX_THRESHOLD ?= 0.65
NMS_IOU ?= 0.6
RAY_ADDRESS ?=
# make download URL_LIST=laion.parquet SOURCE=laion  ->  shards in $(INPUT), which the next stage reads
URL_LIST ?=
SOURCE ?= laion
DOWNLOAD_ARGS ?=

.PHONY: setup test test-fast demo bench clean help download

help:
	@echo "make setup | test | test-fast | demo | bench | bench-gpu"
	@echo "make download | pipeline | noun-chunks | ground | expand | write | stats | submit   (docs/pipeline.md, docs/cluster.md)"
	@echo "make instruct   (grounded instruction data from a GRIT build: docs/instruct.md)"
	@echo "make calibrate   (the detector's --box-threshold from labelled data: docs/detectors.md)"
	@echo "make gallery | report | demo-detector | train | predict | score | e2e   (docs/views.md, docs/companion.md)"
	@echo "make tasks | eval | eval-suite   (the evaluation tasks and the Kosmos-1 suite: docs/evaluation.md)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -c "import spacy, torch, torchvision, transformers, ray, pyarrow, webdataset, img2dataset, PIL"
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

# make demo writes only under demo_out/demo/ (GRIT_DEMO_DIR), never the INPUT/OUTPUT defaults above
demo: setup
	$(PY) -m stages.demo

bench: setup
	$(PY) -m bench

# Grounding throughput on a GPU with full-size detector architectures (docs/benchmarks.md, "GPU grounding").
# make bench-gpu GPU_BENCH_ARGS="--models grounding-dino-tiny --batch-sizes 1 8 32"
GPU_BENCH_ARGS ?=
.PHONY: bench-gpu
bench-gpu: setup
	$(PY) -m bench.gpu_grounding $(GPU_BENCH_ARGS)

download: setup
	@test -n "$(URL_LIST)" || { echo "usage: make download URL_LIST=FILE_OR_DIR [SOURCE=laion|coyo|custom] [INPUT=shards dir] [DOWNLOAD_ARGS='--image-size 512 ...']"; exit 2; }
	$(PY) -m stages.download --input "$(URL_LIST)" --output "$(INPUT)" --source "$(SOURCE)" $(DOWNLOAD_ARGS)

# Pipeline (docs/pipeline.md): make pipeline INPUT=shards OUTPUT=grit [DETECTOR=hf MODEL=...]
# Stage by stage: make noun-chunks, ground, expand, write (intermediates in WORK, default OUTPUT/_stages);
# rerun one stage with other parameters (make expand BOX_THRESHOLD=T, T from make calibrate) then make write.
# OVERWRITE=1 rebuilds.
WORK ?=
ENGINE ?= auto
OVERWRITE ?=
PIPELINE_ARGS ?=
PIPELINE_FLAGS = --output "$(OUTPUT)" --detector "$(DETECTOR)" $(if $(MODEL),--model "$(MODEL)") \
	--box-threshold $(BOX_THRESHOLD) --nms-iou $(NMS_IOU) --engine $(ENGINE) \
	$(if $(RAY_ADDRESS),--ray-address "$(RAY_ADDRESS)") $(if $(WORK),--work "$(WORK)") \
	$(if $(OVERWRITE),--overwrite) $(PIPELINE_ARGS)
.PHONY: pipeline noun-chunks ground expand write stats

pipeline: setup
	$(PY) -m stages.pipeline --input "$(INPUT)" $(PIPELINE_FLAGS)

noun-chunks: setup
	$(PY) -m stages.noun_chunks --input "$(INPUT)" $(PIPELINE_FLAGS)

ground: setup
	$(PY) -m stages.ground $(PIPELINE_FLAGS)

expand: setup
	$(PY) -m stages.expand $(PIPELINE_FLAGS)

write: setup
	$(PY) -m stages.write $(PIPELINE_FLAGS)

stats: setup
	$(PY) -m grit_pipeline stats "$(OUTPUT)"

# Grounded instruction data from a GRIT build (docs/instruct.md): make instruct [GRIT=demo_out/grit]
#   [INSTRUCT=demo_out/instruct] [INSTRUCT_ARGS='--text-format paper --box-to-expression 2 --engine ray']
GRIT ?= $(OUTPUT)
INSTRUCT ?= demo_out/instruct
.PHONY: instruct
instruct: setup
	$(PY) -m grit_pipeline instruct --input "$(GRIT)" --output "$(INSTRUCT)" $(INSTRUCT_ARGS)

# Calibration (docs/detectors.md, "Calibrating a detector"): one grounding pass on labelled shards, then the
# sweep of --box-threshold / --nms-iou. make calibrate INPUT=labelled_shards DETECTOR=hf MODEL=...
#   [TRUTH=INPUT/truth or a Flickr30k Entities folder] [CALIBRATION=demo_out/calibration]
#   [CALIBRATE_ARGS='--target-precision 0.9 --nms-iou 0.5 0.6 --split test']
CALIBRATION ?= demo_out/calibration
CALIBRATE_ARGS ?=
.PHONY: calibrate

calibrate: setup
	$(PY) -m grit_pipeline calibrate --input "$(INPUT)" --truth "$(or $(TRUTH),$(INPUT)/truth)" \
		--output "$(CALIBRATION)" --detector "$(DETECTOR)" $(if $(MODEL),--model "$(MODEL)") $(CALIBRATE_ARGS)

# Cluster (docs/cluster.md): submit `grit run` as a Ray job to a running cluster, token auth on.
# make submit INPUT=s3://.../shards OUTPUT=s3://.../grit DETECTOR=hf MODEL=IDEA-Research/grounding-dino-base
#   BOX_THRESHOLD=T [RAY_ADDRESS=http://HEAD:8265] [PIPELINE_ARGS='--ground-pool 8 --num-gpus 1'] [SUBMIT_ARGS=--no-wait]
#   (T measured for the detector with make calibrate; the default 0.65 is calibrated for GLIP's scores)
# Local paths are made absolute (the job runs in a copy of this checkout on the cluster).
SUBMIT_ARGS ?=
SUBMIT_ADDRESS = $(or $(RAY_ADDRESS),http://127.0.0.1:8265)
submit_path = $(if $(findstring ://,$(1)),$(1),$(abspath $(1)))
.PHONY: submit

submit: setup
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-token} $(VENV)/bin/ray job submit --address "$(SUBMIT_ADDRESS)" \
		--runtime-env manifests/runtime_env.yaml $(SUBMIT_ARGS) -- \
		grit run --input "$(call submit_path,$(INPUT))" --output "$(call submit_path,$(OUTPUT))" \
		--detector "$(DETECTOR)" $(if $(MODEL),--model "$(MODEL)") --box-threshold $(BOX_THRESHOLD) \
		--nms-iou $(NMS_IOU) --ray-address auto $(if $(OVERWRITE),--overwrite) $(PIPELINE_ARGS)

# Views (docs/views.md): DIR is a build (default OUTPUT) or downloaded GrIT-20M shards.
# make gallery DIR=... [SAMPLE=100] [GALLERY_ARGS='--status rejected --min-score 0.7']; make report DIR=... [TRUTH=...]
DIR ?= $(OUTPUT)
SAMPLE ?= 100
GALLERY_ARGS ?=
TRUTH ?=
.PHONY: gallery report

gallery: setup
	$(PY) -m grit_pipeline gallery "$(DIR)" --sample $(SAMPLE) $(GALLERY_ARGS)

report: setup
	$(PY) -m grit_pipeline report "$(DIR)" $(if $(TRUTH),--truth "$(TRUTH)")

# The demo detector (docs/detectors.md, "The demo detector"): retrain the checkpoint that ships
# in the package, on CPU (<= 20 min on 2 idle cores). make demo-detector [DEMO_DETECTOR_ARGS='--steps 1000']
DEMO_DETECTOR_ARGS ?=
.PHONY: demo-detector

demo-detector: setup
	$(PY) -m grit_pipeline.detectors.demo_train --output grit_pipeline/data/demo_detector.pt $(DEMO_DETECTOR_ARGS)

# Companion (docs/companion.md): train on a build, predict, score.
# make train [DATA=$(OUTPUT)] [RUN=kosmos_out/run] [PRESET=tiny|small|paper] [TRAIN_ARGS='--steps 2000 --init DIR']
#   the papers' mixture: TRAIN_ARGS='--mix captions=SHARDS text=CORPUS interleaved=MMC4.jsonl --images-from IMAGES'
# make predict TASK=rec IMAGES=dir ANNOTATIONS=finetune_refcoco_val.json [PREDICTIONS=...] [PREDICT_ARGS=...]
# make score TASK=rec ANNOTATIONS=... [PREDICTIONS=...] [QUESTIONS=... for vqa];  make e2e (the whole loop, CPU)
DATA ?= $(OUTPUT)
RUN ?= kosmos_out/run
PRESET ?= tiny
TRAIN_ARGS ?=
TASK ?= rec
IMAGES ?=
ANNOTATIONS ?=
QUESTIONS ?=
# the predictions file's suffix comes from the task registry (kosmos tasks; evaluated only when used)
PREDICTIONS ?= $(RUN)/predictions_$(TASK).$(shell $(PY) -m kosmos tasks --suffix $(TASK))
PREDICT_ARGS ?=
# make eval TASK=copa ANNOTATIONS=val.jsonl EVAL_ARGS='--train train.jsonl --shots 0 1 4 --trials 3'
# make eval-suite EVAL_DATA=DIR (every Kosmos-1 task whose files are in DIR; docs/evaluation.md lists the layout)
EVAL_OUT ?= $(RUN)/eval
EVAL_DATA ?=
EVAL_ARGS ?=
.PHONY: train predict score e2e eval eval-suite tasks

train: setup
	$(PY) -m kosmos train --data "$(DATA)" --output "$(RUN)" --preset $(PRESET) \
		$(if $(RAY_ADDRESS),--ray-address "$(RAY_ADDRESS)") $(TRAIN_ARGS)

predict: setup
	$(PY) -m kosmos predict $(TASK) --model "$(RUN)" $(if $(IMAGES),--images "$(IMAGES)") --output "$(PREDICTIONS)" \
		$(if $(ANNOTATIONS),--annotations "$(ANNOTATIONS)") $(if $(QUESTIONS),--questions "$(QUESTIONS)") $(PREDICT_ARGS)

score: setup
	$(PY) -m kosmos score $(TASK) --predictions "$(PREDICTIONS)" --annotations "$(ANNOTATIONS)" \
		$(if $(QUESTIONS),--questions "$(QUESTIONS)")

eval: setup
	$(PY) -m kosmos eval $(TASK) --model "$(RUN)" --output "$(EVAL_OUT)" $(if $(IMAGES),--images "$(IMAGES)") \
		$(if $(ANNOTATIONS),--annotations "$(ANNOTATIONS)") $(if $(QUESTIONS),--questions "$(QUESTIONS)") $(EVAL_ARGS)

eval-suite: setup
	@test -n "$(EVAL_DATA)" || { echo "usage: make eval-suite EVAL_DATA=DIR [RUN=model] [EVAL_OUT=...] [EVAL_ARGS='--trials 3']"; exit 2; }
	$(PY) -m kosmos eval --suite kosmos1 --data "$(EVAL_DATA)" --model "$(RUN)" --output "$(EVAL_OUT)" $(EVAL_ARGS)

tasks: setup
	$(PY) -m kosmos tasks

# make e2e LEVEL=1|2|3 [E2E_INIT=e2e_out/level1/run/best] [E2E_SEED=0]: the whole loop on a curriculum world (kosmos/e2e.py)
LEVEL ?= 3
e2e: setup
	E2E_LEVEL=$(LEVEL) $(PY) -m kosmos.e2e

# make e2e-icl: in-context learning on CPU (~13 minutes), fast binding of nonsense names to shapes (bench/e2e_icl.py; ICL_MINUTES,
# ICL_DIR, ICL_TRAIN_ARGS ...): a tiny model trained on interleaved episodes, 2-way 2-shot vs zero-shot accuracy
.PHONY: e2e-icl
e2e-icl: setup
	$(PY) bench/e2e_icl.py

# make mixture-study: GRIT only vs GRIT + captions + text + interleaved, 10 CPU minutes each (bench/study_mixture.py;
# STUDY_DIR, STUDY_SEED: the worlds' seed, 0 as make e2e's)
.PHONY: mixture-study
mixture-study: setup
	$(PY) bench/study_mixture.py

# make instruct-study: a tiny model before and after --recipe instruct on a level-1 world: box -> expression and
# REC on held-out images, its ViT from a CLIP trained on the world (bench/study_instruct.py; STUDY_WORLD, STUDY_MODEL,
# STUDY_VISION_STEPS, STUDY_TUNE_ARGS)
.PHONY: instruct-study
instruct-study: setup
	$(PY) bench/study_instruct.py

clean:
	rm -rf demo_out bench_out .pytest_cache
