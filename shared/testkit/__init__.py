"""The test kit: the project's own OpenAI-compatible test teacher (with its Batch API and endpoint-side rate limits),
used by the tests, the benchmarks and `distill run --teacher test`. Never imported by the Azure Functions app, and
left out of its deployment package (.funcignore)."""
