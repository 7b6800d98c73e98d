"""Reinforcement fine-tuning."""
