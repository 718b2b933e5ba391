"""Losses as pure functions over tensors."""
