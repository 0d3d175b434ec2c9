"""bench: offline-RL benchmark suite for SFT on curated data versus offline RL."""
