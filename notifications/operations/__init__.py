"""Operations: metrics, health checks, logging, system checks and their HTTP views."""
