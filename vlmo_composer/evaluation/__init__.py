"""Evaluation: one home for scoring trained models (retrieval, VQA, NLVR2, zero-shot) and the eval CLI."""
