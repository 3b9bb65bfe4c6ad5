# grit: every target installs what it needs first (make setup is idempotent).
# Every command runs as `$(PY) -m MODULE`: the pipeline stages through their stages/ entry points,
# the other commands through `grit_pipeline` (= the `grit` command) and `kosmos` (= the `kosmos` command).
SHELL := /bin/bash
export NO_ALBUMENTATIONS_UPDATE := 1
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Pipeline variables (override on the command line: make ground INPUT=... OUTPUT=...). `make help` lists each
# target with the variables it reads; a variable this Makefile does not know is refused.
# INPUT defaults to the shards `make demo` synthesises (read only); OUTPUT to a build of its own.
INPUT ?= demo_out/demo/shards
OUTPUT ?= demo_out/grit
# CONFIG=run.yaml: grit run --config (docs/pipeline.md); then only the variables set on the command line override it
CONFIG ?=
DETECTOR ?= demo
MODEL ?=
BOX_THRESHOLD ?= 0.65
NMS_IOU ?= 0.6
RAY_ADDRESS ?=
# make download URL_LIST=laion.parquet SOURCE=laion  ->  shards in $(INPUT), which the next stage reads
URL_LIST ?=
SOURCE ?= laion
DOWNLOAD_ARGS ?=
# Environment settings the scripts read (make e2e E2E_SEED=1, make demo GRIT_DEMO_IMAGES=50, ...): passed through.
PASS_THROUGH_PREFIXES := GRIT_ E2E_ ICL_ STUDY_ RAY_ HF_ CUDA_ PIP_ NO_ TOKENIZERS_

# A misspelt variable on the command line (DETECTER=hf) stops make before anything runs, naming the close match.
COMMAND_LINE_VARIABLES := $(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v)))
ifneq ($(strip $(COMMAND_LINE_VARIABLES)),)
UNKNOWN_VARIABLE := $(shell $(PYTHON_BOOT) grit_pipeline/make_vars.py check $(firstword $(MAKEFILE_LIST)) $(COMMAND_LINE_VARIABLES))
ifneq ($(UNKNOWN_VARIABLE),)
$(error $(UNKNOWN_VARIABLE))
endif
endif

.PHONY: setup test test-fast demo bench clean help download

help: ## this list: each target, then the variables it reads and their defaults
	@$(PYTHON_BOOT) grit_pipeline/make_vars.py help $(firstword $(MAKEFILE_LIST))

setup: $(STAMP) ## the virtual environment .venv with the project and its test extras (idempotent)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -c "import spacy, torch, torchvision, transformers, ray, pyarrow, webdataset, img2dataset, PIL"
	@touch $(STAMP)

test: setup ## every test
	$(PY) -m pytest -q tests

test-fast: setup ## the tests not marked slow
	$(PY) -m pytest -q -m "not slow" tests

# make demo writes only under demo_out/demo/ (GRIT_DEMO_DIR), and empties it first: INPUT's default reads its
# shards, OUTPUT's default is outside it
demo: setup ## synthetic shards -> GRIT build -> stats, gallery, report, all under demo_out/demo (GRIT_DEMO_*)
	$(PY) -m stages.demo

bench: setup ## the CPU benchmarks (docs/benchmarks.md)
	$(PY) -m bench

# Grounding throughput on a GPU with full-size detector architectures (docs/benchmarks.md, "GPU grounding").
# make bench-gpu GPU_BENCH_ARGS="--models grounding-dino-tiny --batch-sizes 1 8 32"
GPU_BENCH_ARGS ?=
.PHONY: bench-gpu
bench-gpu: setup ## grounding throughput of full-size detectors on a GPU
	$(PY) -m bench.gpu_grounding $(GPU_BENCH_ARGS)

download: setup ## img2dataset: URL_LIST -> shards in INPUT (docs/download.md)
	@test -n "$(URL_LIST)" || { echo "usage: make download URL_LIST=FILE_OR_DIR [SOURCE=laion|coyo|custom] [INPUT=shards dir] [DOWNLOAD_ARGS='--image-size 512 ...']"; exit 2; }
	$(PY) -m stages.download --input "$(URL_LIST)" --output "$(INPUT)" --source "$(SOURCE)" $(DOWNLOAD_ARGS)

