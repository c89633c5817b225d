"""Everything about data: sources, tokenizer, packing, metadata, the StreamingDataset and collate."""
