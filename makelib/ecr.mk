# Amazon ECR targets: create the repository, log Docker in, and build and push
# the image for several architectures at once. REGISTRY must be an ECR registry,
# ACCOUNT.dkr.ecr.REGION.amazonaws.com; the region is read from it.

AWS       ?= aws
PLATFORMS ?= linux/amd64,linux/arm64

ECR_REGION := $(word 4,$(subst ., ,$(REGISTRY)))
ECR_CHECK   = $(if $(and $(findstring .dkr.ecr.,$(REGISTRY)),$(ECR_REGION)),,\
  $(error REGISTRY must be an ECR registry, ACCOUNT.dkr.ecr.REGION.amazonaws.com (got "$(REGISTRY)")))

.PHONY: ecr-repo ecr-login ecr-push

ecr-repo: ## Create the ECR repository IMAGE in REGISTRY's region, unless it exists
	$(ECR_CHECK)
	$(AWS) ecr describe-repositories --region $(ECR_REGION) --repository-names $(IMAGE) >/dev/null 2>&1 || \
	  $(AWS) ecr create-repository --region $(ECR_REGION) --repository-name $(IMAGE) \
	    --image-scanning-configuration scanOnPush=true

ecr-login: ## Log Docker in to the ECR REGISTRY (aws ecr get-login-password)
	$(ECR_CHECK)
	$(AWS) ecr get-login-password --region $(ECR_REGION) | $(DOCKER) login --username AWS --password-stdin $(REGISTRY)

ecr-push: ecr-login ## Build REGISTRY/IMAGE:TAG for PLATFORMS with buildx and push it
	$(ECR_CHECK)
	$(DOCKER) buildx build --platform $(PLATFORMS) $(DOCKER_BUILD_ARGS) -t $(IMAGE_REF):$(TAG) --push .

info::
	@echo "platforms:   $(PLATFORMS) (ecr-push)"
