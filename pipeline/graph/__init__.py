"""The stage graph of a recipe: every stage, its inputs, config and cache key, built in one place.

Backends and engines declare what they need (a shared step, a floor); the graph turns declarations into stages."""
