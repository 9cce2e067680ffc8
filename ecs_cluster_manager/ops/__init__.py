"""Operations: health, metrics, liveness and logging set-up. Never imports the engine."""
