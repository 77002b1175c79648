"""Shipped reference data for the variant factory (the WordNet noun snapshot and its data card)."""
