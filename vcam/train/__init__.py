"""Training: K-shot episodes, meta-learning and fine-tuning."""
