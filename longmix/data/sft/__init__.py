"""Long-context instruction tuning data: chat examples, templates, SFT shards."""
