"""Results of many runs: `runs` (finished runs, grouped, and the selection rule),
`table` (paper-style tables, Markdown and CSV), `plots` (curves, grids, spread)."""
