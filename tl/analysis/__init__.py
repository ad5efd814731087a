"""The answer a sweep gives, as pure functions of its runs' numbers: seed groups and their
intervals (`groups`, `stats`), the accuracy-cost Pareto front (`pareto`), the verdict in words
(`verdict`), and transferability scores of frozen features (`transferability`)."""
