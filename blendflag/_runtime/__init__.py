"""Runtime helpers: process pools, progress lines, quiet imports, the machine's description."""