# Pipeline (docs/pipeline.md): make pipeline INPUT=shards OUTPUT=grit [DETECTOR=hf MODEL=...] [CONFIG=run.yaml]
# Stage by stage: make noun-chunks, ground, expand, write (intermediates in WORK, default OUTPUT/_stages);
# rerun one stage with other parameters (make expand BOX_THRESHOLD=T, T from make calibrate) then make write.
# OVERWRITE=1 rebuilds.
WORK ?=
ENGINE ?= auto
OVERWRITE ?=
PIPELINE_ARGS ?=
PIPELINE_VARIABLES := INPUT OUTPUT CONFIG DETECTOR MODEL BOX_THRESHOLD NMS_IOU ENGINE RAY_ADDRESS WORK OVERWRITE PIPELINE_ARGS
# $(call flag,VAR,--flag): the flag with VAR's value when VAR is not empty. With CONFIG, only a variable set on
# the command line (or in the environment) becomes a flag, so the defaults above do not override the file.
user_set = $(filter command line environment override,$(origin $(1)))
flag = $(if $(and $($(1)),$(or $(if $(CONFIG),,default),$(call user_set,$(1)))),$(2) "$($(1))")
PIPELINE_FLAGS = $(if $(CONFIG),--config "$(CONFIG)") $(call flag,OUTPUT,--output) $(call flag,DETECTOR,--detector) \
	$(call flag,MODEL,--model) $(call flag,BOX_THRESHOLD,--box-threshold) $(call flag,NMS_IOU,--nms-iou) \
	$(call flag,ENGINE,--engine) $(call flag,RAY_ADDRESS,--ray-address) $(call flag,WORK,--work) \
	$(if $(call flag,OVERWRITE,x),--overwrite) $(PIPELINE_ARGS)
# The effective settings of a target, one block at its start: each variable's value, and where it was set when
# not by this Makefile.
show_settings = @printf '%s\n' "make $@:" $(foreach v,$(1),'  $(v)=$(subst ','\'',$($(v)))$(if $(call user_set,$(v)), ($(origin $(v))))') \
	$(if $(CONFIG),'  (CONFIG: variables not set on the command line come from $(CONFIG))')
# $(call need_dir,VAR,what makes it): stop in one line when the local folder VAR names does not exist
# (URLs pass; with CONFIG, a VAR the command line did not set is the file's business).
need_dir = @test -n "$(findstring ://,$($(1)))" -o -e "$($(1))" $(if $(CONFIG),$(if $(call user_set,$(1)),,-o 1)) || \
	{ echo "make $@: $(if $(filter STAGES_DIR,$(1)),,$(1)=)$($(1)) does not exist: $(2)"; exit 2; }
STAGES_DIR = $(or $(WORK),$(OUTPUT)/_stages)
.PHONY: pipeline noun-chunks ground expand write stats

pipeline: setup ## build GRIT from INPUT's shards into OUTPUT in one pass (docs/pipeline.md)
	$(call show_settings,$(PIPELINE_VARIABLES))
	$(call need_dir,INPUT,make demo synthesises demo_out/demo/shards; or set INPUT=DIR)
	$(PY) -m stages.pipeline $(call flag,INPUT,--input) $(PIPELINE_FLAGS)

noun-chunks: setup ## stage 1 of 4: spaCy noun chunks of INPUT's captions into WORK (default OUTPUT/_stages)
	$(call show_settings,$(PIPELINE_VARIABLES))
	$(call need_dir,INPUT,make demo synthesises demo_out/demo/shards; or set INPUT=DIR)
	$(PY) -m stages.noun_chunks $(call flag,INPUT,--input) $(PIPELINE_FLAGS)

ground: setup ## stage 2 of 4: the detector on stage 1's output (DETECTOR, MODEL, NMS_IOU)
	$(call show_settings,$(filter-out INPUT,$(PIPELINE_VARIABLES)))
	$(if $(CONFIG),,$(call need_dir,STAGES_DIR,make noun-chunks with the same OUTPUT and WORK writes it; or set OUTPUT or WORK))
	$(PY) -m stages.ground $(PIPELINE_FLAGS)

