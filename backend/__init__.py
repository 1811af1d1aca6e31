"""Backend bridges (Kafka, storage sinks, query API); see the backend issue."""
