"""Running the project's services: the local stack supervisor (``infra.stack``) and the Kubernetes manifests."""
