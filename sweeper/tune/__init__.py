"""Orchestration: specs → cells → per-cell Optuna + ASHA over Ray Train jobs → seeds → leaderboard."""
