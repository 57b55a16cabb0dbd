"""Read-only diagnosis: facts about jobs, why, doctor, history, watch and metrics."""
