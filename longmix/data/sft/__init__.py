"""Long-context instruction tuning data: self-instruct long QA (`longmix sft-data`), chat examples and their
loss masks, SFT shards (`longmix sft-pack`)."""
