"""One module per evaluation: its suite settings, its run on one checkpoint, its CLI command and outputs
(JSON, PNG, table). Registered in `longmix/eval/registry.py`."""