expand: setup ## stage 3 of 4: BOX_THRESHOLD and the referring expressions on stage 2's output
	$(call show_settings,$(filter-out INPUT,$(PIPELINE_VARIABLES)))
	$(if $(CONFIG),,$(call need_dir,STAGES_DIR,make noun-chunks and make ground with the same OUTPUT and WORK write it; or set OUTPUT or WORK))
	$(PY) -m stages.expand $(PIPELINE_FLAGS)

write: setup ## stage 4 of 4: the GRIT build in OUTPUT from stage 3's output
	$(call show_settings,$(filter-out INPUT,$(PIPELINE_VARIABLES)))
	$(if $(CONFIG),,$(call need_dir,STAGES_DIR,the stages before write with the same OUTPUT and WORK write it; or set OUTPUT or WORK))
	$(PY) -m stages.write $(PIPELINE_FLAGS)

stats: setup ## totals, reject reasons and score histogram of the build in OUTPUT
	$(call need_dir,OUTPUT,make pipeline builds it; or set OUTPUT=DIR)
	$(PY) -m grit_pipeline stats "$(OUTPUT)"

# Grounded instruction data from a GRIT build (docs/instruct.md): make instruct [GRIT=demo_out/grit]
#   [INSTRUCT=demo_out/instruct] [INSTRUCT_ARGS='--text-format paper --box-to-expression 2 --engine ray']
GRIT ?= $(OUTPUT)
INSTRUCT ?= demo_out/instruct
INSTRUCT_ARGS ?=
.PHONY: instruct
instruct: setup ## grounded instruction data from the build GRIT (docs/instruct.md)
	$(call need_dir,GRIT,make pipeline builds demo_out/grit; or set GRIT=DIR)
	$(PY) -m grit_pipeline instruct --input "$(GRIT)" --output "$(INSTRUCT)" $(INSTRUCT_ARGS)

# Calibration (docs/detectors.md, "Calibrating a detector"): one grounding pass on labelled shards, then the
# sweep of --box-threshold / --nms-iou. make calibrate INPUT=labelled_shards DETECTOR=hf MODEL=...
#   [TRUTH=INPUT/truth or a Flickr30k Entities folder] [CALIBRATION=demo_out/calibration]
#   [CALIBRATE_ARGS='--target-precision 0.9 --nms-iou 0.5 0.6 --split test']
CALIBRATION ?= demo_out/calibration
CALIBRATE_ARGS ?=
.PHONY: calibrate

calibrate: setup ## the detector's --box-threshold from labelled shards in INPUT (docs/detectors.md)
	$(PY) -m grit_pipeline calibrate --input "$(INPUT)" --truth "$(or $(TRUTH),$(INPUT)/truth)" \
		--output "$(CALIBRATION)" --detector "$(DETECTOR)" $(if $(MODEL),--model "$(MODEL)") $(CALIBRATE_ARGS)

