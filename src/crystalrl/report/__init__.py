"""Figures (`figures`) and tables (`tables`) of a run: the paper's Figs. 2-6 and its tables."""
