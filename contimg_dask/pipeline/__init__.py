"""Pipeline stages and orchestration (not yet built): process a block end to end, recovery
policies (retries, circuit breakers)."""