# Cluster (docs/cluster.md): submit `grit run` as a Ray job to a running cluster, token auth on.
# make submit INPUT=s3://.../shards OUTPUT=s3://.../grit DETECTOR=hf MODEL=IDEA-Research/grounding-dino-base
#   BOX_THRESHOLD=T [RAY_ADDRESS=http://HEAD:8265] [PIPELINE_ARGS='--ground-pool 8 --num-gpus 1'] [SUBMIT_ARGS=--no-wait]
#   (T measured for the detector with make calibrate; the default 0.65 is calibrated for GLIP's scores)
# Local paths are made absolute (the job runs in a copy of this checkout on the cluster).
# Before any `ray job` call, grit_pipeline/submit.py checks that the job server answers and takes this machine's
# token, and stops make in one line naming what is missing and the command that fixes it.
# make submit-status [JOB=raysubmit_...] (no JOB: every job);  make submit-logs JOB=raysubmit_... [FOLLOW=1]
SUBMIT_ARGS ?=
JOB ?=
FOLLOW ?=
SUBMIT_ADDRESS = $(or $(RAY_ADDRESS),http://127.0.0.1:8265)
SUBMIT_VARIABLES := INPUT OUTPUT DETECTOR MODEL BOX_THRESHOLD NMS_IOU RAY_ADDRESS OVERWRITE PIPELINE_ARGS SUBMIT_ARGS
submit_path = $(if $(findstring ://,$(1)),$(1),$(abspath $(1)))
# Ray's CLI sends the token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) only in token mode.
RAY_JOB = RAY_AUTH_MODE=$${RAY_AUTH_MODE:-token} $(VENV)/bin/ray job
ifneq ($(filter submit submit-status submit-logs,$(MAKECMDGOALS)),)
ifeq ($(findstring n,$(firstword -$(MAKEFLAGS))),)
SUBMIT_PROBLEM := $(shell RAY_ADDRESS= $(PYTHON_BOOT) grit_pipeline/submit.py --address "$(SUBMIT_ADDRESS)")
ifneq ($(SUBMIT_PROBLEM),)
$(error $(SUBMIT_PROBLEM))
endif
endif
endif
.PHONY: submit submit-status submit-logs

submit: setup ## run the pipeline as a Ray job on the cluster at RAY_ADDRESS (docs/cluster.md)
	$(call show_settings,$(SUBMIT_VARIABLES))
	$(call need_dir,INPUT,make demo synthesises demo_out/demo/shards; or set INPUT=DIR)
	$(RAY_JOB) submit --address "$(SUBMIT_ADDRESS)" \
		--runtime-env manifests/runtime_env.yaml $(SUBMIT_ARGS) -- \
		grit run --input "$(call submit_path,$(INPUT))" --output "$(call submit_path,$(OUTPUT))" \
		--detector "$(DETECTOR)" $(if $(MODEL),--model "$(MODEL)") --box-threshold $(BOX_THRESHOLD) \
		--nms-iou $(NMS_IOU) --ray-address auto $(if $(OVERWRITE),--overwrite) $(PIPELINE_ARGS)

submit-status: setup ## the state of job JOB on the cluster at RAY_ADDRESS (no JOB: every job)
	$(RAY_JOB) $(if $(JOB),status "$(JOB)",list) --address "$(SUBMIT_ADDRESS)"

submit-logs: setup ## the output of job JOB on the cluster at RAY_ADDRESS (FOLLOW=1: until it ends)
	@test -n "$(JOB)" || { echo "make submit-logs: set JOB=ID (the raysubmit_... id make submit printed; make submit-status lists them)"; exit 2; }
	$(RAY_JOB) logs "$(JOB)" --address "$(SUBMIT_ADDRESS)" $(if $(FOLLOW),--follow)

# Views (docs/views.md): DIR is a build (default OUTPUT) or downloaded GrIT-20M shards.
# make gallery DIR=... [SAMPLE=100] [GALLERY_ARGS='--status rejected --min-score 0.7']; make report DIR=... [TRUTH=...]
DIR ?= $(OUTPUT)
SAMPLE ?= 100
GALLERY_ARGS ?=
TRUTH ?=
.PHONY: gallery report

gallery: setup ## an HTML gallery of the build or GrIT-20M shards in DIR (docs/views.md)
	$(call need_dir,DIR,make pipeline builds demo_out/grit; or set DIR=DIR)
	$(PY) -m grit_pipeline gallery "$(DIR)" --sample $(SAMPLE) $(GALLERY_ARGS)

report: setup ## a quality report of the build in DIR (docs/views.md)
	$(call need_dir,DIR,make pipeline builds demo_out/grit; or set DIR=DIR)
	$(PY) -m grit_pipeline report "$(DIR)" $(if $(TRUTH),--truth "$(TRUTH)")

# The demo detector (docs/detectors.md, "The demo detector"): retrain the checkpoint that ships
# in the package, on CPU (<= 20 min on 2 idle cores). make demo-detector [DEMO_DETECTOR_ARGS='--steps 1000']
DEMO_DETECTOR_ARGS ?=
.PHONY: demo-detector

demo-detector: setup ## retrain the bundled demo detector on CPU (docs/detectors.md)
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

train: setup ## train the Kosmos-2 companion on the build DATA (docs/companion.md)
	$(PY) -m kosmos train --data "$(DATA)" --output "$(RUN)" --preset $(PRESET) \
		$(if $(RAY_ADDRESS),--ray-address "$(RAY_ADDRESS)") $(TRAIN_ARGS)

predict: setup ## the trained model RUN's predictions for TASK
	$(PY) -m kosmos predict $(TASK) --model "$(RUN)" $(if $(IMAGES),--images "$(IMAGES)") --output "$(PREDICTIONS)" \
		$(if $(ANNOTATIONS),--annotations "$(ANNOTATIONS)") $(if $(QUESTIONS),--questions "$(QUESTIONS)") $(PREDICT_ARGS)

score: setup ## score PREDICTIONS of TASK against ANNOTATIONS
	$(PY) -m kosmos score $(TASK) --predictions "$(PREDICTIONS)" --annotations "$(ANNOTATIONS)" \
		$(if $(QUESTIONS),--questions "$(QUESTIONS)")

eval: setup ## evaluate RUN on one TASK (docs/evaluation.md)
	$(PY) -m kosmos eval $(TASK) --model "$(RUN)" --output "$(EVAL_OUT)" $(if $(IMAGES),--images "$(IMAGES)") \
		$(if $(ANNOTATIONS),--annotations "$(ANNOTATIONS)") $(if $(QUESTIONS),--questions "$(QUESTIONS)") $(EVAL_ARGS)

eval-suite: setup ## evaluate RUN on every Kosmos-1 task whose files are in EVAL_DATA
	@test -n "$(EVAL_DATA)" || { echo "usage: make eval-suite EVAL_DATA=DIR [RUN=model] [EVAL_OUT=...] [EVAL_ARGS='--trials 3']"; exit 2; }
	$(PY) -m kosmos eval --suite kosmos1 --data "$(EVAL_DATA)" --model "$(RUN)" --output "$(EVAL_OUT)" $(EVAL_ARGS)

tasks: setup ## the evaluation tasks
	$(PY) -m kosmos tasks

# make e2e LEVEL=1|2|3 [E2E_INIT=e2e_out/level1/run/best] [E2E_SEED=0]: the whole loop on a curriculum world (kosmos/e2e.py)
LEVEL ?= 3
e2e: setup ## the whole loop on a curriculum world, CPU (kosmos/e2e.py; E2E_*)
	E2E_LEVEL=$(LEVEL) $(PY) -m kosmos.e2e

# make e2e-icl: in-context learning on CPU (~13 minutes), fast binding of nonsense names to shapes (bench/e2e_icl.py; ICL_MINUTES,
# ICL_DIR, ICL_TRAIN_ARGS ...): a tiny model trained on interleaved episodes, 2-way 2-shot vs zero-shot accuracy
.PHONY: e2e-icl
e2e-icl: setup ## in-context learning on CPU, ~13 minutes (bench/e2e_icl.py; ICL_*)
	$(PY) bench/e2e_icl.py

# make mixture-study: GRIT only vs GRIT + captions + text + interleaved, 10 CPU minutes each (bench/study_mixture.py;
# STUDY_DIR, STUDY_SEED: the worlds' seed, 0 as make e2e's)
.PHONY: mixture-study
mixture-study: setup ## GRIT only vs the papers' mixture, 10 CPU minutes each (STUDY_*)
	$(PY) bench/study_mixture.py

# make instruct-study: a tiny model before and after --recipe instruct on a level-1 world: box -> expression and
# REC on held-out images, its ViT from a CLIP trained on the world (bench/study_instruct.py; STUDY_WORLD, STUDY_MODEL,
# STUDY_VISION_STEPS, STUDY_TUNE_ARGS)
.PHONY: instruct-study
instruct-study: setup ## a tiny model before and after --recipe instruct (STUDY_*)
	$(PY) bench/study_instruct.py

clean: ## delete demo_out, bench_out and the pytest cache
	rm -rf demo_out bench_out .pytest_cache
