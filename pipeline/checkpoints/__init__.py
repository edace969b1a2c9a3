"""Model checkpoints on disk: what a source holds and whether it is what it says, loading it, GGUF tokenizer repair."""
