"""The engine: Ray session, run folder, phases, stages, search, trial runtimes, progress and output collection."""
