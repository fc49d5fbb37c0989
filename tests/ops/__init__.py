"""Operations: Prometheus, Grafana, the container image and compose."""
