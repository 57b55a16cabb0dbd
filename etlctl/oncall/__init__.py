"""Read-only: status and kinds, facts about jobs, why, doctor, history, watch and metrics."""
