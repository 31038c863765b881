"""The kuberag operator: reconciles ``RagService`` resources into running API deployments.

Modules: ``crd`` (the one source of the CustomResourceDefinition), ``children`` (the pure
``desired_children()``), ``status`` (conditions), ``kube`` (the one module talking to the
Kubernetes API), ``reconcile`` (the idempotent ``reconcile()``), ``handlers`` (kopf wiring),
``metrics``, ``leader`` (Lease-based leader election) and ``__main__`` (the command line).
"""
