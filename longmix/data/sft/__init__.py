"""Long-context instruction data: self-instruct long QA from long documents (`longmix sft-data`)."""
