"""The code a custom-architecture export ships beside its weights (`hf_custom.py`).

These modules import tinygpt's own model; the export rewrites those imports to the copies of
tinygpt's modules it writes beside them, so that `trust_remote_code=True` loads the model
without tinygpt installed.
"""
