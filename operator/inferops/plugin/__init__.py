"""`kubectl ib`: the kubectl plugin for InferenceBackends.

`status` shows where the migration stands (rendered by `render`, pure); `promote`, `pause`,
`resume`, `abort` and `retry` write a one-shot request into the resource's action annotation
and wait for the operator to acknowledge it in status (`actions`). The CLI is in `__main__`.
"""
