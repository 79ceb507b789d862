"""promogym experiments: the command-line interface, runners, benchmarks and reports."""
