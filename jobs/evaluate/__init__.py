"""Evaluation: batch inference over a split, metrics with bootstrap intervals, the written report."""
