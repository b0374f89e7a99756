"""Quality and language filtering: heuristics, fastText quality and language-ID models, the filter stage."""
