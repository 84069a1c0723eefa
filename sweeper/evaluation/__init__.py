"""Evaluation: metrics on test predictions, seed and bootstrap CIs, paired comparisons, leaderboards."""
