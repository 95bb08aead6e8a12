"""`tinygpt compare`: does variant X beat the baseline, on equal data and equal compute?

Every config trains on the same prepared data for the same budget (tokens, or minutes of
training steps), once per seed; seed k adds k to each config's own seed, so configs with the
same seed see the same batches. Runs live in OUT/runs/NAME/seed-K: a finished one is reused, an
interrupted one resumed. The report gives the final validation loss as mean ± sample standard
deviation over seeds, and converts it to bits per character so that tokenizers compare.

variants.py resolves the CONFIG arguments, budget.py turns the budget into steps, runner.py
trains the runs, report.py writes the table, the JSON and the curves.
"""
