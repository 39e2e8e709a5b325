"""Pure judging: prompt-case expectations, paired statistics, load-test SLOs."""
