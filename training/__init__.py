"""The training side: config, the ComposerModel around gpt.py, and the Trainer assembly."""
