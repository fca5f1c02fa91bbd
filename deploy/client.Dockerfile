# syntax=docker/dockerfile:1
# The synthmed client image for deploy/kubernetes/synthesis-job.yaml: `synthmed generate` with
# s3fs for s3:// outputs, no torch (the default install is the client side). No public
# registry publishes it; build it from this checkout (the repository root is the context) and
# push it where your cluster pulls from:
#
#   docker build -f deploy/client.Dockerfile -t REGISTRY/synthmed-client:0.1.0 .
#   docker push REGISTRY/synthmed-client:0.1.0
#
# The tag is the synthmed version (pyproject.toml); the Job names the same one.
# client.Dockerfile.dockerignore beside this file keeps the context to the sources.
FROM python:3.12-slim

# The sources are bind-mounted for the install only (rw: pip builds in the tree, and what it
# writes there is thrown away), so no copy of them stays in a layer.
RUN --mount=type=bind,target=/src,rw \
    python -m pip install --no-cache-dir "/src[s3]"

# A numeric user: Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
ENV HOME=/tmp
CMD ["synthmed", "--help"]
