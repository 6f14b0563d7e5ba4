"""The engine: one writer over the store, the dispatcher, control calls and recovery."""
