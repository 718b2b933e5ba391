"""Multiview sources, LoopAug strategies, shards and the DataModule; nothing here knows about models."""
