# Container targets. The image is $(REGISTRY)/$(IMAGE):$(TAG), or
# $(IMAGE):$(TAG) when REGISTRY is empty; TAG defaults to `git describe`.

DOCKER            ?= docker
IMAGE             ?= ecs-cluster-manager
REGISTRY          ?=
DOCKER_BUILD_ARGS ?=
DOCKER_RUN_ARGS   ?=
# Passed to `docker run` by name (-e NAME), so only those set in your environment.
DOCKER_ENV        ?= CLUSTER SERVICES AWS_REGION AWS_DEFAULT_REGION \
                     AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN \
                     AWS_ENDPOINT_URL AWS_ENDPOINT_URL_ECS

# Computed once; characters a Docker tag cannot hold (such as "/") become "-".
ifeq ($(origin TAG),undefined)
TAG := $(shell { git describe --tags --always --dirty 2>/dev/null || echo latest; } | tr -c 'A-Za-z0-9_.\n-' '-')
endif

IMAGE_REF := $(if $(REGISTRY),$(REGISTRY)/)$(IMAGE)

.PHONY: docker-build docker-push docker-tag-latest docker-run

docker-build: ## Build the image [REGISTRY/]IMAGE:TAG
	$(DOCKER) build $(DOCKER_BUILD_ARGS) -t $(IMAGE_REF):$(TAG) .

docker-push: ## Push [REGISTRY/]IMAGE:TAG
	$(DOCKER) push $(IMAGE_REF):$(TAG)

docker-tag-latest: ## Tag [REGISTRY/]IMAGE:TAG as [REGISTRY/]IMAGE:latest
	$(DOCKER) tag $(IMAGE_REF):$(TAG) $(IMAGE_REF):latest

docker-run: ## Run the image with CLUSTER, SERVICES, AWS_* from your environment
	$(DOCKER) run --rm $(addprefix -e ,$(DOCKER_ENV)) $(DOCKER_RUN_ARGS) $(IMAGE_REF):$(TAG) $(ARGS)

clean::
	@echo "images are kept; remove one with: $(DOCKER) image rm $(IMAGE_REF):$(TAG)"

info::
	@echo "image:       $(IMAGE_REF):$(TAG)"
	@echo "docker:      $(DOCKER)"
