"""Odds in: provider feed ingestion (reception -> validation -> normalization -> enrichment -> cache +
Kafka), multi-provider failover, the suspension watchdog, the StreamOdds fan-out hub and the simulator.
See docs/odds-pipeline.md."""
