"""The one seam between the project and Kafka: topic names, wire formats and the client wrapper."""
