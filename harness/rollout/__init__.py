"""Model version roll-outs measured under load (`batchbench rollout`)."""
