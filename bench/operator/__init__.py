"""The operator benchmark: N InferenceBackends on the local cluster, measured."""
